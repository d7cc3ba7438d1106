"""The governor: sensor readings in, a pace out. As fast as the device can bear, never hotter.

The pace is one rung of a ladder (LADDER), from full speed down to paused. A hysteresis controller on
the hottest sensor moves one rung at a time:
- hotter than its setpoint: one rung slower (at most once per interval);
- cooler than setpoint - hysteresis, and at least dwell_s since the last change: one rung faster;
- at or above the hard limit: paused, until it is back below the resume temperature.
Under-voltage caps the pace at UNDER_VOLTAGE_RUNG; a battery below battery_low_percent (and not
charging) caps it at ECONOMY_RUNG. Each change is logged once, with its reason, and shows in stats.

`pace()` is what the pipeline calls every frame: it returns the cached pace and reads the sensors only
when interval_s has passed, so the per-frame cost is a clock read.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from device.clock import Clock
from device.config import GovernorConfig
from device.pace import Pace
from device.thermal.sensors import Readings, ThermalSensor

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Rung:
    detect_every: int
    max_fps: float  # 0 = as fast as frames come
    embed_budget_per_s: float  # 0 = no limit

    def duty(self, camera_fps: float = 30.0) -> float:
        """Detector invokes per second as a share of detecting every frame: the heat a rung makes."""
        fps = min(self.max_fps or camera_fps, camera_fps)
        return fps / self.detect_every / camera_fps


# Rungs about 0.1 of full duty apart. On a Pi 4 a tenth of the duty is about 4 °C at equilibrium, close to
# the 3 °C hysteresis band, so some rung settles inside the band (no changes at all) or two neighbours
# alternate slowly (minutes apart), never a fast flap between full speed and half speed.
LADDER = (
    Rung(1, 0.0, 0.0),  # 1.0: detect on every frame
    Rung(1, 27.0, 0.0),  # 0.9
    Rung(1, 24.0, 0.0),  # 0.8
    Rung(1, 21.0, 0.0),  # 0.7
    Rung(1, 18.0, 0.0),  # 0.6
    Rung(2, 0.0, 0.0),  # 0.5: the tracker fills every other frame
    Rung(2, 24.0, 4.0),  # 0.4
    Rung(3, 0.0, 3.0),  # 0.33
    Rung(4, 0.0, 2.0),  # 0.25
    Rung(4, 20.0, 1.0),  # 0.17
    Rung(6, 18.0, 1.0),  # 0.1
    Rung(10, 15.0, 0.5),  # 0.05
)
UNDER_VOLTAGE_RUNG = 5  # half duty: brown-out slows everything anyway; do not add load
ECONOMY_RUNG = 8  # battery low: a quarter of full duty
STUCK_READS = 150


class Governor:
    def __init__(self, config: GovernorConfig, sensors: ThermalSensor, clock: Clock) -> None:
        self.config = config
        self.sensors = sensors
        self.clock = clock
        self.rung = 0
        self.paused = False
        self.reason = "starting"
        self.readings = Readings()
        self._next_read = 0.0
        self._last_change = -1e18
        self._last_cpu: float | None = None
        self._same = 0
        self._unknown_why = ""
        self._pace = self._make_pace()

    def pace(self) -> Pace:
        now = self.clock.monotonic()
        if now >= self._next_read:
            self._next_read = now + self.config.interval_s
            self.update(self.sensors.read(), now)
        return self._pace

    def update(self, readings: Readings, now: float) -> None:
        self.readings = readings
        rung, paused, reason = self._decide(readings, now)
        if (rung, paused) != (self.rung, self.paused):
            self._last_change = now
            log.info(
                "pace %s -> %s: %s",
                self._describe(self.rung, self.paused),
                self._describe(rung, paused),
                reason,
            )
        self.rung, self.paused, self.reason = rung, paused, reason
        self._pace = self._make_pace()

    def _decide(self, r: Readings, now: float) -> tuple[int, bool, str]:
        cfg = self.config
        hottest = self._hottest(r)
        if hottest is None:
            # No sensor (a build machine), or it dropped out or stuck: hold the pace rather than speed up
            # blind; power limits still apply.
            return self._floor(r, self.rung, f"temperature unknown ({self._unknown_why}): holding the pace")
        name, temp, setpoint, hard, resume = hottest
        if temp >= hard or (self.paused and temp >= resume):
            return (
                self.rung,
                True,
                f"{name} {temp:.1f} °C: paused at the hard limit {hard:.0f} °C until below {resume:.0f} °C",
            )
        rung = self.rung
        if temp > setpoint:
            rung = min(rung + 1, len(LADDER) - 1)
            why = f"{name} {temp:.1f} °C above its setpoint {setpoint:.0f} °C"
        elif temp < setpoint - cfg.hysteresis_c and now - self._last_change >= cfg.dwell_s:
            rung = max(rung - 1, 0)
            why = f"{name} {temp:.1f} °C, cool enough to speed up"
        else:
            why = f"{name} {temp:.1f} °C, holding"
        return self._floor(r, rung, why)

    def _hottest(self, r: Readings) -> tuple[str, float, float, float, float] | None:
        """The sensor closest to (or furthest past) its setpoint, with its limits."""
        cfg = self.config
        candidates = []
        self._unknown_why = "no CPU or TPU sensor"
        if r.cpu_c is not None and self._stuck(r.cpu_c):
            self._unknown_why = f"CPU sensor stuck at {r.cpu_c:.1f} °C for {self._same} readings"
        elif r.cpu_c is not None:
            candidates.append(("CPU", r.cpu_c, cfg.cpu_setpoint_c, cfg.cpu_hard_c, cfg.cpu_resume_c))
        for name, temp in r.tpu_c.items():
            if temp is not None and name not in r.tpu_failed:
                candidates.append((f"TPU {name}", temp, cfg.tpu_setpoint_c, cfg.tpu_hard_c, cfg.tpu_resume_c))
        return max(candidates, key=lambda c: c[1] - c[2]) if candidates else None

    def _stuck(self, value: float) -> bool:
        """A real sensor wobbles by a tenth of a degree; the exact same value for STUCK_READS reads in a
        row (5 minutes at the default interval) is a dead driver, not a steady room."""
        self._same = self._same + 1 if value == self._last_cpu else 1
        self._last_cpu = value
        return self._same >= STUCK_READS

    def _floor(self, r: Readings, rung: int, why: str) -> tuple[int, bool, str]:
        """Power limits: a slowest-allowed rung, whatever the temperatures say."""
        if r.throttle is not None and r.throttle.under_voltage and rung <= UNDER_VOLTAGE_RUNG:
            return UNDER_VOLTAGE_RUNG, False, "under-voltage reported by the firmware: check the power supply"
        low = r.battery_percent is not None and r.battery_percent < self.config.battery_low_percent
        if low and r.on_battery and rung <= ECONOMY_RUNG:
            return ECONOMY_RUNG, False, f"battery at {r.battery_percent:.0f} %: economy pace"
        if r.tpu_failed:
            why += f"; TPU {', '.join(r.tpu_failed)} reports a fault (about -89 °C)"
        return rung, False, why

    def _make_pace(self) -> Pace:
        rung = LADDER[self.rung]
        return Pace(rung.detect_every, rung.max_fps, rung.embed_budget_per_s, self.paused, self.reason)

    @staticmethod
    def _describe(rung: int, paused: bool) -> str:
        return "paused" if paused else f"rung {rung}"
