"""The journal across threads, and the engine on an injected clock."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from device.clock import FakeClock
from device.errors import RegistryUnavailableError
from device.ota.engine import Engine
from device.ota.journal import Health, Journal

from .ota_helpers import new_repo, ota_config, serve


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
