"""The health window after an activation: the new model must run as well as the one it replaced.

It rolls back when, within `health_window_s`, inference raises `max_errors` times, or when at its end
the new model's mean invoke time is over `latency_regression` times the old one's. A window that has
not seen `health_min_frames` frames (the camera was down, the device paused) stays open: no verdict
without evidence. A crash during the window is judged at the next start (device.ota.engine).
"""

from __future__ import annotations

from dataclasses import dataclass

from device.config import OtaConfig
from device.pipeline import Pipeline


@dataclass
class Verdict:
    healthy: bool
    reason: str


@dataclass
class HealthWatch:
    kind: str
    version: str
    started: float  # monotonic
    baseline_ms: float | None  # the replaced model's mean invoke time
    frames0: int
    errors0: int

    @classmethod
    def open(
        cls, kind: str, version: str, now: float, pipeline: Pipeline, baseline_ms: float | None
    ) -> HealthWatch:
        return cls(kind, version, now, baseline_ms, pipeline.counters.frames, pipeline.counters.errors)

    def verdict(self, now: float, pipeline: Pipeline, config: OtaConfig) -> Verdict | None:
        """None while the window is still open."""
        errors = pipeline.counters.errors - self.errors0
        if errors >= config.max_errors:
            return Verdict(False, f"{errors} inference errors in the health window")
        frames = pipeline.counters.frames - self.frames0
        if now - self.started < config.health_window_s or frames < config.health_min_frames:
            return None
        latency = pipeline.invoke_ms[self.kind].value
        if latency is not None and self.baseline_ms:
            ratio = latency / self.baseline_ms
            if ratio > config.latency_regression:
                return Verdict(
                    False,
                    f"latency regression: {latency:.1f} ms per invoke against {self.baseline_ms:.1f} ms "
                    f"({ratio:.2f}x, limit {config.latency_regression}x)",
                )
        measured = "no invokes to time" if latency is None else f"{latency:.1f} ms per invoke"
        return Verdict(True, f"{frames} frames, {errors} errors, {measured}")
