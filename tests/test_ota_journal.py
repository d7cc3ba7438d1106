"""The journal across threads, the engine on an injected clock, and the status fields it feeds, as
docs/topics.md lists them."""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Any

import pytest

from device.clock import FakeClock, SystemClock
from device.config import load_config
from device.errors import RegistryUnavailableError
from device.ota.agent import Agent
from device.ota.engine import Engine
from device.ota.health import HealthWatch
from device.ota.journal import Health, Invalid, Journal, Outcome, Step

from .conftest import ROOT
from .ota_helpers import light_pipeline, new_repo, ota_config, serve


def test_the_summary_is_what_was_last_saved_and_a_copy(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.json")
    journal.state.health["embedder"] = Health(version="1.1.0", started=1.0)  # not saved yet
    assert journal.summary()["health_windows"] == {}
    journal.save()
    summary = journal.summary()
    assert summary["health_windows"] == {"embedder": "1.1.0"}
    summary["health_windows"].clear()
    summary["pins"]["detector"] = "9.9.9"
    assert journal.summary()["health_windows"] == {"embedder": "1.1.0"} and journal.summary()["pins"] == {}


def test_summaries_read_on_other_threads_while_the_ota_thread_changes_the_journal(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.json")
    errors: list[BaseException] = []
    done = threading.Event()

    def read() -> None:
        try:
            while not done.is_set():
                journal.summary()
        except Exception as exc:
            errors.append(exc)

    readers = [threading.Thread(target=read) for _ in range(2)]
    for reader in readers:
        reader.start()
    for i in range(20_000):  # windows opened and closed as fast as one thread can
        journal.state.health[f"kind{i % 50}"] = Health(version="1.0.0", started=float(i))
        journal.state.health.pop(f"kind{(i + 25) % 50}", None)
    done.set()
    for reader in readers:
        reader.join(10)
    assert errors == []


def test_the_engine_stamps_outcomes_and_checks_with_its_clock(tmp_path: Path) -> None:
    repo = new_repo(tmp_path)
    with serve(repo.path) as url:
        pass  # the server is gone again: its port refuses connections
    clock = FakeClock(1_900_000_000.0)
    engine = Engine(ota_config(url, repo, tmp_path / "state"), clock=clock)
    with pytest.raises(RegistryUnavailableError):
        engine.check()
    last = engine.journal.last()
    assert last is not None and (last.outcome, last.at) == ("unavailable", 1_900_000_000.0)
    assert engine.journal.summary()["last_check"] == 1_900_000_000.0


def _documented(section: str) -> set[str]:
    return set(re.findall(r"`([a-z_]+(?:\.[a-z_]+)?)`", section))


def _fields(status: dict[str, Any]) -> set[str]:
    """Every field of the status's `ota`, nested ones as `parent.field` (those under a kind or in a
    list's entries by their parent's name; with OTA off a health window is its version alone)."""
    found = set(status)
    for name in ("step", "last"):
        found |= {f"{name}.{field}" for field in status[name]}
    for name in ("health_windows", "invalid"):
        entries = status[name].values() if isinstance(status[name], dict) else status[name]
        found |= {f"{name}.{field}" for entry in entries if isinstance(entry, dict) for field in entry}
    return found


def test_every_field_of_the_ota_status_is_in_docs_topics(tmp_path: Path, load_model: Any) -> None:
    """What the status topic's `ota` carries, with every part filled, against docs/topics.md."""
    config = load_config(environ={"APPLIANCE_STATE_DIR": str(tmp_path)})
    engine = Engine(config)
    state = engine.journal.state
    state.step = Step(name="download", kind="embedder", version="1.2.0")
    state.health["embedder"] = Health(version="1.1.0", started=1.0, running=True)
    state.pins["embedder"] = "1.1.0"
    state.refused.append("efficientnet-lite0-int8@1.0.5")
    state.invalid["digest"] = Invalid(release="efficientnet-lite0-int8@1.3.0", reason="vectors", at=2.0)
    state.bad_entries["other"] = "index entry x: no appliance field"
    state.last_check = 3.0
    engine.journal.record(Outcome(outcome="rejected", kind="embedder", version="1.3.0", reason="x", at=2.0))
    pipeline = light_pipeline(load_model)
    agent = Agent(engine, pipeline, config, SystemClock(), lambda: None)
    agent.windows["embedder"] = HealthWatch.open("embedder", "1.1.0", 0.0, pipeline, None)
    docs = (ROOT / "docs" / "topics.md").read_text()
    section = docs.split("## `ota` in the status and the stats", 1)[1].split("\n## ", 1)[0]
    on, off = _fields(agent.status()), _fields(engine.journal.summary())  # OTA on; off: the journal only
    missing = sorted((on | off) - _documented(section))
    assert not missing, f"docs/topics.md lacks {missing}"
