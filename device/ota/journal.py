"""What the updater has done and is doing, on disk, so that any step survives a kill -9 or a power cut.

`<state_dir>/ota/journal.json` is rewritten whole each time (write to a temporary file, fsync, rename),
so it is always either the old or the new version. It records:
- `step`: the step in progress (download, verify, stage, activate), to clean up after a crash;
- `health`: releases activated but not yet confirmed by a health window;
- `refused`: releases this device rolled back from, never taken again automatically;
- `pins`: the operator's pinned versions;
- `history`: the last outcomes, newest last (the status topic shows the newest);
- `last_check`: when the repository was last checked (wall clock).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

log = logging.getLogger(__name__)

HISTORY = 20


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
    outcome: str  # activated, confirmed, rolled_back, rejected, up_to_date, unavailable, pinned
    kind: str = ""
    version: str = ""
    reason: str = ""
    at: float = 0.0


class State(BaseModel):
    model_config = ConfigDict(extra="forbid")
    step: Step | None = None
    health: dict[str, Health] = Field(default_factory=dict)
    refused: list[str] = Field(default_factory=list)
    pins: dict[str, str] = Field(default_factory=dict)
    history: list[Outcome] = Field(default_factory=list)
    last_check: float | None = None


class Journal:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.state = self._load()

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

    def begin(self, name: str, kind: str, version: str) -> None:
        self.state.step = Step(name=name, kind=kind, version=version)
        self.save()

    def end_step(self) -> None:
        self.state.step = None
        self.save()

    def record(self, outcome: Outcome) -> None:
        self.state.history = [*self.state.history, outcome][-HISTORY:]
        self.save()

    def last(self) -> Outcome | None:
        return self.state.history[-1] if self.state.history else None

    def summary(self) -> dict[str, Any]:
        last = self.last()
        return {
            "step": None if self.state.step is None else self.state.step.model_dump(),
            "health_windows": {k: h.version for k, h in self.state.health.items()},
            "pins": dict(self.state.pins),
            "refused": list(self.state.refused),
            "last_check": self.state.last_check,
            "last": None if last is None else last.model_dump(),
        }
