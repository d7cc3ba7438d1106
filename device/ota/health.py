"""The health window after an activation: the new model must run as well as the one it replaced.

It rolls back when, within `health_window_s`, inference raises `max_errors` times, or when at its end
the new model's median invoke time is over `latency_regression` times the old one's. Medians of at
least MIN_INVOKES invokes on each side: a mean of a handful is noise (the first invokes of a new
interpreter are slow, and a busy CPU makes any one invoke slow). A window that has not seen
`health_min_frames` frames (the camera was down, the device paused) stays open: no verdict without
evidence. An embedder with too few objects to time gets three windows, then is judged on errors alone.
A crash during the window is judged at the next start (device.ota.engine).
"""

from __future__ import annotations

from dataclasses import dataclass

from device.config import OtaConfig
from device.ota.port import ModelHost

MIN_INVOKES = 20


@dataclass
class Verdict:
    healthy: bool
    reason: str


@dataclass
class HealthWatch:
    kind: str
    version: str
    started: float  # monotonic
    baseline_ms: float | None  # the replaced model's median invoke time
    frames0: int
    errors0: int

    @classmethod
    def open(
        cls, kind: str, version: str, now: float, host: ModelHost, baseline_ms: float | None
    ) -> HealthWatch:
        counts = host.run_counts(kind)
        return cls(kind, version, now, baseline_ms, counts.frames, counts.errors)

    def verdict(self, now: float, host: ModelHost, config: OtaConfig) -> Verdict | None:
        """None while the window is still open."""
        counts = host.run_counts(self.kind)
        errors = counts.errors - self.errors0
        if errors >= config.max_errors:
            return Verdict(False, f"{errors} inference errors in the health window")
        frames = counts.frames - self.frames0
        elapsed = now - self.started
        if elapsed < config.health_window_s or frames < config.health_min_frames:
            return None
        if counts.invokes < MIN_INVOKES and elapsed < 3 * config.health_window_s:
            return None
        latency = counts.invoke_ms_p50 if counts.invokes >= MIN_INVOKES else None
        if latency is not None and self.baseline_ms:
            ratio = latency / self.baseline_ms
            if ratio > config.latency_regression:
                return Verdict(
                    False,
                    f"latency regression: {latency:.1f} ms per invoke against {self.baseline_ms:.1f} ms "
                    f"({ratio:.2f}x, limit {config.latency_regression}x)",
                )
        measured = "too few invokes to time" if latency is None else f"{latency:.1f} ms per invoke"
        return Verdict(True, f"{frames} frames, {errors} errors, {measured}")
