"""The pace: how hard the pipeline may work right now, and why.

The pipeline reads `PaceController.current()` once per frame. The pace comes from the config, can be
overridden by an operator (`cmd/pace`, with an expiry, and `cmd/pause` / `cmd/resume`), and comes from
the thermal governor (device/thermal/governor.py) when it is on: the device's temperatures and battery.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, replace
from typing import Protocol

from device.clock import Clock
from device.config import PipelineConfig

log = logging.getLogger(__name__)

# An operator's override lasts this long unless the command says otherwise: long enough for a
# debugging session, short enough that a forgotten override does not cook the device.
DEFAULT_OVERRIDE_S = 600.0


@dataclass(frozen=True)
class Pace:
    detect_every: int = 1
    max_fps: float = 0.0  # 0: as fast as frames come
    embed_budget_per_s: float = 0.0  # 0: no limit
    paused: bool = False
    reason: str = "config"

    def to_dict(self) -> dict[str, object]:
        return {
            "detect_every": self.detect_every,
            "max_fps": self.max_fps,
            "embed_budget_per_s": self.embed_budget_per_s,
            "paused": self.paused,
            "reason": self.reason,
        }


class PaceSource(Protocol):
    """The thermal governor, as the pace controller sees it."""

    def pace(self) -> Pace: ...


class PaceController:
    """Config pace, or the governor's when there is one; an operator's override on top, for a while; but
    a thermal pause at the hard limit beats everything, operators included."""

    def __init__(self, config: PipelineConfig, clock: Clock, governor: PaceSource | None = None) -> None:
        self.clock = clock
        self.governor = governor
        self._base = Pace(config.detect_every, config.max_fps, config.embed_budget_per_s)
        self._override: Pace | None = None
        self._override_until = 0.0
        self._paused_by_operator = False
        self._held: str | None = None  # why the pipeline is held apart from the operator (cmd/bench)
        self._lock = threading.Lock()
        self._last_reported: Pace | None = None

    def current(self) -> Pace:
        pace = self.governor.pace() if self.governor is not None else self._base
        if pace.paused:
            return self._report(pace)
        with self._lock:
            if self._override is not None and self.clock.monotonic() < self._override_until:
                pace = self._override
            elif self._override is not None:
                self._override = None
                log.info("operator pace override expired")
            if self._paused_by_operator:
                pace = replace(pace, paused=True, reason="paused by operator")
            if self._held is not None:
                pace = replace(pace, paused=True, reason=self._held)
        return self._report(pace)

    def _report(self, pace: Pace) -> Pace:
        # Once per change of the settings (not of the reason's wording, which carries temperatures).
        if self._last_reported is None or replace(pace, reason="") != replace(self._last_reported, reason=""):
            log.info("pace %s", pace.to_dict())
            self._last_reported = pace
        return pace

    def override(
        self,
        detect_every: int | None = None,
        max_fps: float | None = None,
        embed_budget_per_s: float | None = None,
        expires_s: float = DEFAULT_OVERRIDE_S,
    ) -> None:
        with self._lock:
            base = self._base
            self._override = Pace(
                detect_every if detect_every is not None else base.detect_every,
                max_fps if max_fps is not None else base.max_fps,
                embed_budget_per_s if embed_budget_per_s is not None else base.embed_budget_per_s,
                reason="operator override",
            )
            self._override_until = self.clock.monotonic() + expires_s

    def set_paused(self, paused: bool) -> None:
        with self._lock:
            self._paused_by_operator = paused

    def hold(self, reason: str | None) -> None:
        """Pause for `reason` (None: release), apart from the operator's pause, which stays as it is:
        releasing the hold leaves a pipeline the operator paused paused."""
        with self._lock:
            self._held = reason
