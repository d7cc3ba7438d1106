"""`appliance bench thermal`: the governor against the simulated Pi 4 for an hour of simulated time.

Reports the maximum temperature and the time above the hard limit (must be 0), throughput against the
best constant pace that stays under the limit for the whole scenario (goal >= 0.9), pace changes per
10 minutes at steady ambient (goal <= 6), and the time spent at each pace.
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
from device.commands.bench_support import check, report_out
from device.config import GovernorConfig
from device.errors import InputError
from device.thermal.governor import LADDER, Governor
from device.thermal.simulator import PlantParams, PlantSensors, ThermalPlant

HOUR = 3600
HOT_ROOM = Path(__file__).resolve().parents[1] / "thermal" / "traces" / "hot_room.csv"
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
    ambient: Ambient, config: GovernorConfig, params: PlantParams, rung: int | None = None
) -> dict[str, Any]:
    """One simulated hour, 1 s steps; the governor decides unless a constant `rung` is given."""
    plant = ThermalPlant(params, ambient(0))
    clock = FakeClock(0.0)
    governor = Governor(config, PlantSensors(plant), clock)
    temps, duties, paces = [], [], []
    for second in range(HOUR):
        if rung is None:
            pace = governor.pace()
            key = "paused" if pace.paused else f"rung {governor.rung}"
            duty = 0.0 if pace.paused else LADDER[governor.rung].duty()
        else:
            key, duty = f"rung {rung}", LADDER[rung].duty()
        temps.append(plant.step(duty, ambient(second), 1.0))
        duties.append(duty)
        paces.append(key)
        clock.advance(1.0)
    return {"temps": temps, "duties": duties, "paces": paces, "plant": plant}


def evaluate(
    ambient: Ambient, config: GovernorConfig, params: PlantParams, steady: tuple[int, int]
) -> dict[str, Any]:
    run = simulate(ambient, config, params)
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
    window = run["paces"][steady[0] : steady[1]]
    changes = sum(1 for a, b in itertools.pairwise(window) if a != b)
    return {
        "max_temp_c": round(max(run["temps"]), 2),
        "seconds_above_hard_limit": sum(1 for t in run["temps"] if t >= config.cpu_hard_c),
        "mean_duty": round(mean_duty, 4),
        "best_constant_rung": best,
        "best_constant_duty": round(best_duty, 4),
        "throughput_vs_best_constant": round(mean_duty / best_duty, 4) if best_duty else None,
        "pace_changes_per_10_min_steady": round(changes * 600 / (steady[1] - steady[0]), 2),
        "seconds_per_pace": dict(sorted(Counter(run["paces"]).items())),
    }


def bench_thermal(trace: Path | None, as_json: bool) -> int:
    # The governor logs every pace change; over dozens of simulated hours that is noise here.
    logging.getLogger("device.thermal.governor").setLevel(logging.WARNING)
    config, params = GovernorConfig(), PlantParams()
    scenarios: dict[str, tuple[Ambient, tuple[int, int]]] = {
        # Steady windows: the last 10 minutes of the first constant-ambient stretch.
        "default (25 -> 35 -> 25 °C)": (default_scenario, (600, 1200)),
        "hot room (28 -> 40 -> 30 °C)": (load_trace(HOT_ROOM), (3000, 3600)),
    }
    if trace is not None:
        scenarios[f"trace {trace}"] = (load_trace(trace), (HOUR - 600, HOUR))
    results = {
        name: evaluate(ambient, config, params, steady) for name, (ambient, steady) in scenarios.items()
    }
    checks = []
    for name, r in results.items():
        checks += [
            check(
                f"{name}: seconds above {config.cpu_hard_c:.0f} °C", r["seconds_above_hard_limit"], "<=", 0
            ),
            check(
                f"{name}: throughput / best constant pace", r["throughput_vs_best_constant"] or 0, ">=", 0.9
            ),
            check(f"{name}: pace changes per 10 min, steady", r["pace_changes_per_10_min_steady"], "<=", 6),
        ]
    report = {
        "plant": params.__dict__,
        "governor": config.model_dump(mode="json"),
        "scenarios": results,
        "checks": checks,
    }
    return report_out(report, as_json)
