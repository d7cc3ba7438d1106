"""Sensors on fake sysfs trees and psutil's own result types, the governor's decisions, the simulator."""

from __future__ import annotations

import itertools
import json
import statistics
import threading
from collections import namedtuple
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import pytest

from device.clock import FakeClock
from device.commands.bench_thermal import HOUR, best_steady_rung, default_scenario, load_trace, simulate
from device.config import GovernorConfig, PipelineConfig
from device.errors import InputError
from device.pace import PaceController
from device.thermal import metrics
from device.thermal.governor import (
    DOWN_DWELL_S,
    ECONOMY_RUNG,
    LADDER,
    STUCK_READS,
    UNDER_VOLTAGE_RUNG,
    Governor,
)
from device.thermal.sampler import SampledSensors
from device.thermal.sensors import FakeSensors, Readings, SystemSensors, Throttle
from device.thermal.simulator import APEX_TPU, PI4_CPU, PlantParams, PlantSensors, ThermalPlant

from .cli_helpers import appliance
from .mqtt_helpers import wait_until

# psutil's own result shapes (psutil keeps their classes private, in a module that moved in 7.0).
shwtemp = namedtuple("shwtemp", ("label", "current", "high", "critical"))
sbattery = namedtuple("sbattery", ("percent", "secsleft", "power_plugged"))


def fake_psutil(
    temps: dict[str, list[shwtemp]] | Exception, battery: sbattery | None = None
) -> SimpleNamespace:
    def sensors_temperatures() -> dict[str, list[shwtemp]]:
        if isinstance(temps, Exception):
            raise temps
        return temps

    return SimpleNamespace(sensors_temperatures=sensors_temperatures, sensors_battery=lambda: battery)


def no_vcgencmd(_command: list[str]) -> str:
    raise FileNotFoundError("vcgencmd")


def test_a_pi_with_a_pcie_coral(tmp_path: Path) -> None:
    (tmp_path / "class/apex/apex_0").mkdir(parents=True)
    (tmp_path / "class/apex/apex_0/temp").write_text("61250\n")
    (tmp_path / "class/apex/apex_1").mkdir(parents=True)
    (tmp_path / "class/apex/apex_1/temp").write_text("-89000\n")  # a failed TPU
    firmware = tmp_path / "devices/platform/soc/soc:firmware"
    firmware.mkdir(parents=True)
    (firmware / "get_throttled").write_text("0x50005\n")  # under-voltage and throttled, now and since boot
    psutil = fake_psutil({"cpu_thermal": [shwtemp("", 71.3, None, None)]}, sbattery(64, 3600, False))
    readings = SystemSensors(tmp_path, psutil, no_vcgencmd).read()
    assert readings.cpu_c == 71.3 and readings.tpu_c == {"apex_0": 61.25, "apex_1": -89.0}
    assert readings.tpu_failed == ("apex_1",)
    assert readings.throttle == Throttle(True, False, True, False, True, True)
    assert (readings.battery_percent, readings.on_battery) == (64.0, True)


def test_missing_sensors_read_as_unknown(tmp_path: Path) -> None:
    readings = SystemSensors(tmp_path, fake_psutil(AttributeError("no sensors")), no_vcgencmd).read()
    assert readings == Readings()
    assert readings.to_dict()["cpu_c"] == "unknown" and readings.to_dict()["throttle"] == "unknown"


def test_vcgencmd_fallback_and_another_cpu_zone(tmp_path: Path) -> None:
    psutil = fake_psutil({"coretemp": [shwtemp("Core 0", 55.0, 90, 100), shwtemp("Core 1", 58.0, 90, 100)]})
    readings = SystemSensors(tmp_path, psutil, lambda _c: "throttled=0x0\n").read()
    assert readings.cpu_c == 58.0 and readings.throttle == Throttle()


def test_this_machine_does_not_crash() -> None:
    readings = SystemSensors().read()  # whatever this machine has; "unknown" where nothing
    assert isinstance(readings.to_dict(), dict)


def governor(**settings: object) -> tuple[Governor, FakeSensors, FakeClock]:
    sensors, clock = FakeSensors(), FakeClock(0.0)
    config = GovernorConfig.model_validate({"interval_s": 1.0, "dwell_s": 10.0, **settings})
    return Governor(config, sensors, clock), sensors, clock


def run_for(g: Governor, clock: FakeClock, seconds: int) -> None:
    for _ in range(seconds):
        g.pace()
        clock.advance(1.0)


def test_a_steady_excess_slows_one_rung_per_down_dwell_and_cool_speeds_up_after_the_dwell() -> None:
    g, sensors, clock = governor()
    sensors.readings = Readings(cpu_c=76.5)  # past the dead band above the 75 °C setpoint, not rising
    run_for(g, clock, 1)
    assert g.rung == 1 and "above its setpoint" in g.reason
    run_for(g, clock, int(DOWN_DWELL_S) - 1)  # reads up to DOWN_DWELL_S - 1 after the change
    assert g.rung == 1  # the last slow-down gets DOWN_DWELL_S to show before the next
    run_for(g, clock, 1)
    assert g.rung == 2
    sensors.readings = Readings(cpu_c=60.0)
    run_for(g, clock, 5)
    assert g.rung == 2  # the dwell: no speeding up within 10 s of a change
    run_for(g, clock, 40)
    assert g.rung < 2
    sensors.readings = Readings(cpu_c=73.5)  # inside the hysteresis band: hold
    run_for(g, clock, 30)
    before = g.rung
    run_for(g, clock, 60)
    assert g.rung == before and "holding" in g.reason


def test_a_fast_rise_drops_the_rungs_it_needs_in_one_change() -> None:
    g, sensors, clock = governor()
    rungs = []
    for second in range(80):  # a start-up in a hot room: 0.15 °C/s, through the setpoint at 67 s
        sensors.readings = Readings(cpu_c=65.0 + 0.15 * second)
        g.pace()
        rungs.append(g.rung)
        clock.advance(1.0)
    # Cancelling 0.15 °C/s takes 0.15 / (40 / 180) = 0.68 of the duty away: rung 7 (duty 0.33), at once,
    # where the old governor went one rung per read and, the temperature lagging, too far.
    assert sorted(set(rungs)) == [0, 7]


def test_the_hard_limit_pauses_until_the_resume_temperature() -> None:
    g, sensors, clock = governor()
    sensors.readings = Readings(cpu_c=80.5)
    run_for(g, clock, 1)
    assert g.pace().paused and "hard limit 80" in g.reason
    sensors.readings = Readings(cpu_c=74.0)  # below the hard limit, above resume: still paused
    run_for(g, clock, 5)
    assert g.pace().paused
    sensors.readings = Readings(cpu_c=71.0)
    run_for(g, clock, 1)
    assert not g.pace().paused


def test_the_hottest_relative_to_its_setpoint_leads() -> None:
    g, sensors, clock = governor()
    sensors.readings = Readings(cpu_c=70.0, tpu_c={"apex_0": 84.0})  # TPU 4 °C over its 80 °C setpoint
    run_for(g, clock, 2)
    assert g.rung == 1 and "TPU apex_0" in g.reason


def test_a_tpu_fault_reading_is_reported_not_obeyed() -> None:
    g, sensors, clock = governor()
    sensors.readings = Readings(cpu_c=60.0, tpu_c={"apex_0": -89.0}, tpu_failed=("apex_0",))
    run_for(g, clock, 3)
    assert g.rung == 0 and "apex_0 reports a fault" in g.reason


def test_a_sensor_that_drops_out_holds_the_pace() -> None:
    g, sensors, clock = governor()
    sensors.readings = Readings(cpu_c=78.0)
    run_for(g, clock, 4)
    held = g.rung
    sensors.readings = Readings()  # the driver went away
    run_for(g, clock, 120)
    assert g.rung == held and "temperature unknown" in g.reason


def test_a_sensor_that_sticks_is_treated_as_unknown() -> None:
    g, sensors, clock = governor()
    sensors.readings = Readings(cpu_c=76.0)
    run_for(g, clock, STUCK_READS + 5)
    assert "stuck at 76.0" in g.reason
    rung = g.rung
    run_for(g, clock, 100)
    assert g.rung == rung  # neither slowing to a halt nor speeding up on a dead reading


def test_a_battery_draining_through_the_threshold_and_power_coming_back() -> None:
    g, sensors, clock = governor()
    sensors.readings = Readings(cpu_c=50.0, battery_percent=21.0, on_battery=True)
    run_for(g, clock, 3)
    assert g.rung == 0
    sensors.readings = Readings(cpu_c=50.0, battery_percent=19.0, on_battery=True)
    run_for(g, clock, 1)
    assert g.rung == ECONOMY_RUNG and "battery at 19 %" in g.reason
    sensors.readings = Readings(cpu_c=50.0, battery_percent=19.0, on_battery=False)  # plugged in
    run_for(g, clock, 200)
    assert g.rung == 0


def test_under_voltage_slows_down_and_says_why() -> None:
    g, sensors, clock = governor()
    sensors.readings = Readings(cpu_c=50.0, throttle=Throttle(under_voltage=True))
    run_for(g, clock, 2)
    assert g.rung == UNDER_VOLTAGE_RUNG and "under-voltage" in g.reason


def test_an_operator_override_expires_and_never_beats_the_hard_limit() -> None:
    g, sensors, clock = governor()
    pace = PaceController(PipelineConfig(), clock, g)
    sensors.readings = Readings(cpu_c=76.0)
    run_for(g, clock, 4)
    pace.override(detect_every=1, max_fps=0.0, expires_s=30)
    assert pace.current().reason == "operator override" and pace.current().detect_every == 1
    run_for(g, clock, 31)
    assert pace.current().reason != "operator override"
    pace.override(detect_every=1, expires_s=600)
    sensors.readings = Readings(cpu_c=81.0)
    run_for(g, clock, 2)
    assert pace.current().paused and "hard limit" in pace.current().reason


def test_the_simulator_conserves_energy() -> None:
    plant = ThermalPlant(PlantParams(), ambient_c=25.0)
    start = plant.temp_c
    for second in range(HOUR):
        plant.step(duty=(second // 300) % 2, ambient_c=25.0 + (second // 900), dt=1.0)
    stored = PlantParams().tau_s * (plant.temp_c - start)
    assert stored == pytest.approx(plant.heat_in - plant.heat_out, rel=1e-9, abs=1e-6)


def test_the_simulated_pi_settles_where_the_public_figures_say() -> None:
    plant = ThermalPlant(PlantParams(), ambient_c=25.0)
    for _ in range(3 * HOUR):
        plant.step(1.0, 25.0, 1.0)
    assert plant.temp_c == pytest.approx(85.0, abs=0.01)  # past the 80 °C throttle point under full load


def test_default_settings_never_cross_the_limit() -> None:
    for ambient in (default_scenario, lambda t: 40.0, lambda t: 20.0 + t / 180):
        run = simulate(ambient, GovernorConfig(), PlantParams())
        assert max(run["temps"]) < GovernorConfig().cpu_hard_c
    assert len(LADDER) >= 10


def test_bench_thermal_meets_its_goals_and_takes_a_trace(tmp_path: Path) -> None:
    trace = tmp_path / "trace.csv"
    trace.write_text("seconds,ambient_c\n0,30\n1800,38\n3600,33\n")
    result = appliance("bench", "thermal", "--json", "--trace", str(trace))
    assert result.returncode == 0, result.stdout[-2000:]
    report = json.loads(result.stdout)
    assert len(report["scenarios"]) == 5 and all(c["ok"] for c in report["checks"])
    for scenario in report["scenarios"].values():  # every figure the checks judge is in the report
        assert scenario["worst_10_min_changes"] >= scenario["worst_10_min_changes_after_5_min"] >= 0
        assert scenario["longest_overshoot_s"] >= 0
    with pytest.raises(InputError, match="seconds,ambient_c"):
        bad = tmp_path / "bad.csv"
        bad.write_text("time,temp\n1,2\n")
        load_trace(bad)


def test_the_simulated_sensors_read_like_the_pi_and_apex_drivers() -> None:
    plant = ThermalPlant(PlantParams(), ambient_c=25.0)
    plant.temp_c, plant.tpu_temp_c = 74.3, 55.1
    reads = [s.read() for s in [PlantSensors(plant, tpu=APEX_TPU, seed=7)] for _ in range(400)]
    cpu = [r.cpu_c for r in reads if r.cpu_c is not None]
    tpu = [r.tpu_c["apex_0"] for r in reads if r.tpu_c["apex_0"] is not None]
    # On the drivers' grids: 410.040 - 0.487 k (bcm2711), 0.55 + 0.25 k (apex), whole millidegrees.
    assert all(abs((410.040 - c) / 0.487 - round((410.040 - c) / 0.487)) < 1e-6 for c in cpu)
    assert all(abs((t - 0.55) / 0.25 - round((t - 0.55) / 0.25)) < 1e-6 for t in tpu)
    assert len(set(cpu)) >= 4 and statistics.pstdev(cpu) == pytest.approx(0.5, abs=0.15)
    assert statistics.mean(cpu) == pytest.approx(74.3, abs=0.1)
    again = [s.read() for s in [PlantSensors(plant, tpu=APEX_TPU, seed=7)] for _ in range(400)]
    other = [s.read() for s in [PlantSensors(plant, tpu=APEX_TPU, seed=8)] for _ in range(400)]
    assert again == reads and other != reads  # seeded: the same run every time


def test_the_governor_holds_its_pace_through_sensor_noise() -> None:
    # A device settled 1 °C under its setpoint, read through the Pi's noisy, quantised sensor: an hour
    # without a single change, whatever the noise's seed (the old governor slowed down whenever one read
    # came out above 75 °C). Closer than about 0.6 °C the smoothed reading's excursions (0.18 °C, over an
    # hour up to 0.6 °C) can look like a rise: docs/thermal.md.
    for seed in range(1, 6):
        plant = ThermalPlant(PlantParams(), ambient_c=25.0)
        plant.temp_c = GovernorConfig().cpu_setpoint_c - 1.0
        clock = FakeClock(0.0)
        g = Governor(GovernorConfig(), PlantSensors(plant, PI4_CPU, seed=seed), clock)
        rungs = set()
        for _ in range(HOUR):
            g.pace()
            rungs.add(g.rung)
            clock.advance(1.0)
        assert rungs == {0}, seed


def test_steps_are_found_and_overshoot_and_windows_are_counted() -> None:
    ambient = [25.0] * 100 + [25.0 + 0.5 * i for i in range(1, 11)] + [30.0] * 90  # +5 °C in 10 s
    assert metrics.find_steps(ambient) == [metrics.Step(99, 109, 25.0, 30.0)]
    assert metrics.find_steps([25.0 + t / 200 for t in range(1000)]) == []  # a ramp is weather
    paces = [3] * 100 + [4] * 10 + [6] * 50 + [5] * 40  # best is 5: 50 s slower than it
    step = metrics.find_steps(ambient)[0]
    assert metrics.overshoot_s(paces, step, best=5, until_s=200) == 50
    assert metrics.catch_up_s([7] * 150 + [5] * 50, step, best=5, until_s=200) == 51
    assert metrics.overshoot_s([7] * 150 + [5] * 50, step, best=5, until_s=200) == 0  # catching up
    flapping = [0, 1] * 50 + [1] * 100  # 99 changes in the first 100 s, none after
    assert metrics.worst_window(flapping, window_s=60) == 60
    assert metrics.worst_window(flapping, start_s=100, window_s=60) == 0


def step_at(when: float, before: float, after: float, t: float) -> float:
    return before if t < when else after


@pytest.mark.heavy
def test_ambient_steps_of_every_size_stay_safe_and_calm() -> None:
    # Steps of +-2, 5 and 10 °C from every other degree between 20 and 38 °C, three sensor seeds: never at
    # the hard limit, never more than 6 changes in 10 minutes after start-up, and at most 1 % of the
    # steps more than 60 s slower than the best steady pace (docs/thermal.md: the one known case is a
    # slow-down decided on readings from just before a small cooling step).
    config, params = GovernorConfig(), PlantParams()
    runs, overshoots = 0, 0
    for before, delta, seed in itertools.product(range(20, 39, 2), (-10, -5, -2, 2, 5, 10), (1, 2, 3)):
        after = before + delta
        if not 15 <= after <= 42:
            continue
        run = simulate(partial(step_at, 1800.0, float(before), float(after)), config, params, seed=seed)
        runs += 1
        assert max(run["temps"]) < config.cpu_hard_c, (before, after, seed)
        assert metrics.worst_window(run["paces"], metrics.SETTLE_S) <= 6, (before, after, seed)
        step = metrics.find_steps(run["ambient"])[0]
        best = best_steady_rung(after, config, params)
        overshoots += metrics.overshoot_s(run["paces"], step, best, 1800 + metrics.AFTER_STEP_S) > 60
    assert runs >= 150 and overshoots <= runs // 100


class StuckSensors:
    """Sensors whose reads hang after the first, as a `vcgencmd` that never answers does."""

    def __init__(self, readings: Readings) -> None:
        self.readings = readings
        self.calls = 0
        self.inside = threading.Event()  # a read has started and hangs
        self.release = threading.Event()

    def read(self) -> Readings:
        self.calls += 1
        if self.calls > 1:
            self.inside.set()
            self.release.wait(10)
        return self.readings


def test_the_frame_thread_never_waits_for_a_sensor_read() -> None:
    sensors = StuckSensors(Readings(cpu_c=50.0))
    sampled = SampledSensors(sensors, interval_s=0.01)
    governor = Governor(GovernorConfig(), sampled, FakeClock())
    sampled.start()
    try:
        assert sensors.inside.wait(5)  # the sampling thread now hangs in a read
        asked = threading.Thread(target=lambda: [governor.pace() for _ in range(100)])
        asked.start()
        asked.join(5)
        assert not asked.is_alive(), "the pace waited for the sensors"
        assert governor.readings.cpu_c == 50.0  # decided on the latest readings there are
    finally:
        sensors.release.set()
        sampled.stop()


def test_a_sensor_that_raises_is_counted_and_sampling_goes_on() -> None:
    class Flaky:
        calls = 0

        def read(self) -> Readings:
            self.calls += 1
            if self.calls == 2:
                raise OSError("sysfs went away for a moment")
            return Readings(cpu_c=40.0 + self.calls)

    flaky = Flaky()
    sampled = SampledSensors(flaky, interval_s=0.001)
    sampled.start()
    try:
        assert wait_until(lambda: flaky.calls >= 4)
        cpu = sampled.read().cpu_c
        assert sampled.errors == 1 and cpu is not None and cpu >= 43.0
    finally:
        sampled.stop()
