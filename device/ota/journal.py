"""What the updater has done and is doing, on disk, so that any step survives a kill -9 or a power cut.

`<state_dir>/ota/journal.json` is rewritten whole each time (write to a temporary file, fsync, rename),
so it is always either the old or the new version. It records:
- `step`: the step in progress (download, verify, stage, activate), to clean up after a crash;
- `health`: releases activated but not yet confirmed by a health window;
- `refused`: releases this device rolled back from, never taken again automatically;
- `invalid`: releases that failed validation here, by the digest of their signed files: skipped without
  a download until the repository changes one of those files (or the firmware changes);
- `bad_entries`: index entries that are not well-formed releases, each recorded in `history` once;
- `pins`: the operator's pinned versions;
- `history`: the last outcomes, newest last (the status topic shows the newest); the same outcome again
  is one entry with a `count`;
- `last_check`: when the repository was last checked (wall clock), whatever came of it.

OUTCOMES is the one table of what a check can come to: its exit code from `appliance ota check`, whether
it is written to the journal, and what it means (docs/ota.md shows the same table).
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from device.clock import Clock, SystemClock
from device.errors import RegistryUnavailableError, UpdateError

log = logging.getLogger(__name__)

HISTORY = 20


@dataclass(frozen=True)
class Meaning:
    exit_code: int  # of `appliance ota check`
    journal: bool  # written to the journal's history (and so shown as the status's `last`)
    means: str


OUTCOMES = {
    "activated": Meaning(0, True, "a release passed every check and runs now; its health window decides"),
    "confirmed": Meaning(0, True, "the health window passed (the daemon)"),
    "rolled_back": Meaning(
        0, True, "back to the previous slot: halted, unhealthy, or by the operator; not taken again"
    ),
    "up_to_date": Meaning(0, False, "nothing to take; the reason names releases skipped and why"),
    "waiting": Meaning(
        0,
        False,
        "a health window is open, or an operator's rollback or pin came during the check (it stands); "
        "the next check goes on",
    ),
    "rejected": Meaning(
        UpdateError.exit_code,
        True,
        "refused: metadata (signature, expiry, replay, length), the index or one entry of it, a target "
        "(hash, size), the release's validation, or a pin over its firmware",
    ),
    "unavailable": Meaning(
        RegistryUnavailableError.exit_code,
        True,
        "the repository could not be reached, was too slow, or broke off a download (which resumes)",
    ),
}
# When one check has several outcomes (one per kind), its exit code is the first of these it has.
PRECEDENCE = ("rejected", "unavailable")


def exit_code(outcomes: Iterable[str]) -> int:
    present = set(outcomes)
    return next((OUTCOMES[o].exit_code for o in PRECEDENCE if o in present), 0)


class Step(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    kind: str
    version: str


class Health(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: str
    started: float  # wall clock
    # True while the daemon runs the window. Found True at start-up, the daemon died during the window
    # (crash, kill, power cut): roll back. False: not started yet (`appliance ota` activated it while the
    # daemon was down) or stopped cleanly: run it (again).
    running: bool = False


class Outcome(BaseModel):
    model_config = ConfigDict(extra="forbid")
    outcome: str  # a key of OUTCOMES
    kind: str = ""
    version: str = ""
    reason: str = ""
    at: float = 0.0  # the last time, when count > 1
    count: int = 1  # checks in a row that came to this same outcome

    def same(self, other: Outcome) -> bool:
        return (self.outcome, self.kind, self.version, self.reason) == (
            other.outcome,
            other.kind,
            other.version,
            other.reason,
        )


class Invalid(BaseModel):
    """A release that failed validation on this device."""

    model_config = ConfigDict(extra="forbid")
    release: str  # model@version
    reason: str
    at: float


class State(BaseModel):
    model_config = ConfigDict(extra="forbid")
    step: Step | None = None
    health: dict[str, Health] = Field(default_factory=dict)
    refused: list[str] = Field(default_factory=list)
    invalid: dict[str, Invalid] = Field(default_factory=dict)  # fingerprint (device.ota.index) -> why
    bad_entries: dict[str, str] = Field(default_factory=dict)  # digest of the entry -> why
    pins: dict[str, str] = Field(default_factory=dict)
    history: list[Outcome] = Field(default_factory=list)
    last_check: float | None = None


class Journal:
    """Changed by one thread at a time (the update lock); read by any. Readers get `summary()`, a
    snapshot taken when the state was last loaded or saved, so they never iterate a dict that the
    OTA thread is changing, and they see what the file on disk says."""

    def __init__(self, path: Path, clock: Clock | None = None) -> None:
        self.path = path
        self.clock = clock or SystemClock()
        self.state = self._load()
        self._this_check: list[Outcome] = []
        self._snapshot = self._summarise()

    def _load(self) -> State:
        try:
            return State.model_validate_json(self.path.read_bytes())
        except FileNotFoundError:
            return State()
        except (OSError, ValidationError, ValueError) as exc:
            # Only an interrupted first write or a damaged card gets here: start afresh, keep the file.
            log.error("OTA journal %s is unreadable (%s); starting a new one", self.path, exc)
            self.path.replace(self.path.with_suffix(".damaged"))
            return State()

    def reload(self) -> State:
        self.state = self._load()
        self._snapshot = self._summarise()
        return self.state

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        with temporary.open("w") as handle:
            handle.write(self.state.model_dump_json(indent=1))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.path)
        fd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        self._snapshot = self._summarise()  # one reference, replaced whole: readers need no lock

    def begin(self, name: str, kind: str, version: str) -> None:
        self.state.step = Step(name=name, kind=kind, version=version)
        self.save()

    def end_step(self) -> None:
        self.state.step = None
        self.save()

    def begin_check(self) -> None:
        self.state.last_check = self.clock.time()
        self._this_check = []
        self.save()

    def record(self, outcome: Outcome) -> None:
        """Append `outcome`, or count it on the newest entry if it is the same outcome again. Recorded
        twice in one check (the engine records a failed check; the daemon's agent also did, before the
        engine did), it is one entry."""
        if any(outcome.same(seen) for seen in self._this_check):
            return
        self._this_check.append(outcome)
        last = self.last()
        if last is not None and last.same(outcome):
            last.count += 1
            last.at = outcome.at
        else:
            self.state.history = [*self.state.history, outcome][-HISTORY:]
        self.save()

    def last(self) -> Outcome | None:
        return self.state.history[-1] if self.state.history else None

    def summary(self) -> dict[str, Any]:
        """The journal as last saved, for the status topic and `appliance ota status`; any thread."""
        return copy.deepcopy(self._snapshot)

    def _summarise(self) -> dict[str, Any]:
        """Called by the thread that changes the state, after each change is saved."""
        last = self.last()
        return {
            "step": None if self.state.step is None else self.state.step.model_dump(),
            "health_windows": {k: h.version for k, h in self.state.health.items()},
            "pins": dict(self.state.pins),
            "refused": list(self.state.refused),
            "invalid": [i.model_dump() for i in self.state.invalid.values()],
            "bad_entries": sorted(set(self.state.bad_entries.values())),
            "last_check": self.state.last_check,
            "last": None if last is None else last.model_dump(),
        }
