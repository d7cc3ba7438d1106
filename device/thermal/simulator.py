"""A thermal plant to test the governor against: a first-order model of a Raspberry Pi 4.

    tau * dT/dt = ambient + idle_rise + (full_rise - idle_rise) * duty - T

`duty` is the detector's share of full speed (Rung.duty). Defaults, from public Pi 4 figures (sources in
docs/thermal.md): a bare board in a still room idles about 20 °C above ambient and, under sustained
full load, would settle about 60 °C above it, past the firmware's 80 °C throttle point in a 25 °C room;
it takes a few minutes to heat up (tau about 180 s). Explicit Euler with dt = 1 s (dt << tau), so the
energy balance holds exactly: tau * (T_end - T_start) = sum(dt * (heat - (T - ambient))).
"""

from __future__ import annotations

from dataclasses import dataclass

from device.thermal.sensors import Readings


@dataclass(frozen=True)
class PlantParams:
    idle_rise_c: float = 20.0
    full_rise_c: float = 60.0
    tau_s: float = 180.0


class ThermalPlant:
    def __init__(self, params: PlantParams, ambient_c: float) -> None:
        self.params = params
        self.temp_c = ambient_c + params.idle_rise_c
        self.heat_in = 0.0  # sum of dt * heat, in °C·s
        self.heat_out = 0.0  # sum of dt * (T - ambient), in °C·s

    def step(self, duty: float, ambient_c: float, dt: float) -> float:
        p = self.params
        heat = p.idle_rise_c + (p.full_rise_c - p.idle_rise_c) * duty
        loss = self.temp_c - ambient_c
        self.heat_in += dt * heat
        self.heat_out += dt * loss
        self.temp_c += dt / p.tau_s * (heat - loss)
        return self.temp_c


class PlantSensors:
    """The ThermalSensor port over the simulated plant: the CPU reads the plant's temperature."""

    def __init__(self, plant: ThermalPlant) -> None:
        self.plant = plant

    def read(self) -> Readings:
        return Readings(cpu_c=self.plant.temp_c)
