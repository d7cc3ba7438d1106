"""A thermal plant to test the governor against: a first-order model of a Raspberry Pi 4, and sensors
that read it the way the real ones do (noisy, quantised).

    tau * dT/dt = ambient + idle_rise + (full_rise - idle_rise) * duty - T

`duty` is the detector's share of full speed (Rung.duty). Defaults, from public Pi 4 figures (sources in
docs/thermal.md): a bare board in a still room idles about 20 °C above ambient and, under sustained
full load, would settle about 60 °C above it, past the firmware's 80 °C throttle point in a 25 °C room;
it takes a few minutes to heat up (tau about 180 s). Explicit Euler with dt = 1 s (dt << tau), so the
energy balance holds exactly: tau * (T_end - T_start) = sum(dt * (heat - (T - ambient))).

An M.2/PCIe Coral adds a second, smaller node (the Edge TPU die on its module), heated by the same duty.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from device.thermal.sensors import Readings


@dataclass(frozen=True)
class PlantParams:
    idle_rise_c: float = 20.0
    full_rise_c: float = 60.0
    tau_s: float = 180.0
    # The Edge TPU module: assumed, not measured (no public heating curve for the M.2 Coral on a Pi).
    # A 2 W part on a small module settles well under its 80 °C setpoint in a shop, so the CPU leads;
    # the TPU node is there so that its sensor's noise is in the loop, not to model a hot TPU.
    tpu_idle_rise_c: float = 10.0
    tpu_full_rise_c: float = 30.0
    tpu_tau_s: float = 60.0


class ThermalPlant:
    def __init__(self, params: PlantParams, ambient_c: float) -> None:
        self.params = params
        self.temp_c = ambient_c + params.idle_rise_c
        self.tpu_temp_c = ambient_c + params.tpu_idle_rise_c
        self.heat_in = 0.0  # sum of dt * heat, in °C·s
        self.heat_out = 0.0  # sum of dt * (T - ambient), in °C·s

    def step(self, duty: float, ambient_c: float, dt: float) -> float:
        p = self.params
        heat = p.idle_rise_c + (p.full_rise_c - p.idle_rise_c) * duty
        loss = self.temp_c - ambient_c
        self.heat_in += dt * heat
        self.heat_out += dt * loss
        self.temp_c += dt / p.tau_s * (heat - loss)
        tpu_heat = p.tpu_idle_rise_c + (p.tpu_full_rise_c - p.tpu_idle_rise_c) * duty
        self.tpu_temp_c += dt / p.tpu_tau_s * (tpu_heat - (self.tpu_temp_c - ambient_c))
        return self.temp_c


@dataclass(frozen=True)
class SensorModel:
    """How a real driver turns a temperature into the number the governor reads: an ADC code on a fixed
    grid (`offset_c + k * step_c`), with read-to-read noise before the conversion."""

    step_c: float
    offset_c: float
    noise_c: float  # standard deviation of the noise, before quantisation

    def read(self, true_c: float, rng: random.Random) -> float:
        noisy = true_c + rng.gauss(0.0, self.noise_c) if self.noise_c else true_c
        code = round((noisy - self.offset_c) / self.step_c)
        return round(self.offset_c + code * self.step_c, 3)  # sysfs prints whole millidegrees


# The Pi 4's SoC sensor (bcm2711_thermal, behind psutil's `cpu_thermal` and thermal_zone0/temp): the
# driver returns slope * code + offset with the device tree's `coefficients = <(-487) 410040>` (Linux
# arch/arm/boot/dts/bcm2711.dtsi, drivers/thermal/broadcom/bcm2711_thermal.c), so readings move in steps
# of 0.487 °C on the grid 410.040 - 0.487 k. The register is read afresh on every read. The noise is an
# assumption, not a measurement: the die's hot spot follows load bursts within milliseconds, and a busy
# Pi's reading hops between neighbouring steps; 0.5 °C (about one step) is taken. Fit it on a device.
PI4_CPU = SensorModel(step_c=0.487, offset_c=410.040, noise_c=0.5)
# The apex driver (google/gasket-driver apex_driver.c): `temp` reads a 10-bit code from the OMC0_DC
# register on every read and converts it with (662 - code) * 250 + 550 millidegrees, so readings move in
# steps of 0.25 °C on the grid 0.55 + 0.25 k; code 1023 gives -89.7 °C, the fault value. The driver polls
# on its own only if temp_poll_interval is set (default 0), so a read is never a cached value. Same
# assumed noise as the CPU: the TPU's load is just as bursty (one invoke per detected frame).
APEX_TPU = SensorModel(step_c=0.25, offset_c=0.55, noise_c=0.5)
# Exact readings, for tests that need the plant's own temperature.
EXACT = SensorModel(step_c=0.001, offset_c=0.0, noise_c=0.0)


class PlantSensors:
    """The ThermalSensor port over the simulated plant: the CPU sensor reads the plant's temperature
    through `cpu`; with `tpu` set, a PCIe Coral's sensor (apex_0) reads the TPU node. Seeded, so a run
    is the same every time."""

    def __init__(
        self,
        plant: ThermalPlant,
        cpu: SensorModel = PI4_CPU,
        tpu: SensorModel | None = None,
        seed: int = 1,
    ) -> None:
        self.plant = plant
        self.cpu = cpu
        self.tpu = tpu
        self.rng = random.Random(seed)

    def read(self) -> Readings:
        cpu = self.cpu.read(self.plant.temp_c, self.rng)
        if self.tpu is None:
            return Readings(cpu_c=cpu)
        return Readings(cpu_c=cpu, tpu_c={"apex_0": self.tpu.read(self.plant.tpu_temp_c, self.rng)})
