"""The stats snapshot published on `<prefix>/<id>/stats` every `stats_interval_s`.

Rates are computed from counter deltas between two snapshots, so the figures cover exactly one
interval; the frame path only counts (the stage timings it keeps are a few perf_counter calls a frame).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from device import __version__
from device.camera.grabber import FrameGrabber
from device.clock import Clock
from device.link.mqtt import Link
from device.pipeline import Pipeline
from device.thermal.governor import Governor
from device.thermal.sensors import Readings


@dataclass
class Telemetry:
    device_id: str
    clock: Clock
    pipeline: Pipeline
    grabber: FrameGrabber
    link: Link
    governor: Governor | None = None
    ota: Callable[[], dict[str, Any]] | None = None  # the updater's state and last outcome
    started: float = 0.0
    _last: dict[str, float] = field(default_factory=dict)

    def snapshot(self) -> dict[str, Any]:
        now = self.clock.monotonic()
        counters = {
            "camera": float(self.grabber.stats.frames),
            "processed": float(self.pipeline.counters.frames),
            "detected": float(self.pipeline.counters.detected_frames),
            "skipped": float(self.grabber.stats.skipped),
            "embedded": float(self.pipeline.counters.embeddings),
        }
        span = now - self._last.get("at", self.started)
        fps = {
            k: round((v - self._last.get(k, 0.0)) / span, 2) if span > 0 else 0.0 for k, v in counters.items()
        }
        self._last = {**counters, "at": now}
        latency = self.pipeline.latency_ms
        return {
            "device_id": self.device_id,
            "version": __version__,
            "time": round(self.clock.time(), 3),
            "uptime_s": round(now - self.started, 1),
            "fps": fps,
            "totals": {k: int(v) for k, v in counters.items()},
            "stage_ms": {
                k: round(v.value, 3) for k, v in self.pipeline.stage_ms.items() if v.value is not None
            },
            "latency_ms": {"p50": _round(latency.get(50)), "p99": _round(latency.get(99))},
            "pace": self.pipeline.pace.current().to_dict(),
            "models": models_status(self.pipeline),
            "camera": vars(self.grabber.stats).copy(),
            "link": vars(self.link.stats).copy(),
            "embeds_deferred": self.pipeline.counters.embeds_deferred,
            "not_stored": self.pipeline.counters.not_stored,
            "outbox": self.link.drainer.snapshot(),
            # "unknown" where this machine has no such sensor (a build machine has no Pi or TPU sensors).
            "temperatures": (self.governor.readings if self.governor else Readings()).to_dict(),
            "ota": self.ota() if self.ota else None,
        }


def models_status(pipeline: Pipeline) -> dict[str, Any]:
    return {"detector": pipeline.detector.model.status(), "embedder": pipeline.embedder.model.status()}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)
