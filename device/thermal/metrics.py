"""What `appliance bench thermal` measures on a simulated run, as pure functions of the run's record, so
that each figure (and each check on it) can be fed a made-up record in tests.

A run is recorded once a second: the pace as a number (the rung, or PAUSED, slower than every rung) and
the ambient temperature.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

WINDOW_S = 600  # pace changes are counted per 10 minutes
SETTLE_S = 300  # the first 5 minutes are start-up: the device heats from idle, the governor finds its pace
# An ambient step: the room moving faster than 3 °C a minute (a door, the sun, an oven), by at least
# 1 °C in all. The hot-room ramp (0.3 °C a minute) and its fall (1 °C a minute) are weather, not steps.
STEP_RATE_C_PER_S = 0.05
STEP_MIN_C = 1.0
AFTER_STEP_S = 600  # a step's effect is judged over the 10 minutes after it (3 time constants of the Pi)


@dataclass(frozen=True)
class Step:
    start_s: int
    end_s: int  # the first second at the new ambient
    before_c: float
    after_c: float


def change_times(paces: list[int]) -> list[int]:
    """The seconds at which the pace differs from the second before."""
    return [t for t in range(1, len(paces)) if paces[t] != paces[t - 1]]


def worst_window(paces: list[int], start_s: int = 0, window_s: int = WINDOW_S) -> int:
    """The most pace changes in any `window_s` sliding window that starts at or after `start_s`."""
    times = change_times(paces)
    last = max(start_s, len(paces) - window_s)
    return max(
        (sum(1 for t in times if begin <= t < begin + window_s) for begin in range(start_s, last + 1)),
        default=0,
    )


def find_steps(ambient: list[float]) -> list[Step]:
    """Stretches where the ambient moves faster than STEP_RATE_C_PER_S, by at least STEP_MIN_C."""
    fast = [abs(ambient[t + 1] - ambient[t]) >= STEP_RATE_C_PER_S for t in range(len(ambient) - 1)]
    steps = []
    t = 0
    for is_fast, run in itertools.groupby(fast):
        length = len(list(run))
        if is_fast and abs(ambient[t + length] - ambient[t]) >= STEP_MIN_C:
            steps.append(Step(t, t + length, ambient[t], ambient[t + length]))
        t += length
    return steps


def overshoot_s(paces: list[int], step: Step, best: int, until_s: int) -> int:
    """Seconds in [step.start_s, until_s) that the pace was slower than `best` (a larger number), counted
    from the first second it was at `best` or faster: a governor already slower than the new best pace
    when a step comes (after a cooling step) is catching up, not overshooting; that time is reported
    by `catch_up_s`."""
    seconds, reached = 0, False
    for pace in paces[step.start_s : until_s]:
        reached = reached or pace <= best
        seconds += reached and pace > best
    return seconds


def catch_up_s(paces: list[int], step: Step, best: int, until_s: int) -> int | None:
    """Seconds from the step until the pace was first at `best` or faster; None if it never was."""
    return next((t - step.start_s for t in range(step.start_s, until_s) if paces[t] <= best), None)
