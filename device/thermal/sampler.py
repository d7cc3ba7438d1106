"""The sensors, read on their own thread: the frame thread only ever sees the latest readings.

A read of the Pi's sensors costs about 0.9 ms (sysfs files, psutil), more than all other non-inference
work of a frame, and where the sysfs throttle file is missing it forks `vcgencmd` with a 2 s timeout.
`SampledSensors` is a ThermalSensor whose `read()` returns what its thread last read, so the governor
(called from the frame thread through the pace) decides on fresh values without waiting for any of them.
"""

from __future__ import annotations

import logging
import threading

from device.ratelog import log_rarely
from device.thermal.sensors import Readings, ThermalSensor

log = logging.getLogger(__name__)


class SampledSensors:
    def __init__(self, sensors: ThermalSensor, interval_s: float) -> None:
        self.sensors = sensors
        self.interval_s = interval_s
        self.reads = 0
        self.errors = 0
        self._latest = Readings()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sensors", daemon=True)

    def start(self) -> None:
        self._latest = self._read_once()  # the first decision is made on real readings
        self._thread.start()

    def stop(self, timeout: float = 0.5) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def read(self) -> Readings:
        """The latest readings (any thread; a reference swap, never a half-written value)."""
        return self._latest

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._latest = self._read_once()

    def _read_once(self) -> Readings:
        try:
            readings = self.sensors.read()
        except Exception:  # a sensor that breaks must not end the sampling: the others still count
            self.errors += 1
            log_rarely(log, logging.ERROR, self.errors, "reading the sensors failed", exc_info=True)
            return self._latest
        self.reads += 1
        return readings
