"""The ThermalSensor port and its adapters. Every reading may be None, meaning "unknown": a sensor that
is missing or unreadable is reported as such, never a crash.

- CPU: psutil.sensors_temperatures(): `cpu_thermal` on a Pi; elsewhere the first known CPU zone.
- Edge TPU: /sys/class/apex/apex_N/temp (millidegrees); about -89 °C means the TPU has failed.
- Pi firmware flags: /sys/devices/platform/soc/soc:firmware/get_throttled, else `vcgencmd get_throttled`.
- Battery: psutil.sensors_battery().
All roots and the command runner are injectable.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import psutil

from device.edgetpu import APEX_CLASS, DEAD_BELOW_C, read_apex_temperature

THROTTLED = Path("devices/platform/soc/soc:firmware/get_throttled")
# psutil's sensor names for the CPU die, best first: the Pi's SoC, Intel, AMD, generic ACPI.
CPU_ZONES = ("cpu_thermal", "coretemp", "k10temp", "soc_thermal", "cpu-thermal", "acpitz")


@dataclass(frozen=True)
class Throttle:
    """The Pi firmware's get_throttled bits."""

    under_voltage: bool = False  # bit 0, now
    freq_capped: bool = False  # bit 1
    throttled: bool = False  # bit 2
    soft_temp_limit: bool = False  # bit 3
    under_voltage_since_boot: bool = False  # bit 16
    throttled_since_boot: bool = False  # bit 18

    @classmethod
    def from_bits(cls, bits: int) -> Throttle:
        return cls(
            bool(bits & 1),
            bool(bits & 2),
            bool(bits & 4),
            bool(bits & 8),
            bool(bits & 1 << 16),
            bool(bits & 1 << 18),
        )


@dataclass(frozen=True)
class Readings:
    cpu_c: float | None = None
    tpu_c: dict[str, float | None] = field(default_factory=dict)  # "apex_0" -> °C
    tpu_failed: tuple[str, ...] = ()
    throttle: Throttle | None = None
    battery_percent: float | None = None
    on_battery: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        unknown = "unknown"
        return {
            "cpu_c": unknown if self.cpu_c is None else round(self.cpu_c, 1),
            "tpu_c": {k: unknown if v is None else round(v, 1) for k, v in self.tpu_c.items()},
            "tpu_failed": list(self.tpu_failed),
            "throttle": unknown if self.throttle is None else self.throttle.__dict__,
            "battery_percent": unknown if self.battery_percent is None else round(self.battery_percent, 1),
            "on_battery": unknown if self.on_battery is None else self.on_battery,
        }


class ThermalSensor(Protocol):
    def read(self) -> Readings: ...


Runner = Callable[[list[str]], str]


def _run(command: list[str]) -> str:
    return subprocess.run(command, capture_output=True, text=True, timeout=2, check=True).stdout


class SystemSensors:
    def __init__(
        self, sysfs_root: Path = Path("/sys"), psutil_module: Any = psutil, runner: Runner = _run
    ) -> None:
        self.root = sysfs_root
        self.psutil = psutil_module
        self.runner = runner

    def read(self) -> Readings:
        tpu = self._tpus()
        failed = tuple(name for name, c in tpu.items() if c is not None and c < DEAD_BELOW_C)
        percent, on_battery = self._battery()
        return Readings(self._cpu(), tpu, failed, self._throttle(), percent, on_battery)

    def _cpu(self) -> float | None:
        try:
            zones = self.psutil.sensors_temperatures()
        except (AttributeError, OSError):
            return None  # psutil has no sensor support on this platform
        for name in CPU_ZONES:
            readings = [t.current for t in zones.get(name, []) if t.current is not None]
            if readings:
                return float(max(readings))
        return None

    def _tpus(self) -> dict[str, float | None]:
        try:
            entries = sorted(p for p in (self.root / APEX_CLASS).iterdir() if p.name.startswith("apex_"))
        except OSError:
            return {}
        return {p.name: read_apex_temperature(p) for p in entries}

    def _throttle(self) -> Throttle | None:
        try:
            text = (self.root / THROTTLED).read_text(encoding="ascii").strip()
        except OSError:
            try:
                text = self.runner(["vcgencmd", "get_throttled"]).strip().split("=")[-1]
            except (OSError, subprocess.SubprocessError):
                return None
        try:
            return Throttle.from_bits(int(text, 16))
        except ValueError:
            return None

    def _battery(self) -> tuple[float | None, bool | None]:
        try:
            battery = self.psutil.sensors_battery()
        except (AttributeError, OSError):
            return None, None
        if battery is None:
            return None, None
        plugged = battery.power_plugged
        return float(battery.percent), (None if plugged is None else not plugged)


@dataclass
class FakeSensors:
    """Stands in for a Pi's sensors in tests and the simulator: readings are whatever it is told."""

    readings: Readings = field(default_factory=Readings)
    reads: int = 0

    def read(self) -> Readings:
        self.reads += 1
        return self.readings
