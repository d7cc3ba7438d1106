"""The governor: sensor readings in, a pace out. As fast as the device can bear, never hotter.

The pace is one rung of a ladder (LADDER), from full speed down to paused. Each sensor's reading is
smoothed (an exponential average over FILTER_TAU_S: the real sensors hop by a step or two between reads);
the sensor furthest above (or least below) its setpoint leads:
- a raw reading at or above its hard limit pauses, until every raw reading is below its resume point;
- above the setpoint and heating fast (FAST_RISE_C_PER_S), or URGENT_C above it and still heating:
  as many rungs slower as it takes to stop the rise (COOLING_C_PER_S_PER_DUTY), in one change, then
  URGENT_DWELL_S to see the effect;
- more than DEADBAND_C above the setpoint, DOWN_DWELL_S after the last change and no cooler than then:
  one rung slower;
- above the setpoint by less, DOWN_DWELL_S after the last change and RISE_C warmer than then: one rung
  slower (nearer the setpoint only a clear rise counts: the noise alone would slow it a rung too far);
- more than hysteresis_c below the setpoint, dwell_s after the last change and no warmer than then: one
  rung faster (if it is warming, the last speed-up is still showing).
Under-voltage caps the pace at UNDER_VOLTAGE_RUNG; a battery below battery_low_percent (and not
charging) caps it at ECONOMY_RUNG. Each change is logged once, with its reason, and shows in stats.
docs/thermal.md gives the figures behind each constant.

`pace()` is what the pipeline calls every frame: it returns the cached pace and reads the sensors only
when interval_s has passed, so the per-frame cost is a clock read.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import deque
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
# A real sensor wobbles (see device/thermal/simulator.py); the exact same value for this many reads in a
# row (5 minutes at the default interval) is a dead driver, not a steady room.
STUCK_READS = 150
# Smoothing: the Pi's reading hops by a 0.487 °C step or two between reads. An 8 s average (4 reads at
# the default interval) cuts that noise to about 0.15 °C; a slower one (15 s was tried) lags enough
# behind a 10 °C ambient step to slow down a rung too late, then one too many.
FILTER_TAU_S = 8.0
# Halfway from the setpoint to the hard limit: from here on any further rise is answered quickly.
URGENT_C = 2.0
# After a slow-down in the urgent zone, wait this long before the next: the plant's slope changes at once,
# but the smoothed reading shows it FILTER_TAU_S later; 20 s is 2.5 filter constants.
URGENT_DWELL_S = 20.0
# How fast a Pi 4 cools when duty is removed: a unit of duty is worth about 40 °C at equilibrium (the
# simulator's full_rise - idle_rise) reached with a 180 s time constant, so removing duty d at once turns
# the slope by d * 40 / 180 °C/s. Used to slow down by the rungs a measured rise needs, in one change.
COOLING_C_PER_S_PER_DUTY = 40.0 / 180.0
# A rise this fast (the setpoint to the hard limit in about a minute) is a start-up in a hot room or a
# fan dying, not weather: the urgent answer applies from the setpoint. A 10 °C ambient step heats at
# most about 0.06 °C/s; below 0.08 the rate's noise (about 0.01 °C/s over 20 s) would slow it too far.
FAST_RISE_C_PER_S = 0.08
# Above the setpoint by less than this, the governor slows down only for a clear rise (RISE_C): a rung
# that settles just under the setpoint reads above it at times, and slowing down for that is the
# overshoot the bench counts. So the device may settle up to DEADBAND_C above its setpoint.
DEADBAND_C = 1.0
# After a slow-down, wait this long before the next (outside the urgent cases): a third of the Pi's time
# constant, long enough for the last change to show through the noise (one rung's effect is 0.022 °C/s,
# 1.3 °C over a minute; the smoothed reading's noise is about 0.2 °C).
DOWN_DWELL_S = 60.0
# A clear rise, near the setpoint: three times the noise of the difference of two smoothed readings.
RISE_C = 0.6
# How far back "since the last change" looks at most: after a long hold, whether it is warming now
# matters, not since when.
REF_S = 120.0

Candidate = tuple[str, float, float, float, float, float]  # name, raw, filtered, setpoint, hard, resume


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
        self._filtered: dict[str, deque[tuple[float, float]]] = {}  # sensor -> (when, filtered °C)
        self._reads: dict[str, int] = {}  # sensor -> readings so far
        self._last_cpu: float | None = None
        self._same = 0
        self._unknown_why = ""
        self._pace = self._make_pace()
        self._lock = threading.Lock()

    def pace(self) -> Pace:
        """Any thread (the frame loop, the stats, the status): one decision at a time."""
        with self._lock:
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
        candidates = self._candidates(r, now)
        if not candidates:
            # No sensor (a build machine), or it dropped out or stuck: hold the pace rather than speed up
            # blind; power limits still apply.
            why = f"temperature unknown ({self._unknown_why}): holding the pace"
            return self._floor(r, self.rung, why)
        for name, raw, _f, _s, hard, resume in candidates:
            if raw >= hard or (self.paused and raw >= resume):
                why = f"{name} {raw:.1f} °C: paused at the hard limit {hard:.0f} °C"
                return self.rung, True, f"{why} until below {resume:.0f} °C"
        name, _raw, temp, setpoint, _hard, _resume = max(candidates, key=lambda c: c[2] - c[3])
        since = now - self._last_change
        rung = self.rung
        slower = self._slower(name, setpoint, now)
        if slower > rung:
            rung = slower
            why = f"{name} {temp:.1f} °C above its setpoint {setpoint:.0f} °C"
        elif temp < setpoint - cfg.hysteresis_c and since >= cfg.dwell_s and self._rise(name, now) <= 0:
            rung = max(rung - 1, 0)
            why = f"{name} {temp:.1f} °C, cool enough to speed up"
        else:
            why = f"{name} {temp:.1f} °C, holding"
        return self._floor(r, rung, why)

    def _slower(self, name: str, setpoint: float, now: float) -> int:
        """The rung to slow down to (the current one if not)."""
        since = now - self._last_change
        excess = self._filtered[name][-1][1] - setpoint
        if excess > 0 and since >= URGENT_DWELL_S:
            rate = (self._filtered[name][-1][1] - self._at(name, now - URGENT_DWELL_S)) / URGENT_DWELL_S
            if rate >= FAST_RISE_C_PER_S or (excess >= URGENT_C and rate > 0):
                return self._rung_cancelling(rate)
        rise = self._rise(name, now)
        if excess > DEADBAND_C:
            down = since >= DOWN_DWELL_S and rise >= 0
        else:
            down = excess > 0 and since >= DOWN_DWELL_S and rise >= RISE_C
        return min(self.rung + 1, len(LADDER) - 1) if down else self.rung

    def _rung_cancelling(self, rate: float) -> int:
        """The slowest rung whose removed duty cools by no more than `rate`, at least one rung slower."""
        now = LADDER[self.rung].duty()
        rung = min(self.rung + 1, len(LADDER) - 1)
        while rung + 1 < len(LADDER) and (now - LADDER[rung + 1].duty()) * COOLING_C_PER_S_PER_DUTY <= rate:
            rung += 1
        return rung

    def _candidates(self, r: Readings, now: float) -> list[Candidate]:
        """Each usable sensor with its raw and filtered reading and its limits."""
        cfg = self.config
        out: list[Candidate] = []
        self._unknown_why = "no CPU or TPU sensor"
        if r.cpu_c is not None and self._stuck(r.cpu_c):
            self._unknown_why = f"CPU sensor stuck at {r.cpu_c:.1f} °C for {self._same} readings"
        elif r.cpu_c is not None:
            f = self._filter("CPU", r.cpu_c, now)
            out.append(("CPU", r.cpu_c, f, cfg.cpu_setpoint_c, cfg.cpu_hard_c, cfg.cpu_resume_c))
        for name, temp in r.tpu_c.items():
            if temp is not None and name not in r.tpu_failed:
                f = self._filter(f"TPU {name}", temp, now)
                out.append((f"TPU {name}", temp, f, cfg.tpu_setpoint_c, cfg.tpu_hard_c, cfg.tpu_resume_c))
        return out

    def _filter(self, name: str, value: float, now: float) -> float:
        """Smooth a reading: an exponential average over FILTER_TAU_S (exact for any read interval), which
        starts as the plain mean of the readings so far, so that it does not start from one noisy reading
        and then seem to warm or cool as it converges. The smoothed values of the last REF_S are kept to
        tell whether it is warming."""
        history = self._filtered.setdefault(name, deque())
        count = self._reads[name] = self._reads.get(name, 0) + 1
        if not history:
            smoothed = value
        else:
            then, previous = history[-1]
            weight = max(1.0 - math.exp(-max(now - then, 0.0) / FILTER_TAU_S), 1.0 / count)
            smoothed = previous + weight * (value - previous)
        history.append((now, smoothed))
        while len(history) > 1 and history[1][0] <= now - REF_S:
            history.popleft()
        return smoothed

    def _rise(self, name: str, now: float) -> float:
        """How far the filtered reading moved since the last change (or REF_S ago, if that is later)."""
        return self._filtered[name][-1][1] - self._at(name, max(self._last_change, now - REF_S))

    def _at(self, name: str, when: float) -> float:
        """The filtered reading as it was at `when` (the oldest kept if `when` is older)."""
        history = self._filtered[name]
        return next((f for t, f in reversed(history) if t <= when), history[0][1])

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
