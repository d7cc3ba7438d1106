"""`appliance bench thermal`: the governor against the simulated Pi 4 for an hour of simulated time.

The sensors read the plant as the real ones do (noisy, quantised; seeded, so a run is the same every
time). Per scenario it reports the maximum temperature and the time at or above the hard limit (must be
0), throughput against the best constant pace that stays under the limit for the whole hour (goal
>= 0.9), the worst 10-minute window of pace changes (goal <= 6 after the first 5 minutes), and, after
each ambient step, how long the governor ran slower than the best constant pace for the new ambient
(goal <= 60 s). docs/thermal.md defines each figure.
"""

from __future__ import annotations

import csv
import itertools
import logging
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from device.clock import FakeClock
from device.config import GovernorConfig
from device.errors import InputError
from device.thermal import metrics
from device.thermal.governor import LADDER, Governor
from device.thermal.simulator import APEX_TPU, PI4_CPU, PlantParams, PlantSensors, SensorModel, ThermalPlant
from rigs.report import LoadSpan, check, report_out

HOUR = 3600
TRACES = Path(__file__).resolve().parents[1] / "thermal" / "traces"
HOT_ROOM = TRACES / "hot_room.csv"
SHOP = TRACES / "shop.csv"
PAUSED = len(LADDER)  # a pace number slower than every rung
SETTLED_S = 20 * 180  # a constant pace is judged after 20 time constants of the default plant
MAX_OVERSHOOT_S = 60
MAX_CHANGES_PER_WINDOW = 6
Ambient = Callable[[float], float]


def default_scenario(t: float) -> float:
    """25 °C, a step to 35 °C at 20 minutes (sun on the shop window), back to 25 °C at 40 minutes."""
    return 35.0 if 1200 <= t < 2400 else 25.0


def load_trace(path: Path) -> Ambient:
    try:
        with path.open(newline="") as handle:
            points = [(float(r["seconds"]), float(r["ambient_c"])) for r in csv.DictReader(handle)]
    except (OSError, KeyError, ValueError) as exc:
        raise InputError(f"trace {path}: need a CSV with columns seconds,ambient_c ({exc})") from None
    if not points:
        raise InputError(f"trace {path} is empty")

    def ambient(t: float) -> float:  # piecewise linear between the trace's points
        for (t0, a0), (t1, a1) in itertools.pairwise(points):
            if t0 <= t <= t1:
                return a0 + (a1 - a0) * (t - t0) / (t1 - t0) if t1 > t0 else a1
        return points[-1][1] if t > points[-1][0] else points[0][1]

    return ambient


def simulate(
    ambient: Ambient,
    config: GovernorConfig,
    params: PlantParams,
    rung: int | None = None,
    *,
    tpu: SensorModel | None = None,
    cpu: SensorModel = PI4_CPU,
    seed: int = 1,
) -> dict[str, Any]:
    """One simulated hour, 1 s steps; the governor decides unless a constant `rung` is given."""
    plant = ThermalPlant(params, ambient(0))
    clock = FakeClock(0.0)
    governor = Governor(config, PlantSensors(plant, cpu, tpu, seed), clock)
    temps, tpu_temps, duties, paces, ambients = [], [], [], [], []
    for second in range(HOUR):
        if rung is None:
            pace = governor.pace()
            number = PAUSED if pace.paused else governor.rung
        else:
            number = rung
        duty = 0.0 if number == PAUSED else LADDER[number].duty()
        ambients.append(ambient(second))
        temps.append(plant.step(duty, ambients[-1], 1.0))
        tpu_temps.append(plant.tpu_temp_c)
        duties.append(duty)
        paces.append(number)
        clock.advance(1.0)
    return {"temps": temps, "tpu_temps": tpu_temps, "duties": duties, "paces": paces, "ambient": ambients}


def settled_c(rung: int, ambient_c: float, params: PlantParams) -> tuple[float, float]:
    """CPU and TPU temperatures after holding `rung` at a constant ambient until the plant has settled."""
    plant = ThermalPlant(params, ambient_c)
    for _ in range(SETTLED_S):
        plant.step(LADDER[rung].duty(), ambient_c, 1.0)
    return plant.temp_c, plant.tpu_temp_c


def best_steady_rung(ambient_c: float, config: GovernorConfig, params: PlantParams) -> int:
    """The fastest rung that, held constant in this ambient, settles at least one sensor step below the
    setpoints. A rung that settles closer reads above the setpoint about half the time: no governor can
    hold it on this sensor. The slowest rung if none does."""
    for rung in range(len(LADDER)):
        cpu, tpu = settled_c(rung, ambient_c, params)
        if cpu < config.cpu_setpoint_c - PI4_CPU.step_c and tpu < config.tpu_setpoint_c - APEX_TPU.step_c:
            return rung
    return len(LADDER) - 1


def step_report(run: dict[str, Any], config: GovernorConfig, params: PlantParams) -> list[dict[str, Any]]:
    steps = metrics.find_steps(run["ambient"])
    out = []
    for i, step in enumerate(steps):
        until = min(step.start_s + metrics.AFTER_STEP_S, steps[i + 1].start_s if i + 1 < len(steps) else HOUR)
        best = best_steady_rung(step.after_c, config, params)
        out.append(
            {
                "at_s": step.start_s,
                "ambient_c": [round(step.before_c, 2), round(step.after_c, 2)],
                "best_steady_rung": best,
                "best_steady_duty": round(LADDER[best].duty(), 4),
                "slowest_pace_after": max(run["paces"][step.start_s : until]),
                "seconds_slower_than_best": metrics.overshoot_s(run["paces"], step, best, until),
                "seconds_to_reach_best": metrics.catch_up_s(run["paces"], step, best, until),
            }
        )
    return out


def evaluate(
    ambient: Ambient, config: GovernorConfig, params: PlantParams, tpu: SensorModel | None = None
) -> dict[str, Any]:
    run = simulate(ambient, config, params, tpu=tpu)
    best = next(
        (
            r
            for r in range(len(LADDER))
            if max(simulate(ambient, config, params, r)["temps"]) < config.cpu_hard_c
        ),
        None,
    )
    best_duty = LADDER[best].duty() if best is not None else 0.0
    mean_duty = sum(run["duties"]) / HOUR
    steps = step_report(run, config, params)
    names = {PAUSED: "paused", **{r: f"rung {r}" for r in range(len(LADDER))}}
    return {
        "max_temp_c": round(max(run["temps"]), 2),
        "max_tpu_temp_c": round(max(run["tpu_temps"]), 2) if tpu is not None else None,
        "seconds_above_hard_limit": sum(1 for t in run["temps"] if t >= config.cpu_hard_c),
        "mean_duty": round(mean_duty, 4),
        "best_constant_rung": best,
        "best_constant_duty": round(best_duty, 4),
        "throughput_vs_best_constant": round(mean_duty / best_duty, 4) if best_duty else None,
        "pace_changes": len(metrics.change_times(run["paces"])),
        "worst_10_min_changes": metrics.worst_window(run["paces"]),
        "worst_10_min_changes_after_5_min": metrics.worst_window(run["paces"], metrics.SETTLE_S),
        "steps": steps,
        "longest_overshoot_s": max((s["seconds_slower_than_best"] for s in steps), default=0),
        "seconds_per_pace": {names[k]: v for k, v in sorted(Counter(run["paces"]).items())},
    }


def thermal_checks(scenarios: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The budgets, per scenario; tests/test_bench.py feeds these a bad measurement to show each can fail."""
    checks = []
    for name, r in scenarios.items():
        checks += [
            check(f"{name}: seconds at or above the hard limit", r["seconds_above_hard_limit"], "<=", 0),
            check(
                f"{name}: throughput / best constant pace", r["throughput_vs_best_constant"] or 0, ">=", 0.9
            ),
            check(
                f"{name}: pace changes, worst 10-minute window after the first 5 minutes",
                r["worst_10_min_changes_after_5_min"],
                "<=",
                MAX_CHANGES_PER_WINDOW,
            ),
            check(
                f"{name}: seconds slower than the best steady pace after an ambient step",
                r["longest_overshoot_s"],
                "<=",
                MAX_OVERSHOOT_S,
            ),
        ]
    return checks


def bench_thermal(trace: Path | None, as_json: bool) -> int:
    # The governor logs every pace change; over dozens of simulated hours that is noise here.
    logging.getLogger("device.thermal.governor").setLevel(logging.WARNING)
    load = LoadSpan()  # the figures are simulated and do not depend on it; printed like every bench's
    config, params = GovernorConfig(), PlantParams()
    scenarios: dict[str, tuple[Ambient, SensorModel | None]] = {
        "default (25 -> 35 -> 25 °C)": (default_scenario, None),
        "hot room (28 -> 40 -> 30 °C)": (load_trace(HOT_ROOM), None),
        "shop (24 -> 29.5 -> 26 -> 31 °C, steps in 10 s)": (load_trace(SHOP), None),
        "default, with a PCIe Coral's sensor": (default_scenario, APEX_TPU),
    }
    if trace is not None:
        scenarios[f"trace {trace}"] = (load_trace(trace), None)
    results = {name: evaluate(ambient, config, params, tpu) for name, (ambient, tpu) in scenarios.items()}
    report = {
        "simulation": "deterministic: seeded sensor noise, no wall-clock time; figures do not depend on load",
        "plant": params.__dict__,
        "sensors": {"cpu": PI4_CPU.__dict__, "tpu": APEX_TPU.__dict__},
        "governor": config.model_dump(mode="json"),
        "scenarios": results,
        "machine_load": load.report(),
        "checks": thermal_checks(results),
    }
    return report_out(report, as_json)
