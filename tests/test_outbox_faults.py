"""Fault injection against a real mosquitto and the real daemon: outages, kill -9, a corrupt outbox
file, a full disk. No object message may be lost or numbered twice."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from device.dedupe import Deduplicator
from device.wire import decode

from .broker import Mosquitto
from .daemons import start_daemon
from .mqtt_helpers import Collector, daemon_env

TOPIC = "appliance/test-dev"
# Re-embed on every frame: about 15 object messages a second, so outages build a real backlog.
BUSY = {"APPLIANCE_PIPELINE__REEMBED_IOU": "1.0", "APPLIANCE_CAMERA__SOURCE": "images:demo?fps=15&seconds=30"}


@pytest.fixture()
def persistent_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    (tmp_path / "broker").mkdir()
    broker = Mosquitto(tmp_path / "broker", persistent=True)
    broker.start()
    yield broker
    broker.stop()


def seqs_of(collector: Collector) -> list[int]:
    return [decode(m.payload).seq for m in collector.on(f"{TOPIC}/objects")]


def drained(outbox: dict[str, float]) -> bool:
    """No backlog: at most the live messages of the last frame or two wait for their acknowledgement.
    (Depth alone is no test: the stats are taken right after a frame stored its objects.)"""
    return outbox["oldest_age_s"] < 1.0


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    assert process.wait(10) == 0


def stored_next_seq(state: Path) -> int:
    db = sqlite3.connect(state / "outbox.sqlite")
    (value,) = db.execute("SELECT value FROM meta WHERE key = 'next_seq'").fetchone()
    depth = db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
    db.close()
    assert depth == 0, f"{depth} messages still in the outbox"
    return int(value)


def outbox_depth(state: Path) -> int:
    """Messages in the daemon's outbox, read from its SQLite file (WAL: a reader never blocks it)."""
    try:
        db = sqlite3.connect(f"file:{state / 'outbox.sqlite'}?mode=ro", uri=True, timeout=1)
        try:
            return int(db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
        finally:
            db.close()
    except sqlite3.Error:
        return 0


# An outage lasts until this many messages wait in the outbox (about 15 a second): 60 proves what 450
# (the 30 s outage this test used to sleep through) proves; the long one runs with `-m slow`.
@pytest.mark.parametrize("backlog", [60, pytest.param(450, marks=pytest.mark.slow)])
@pytest.mark.heavy
def test_a_broker_outage_loses_nothing(persistent_broker: Mosquitto, tmp_path: Path, backlog: int) -> None:
    state = tmp_path / "state"
    collector = Collector(persistent_broker.port, f"{TOPIC}/#", session="outage-subscriber")
    # A slow drain (the backlog in about 5 s), so the backlog shrinking is visible in several stats.
    rate = backlog // 5
    env = daemon_env(persistent_broker.port, state, **BUSY, APPLIANCE_OUTBOX__DRAIN_RATE_PER_S=str(rate))
    daemon = start_daemon(env, log=tmp_path / "daemon.log")
    collector.wait_for(lambda: len(seqs_of(collector)) >= 10, 60, "objects before the outage")
    persistent_broker.stop()
    # Frames keep coming; the outbox keeps every embedding.
    collector.wait_for(lambda: outbox_depth(state) >= backlog, 60 + backlog / 5, f"{backlog} stored")
    persistent_broker.start()
    collector.wait_for(
        lambda: any(
            drained(s["outbox"]) and s["outbox"]["acked"] > backlog
            for s in (m.json() for m in collector.on(f"{TOPIC}/stats"))
        ),
        60,
        "the backlog drained (stats: nothing older than a second in the outbox)",
    )
    stop(daemon)
    last = stored_next_seq(state) - 1
    collector.wait_for(lambda: len(set(seqs_of(collector))) >= last, 20, "every stored seq")
    collector.close()
    unique = sorted(set(seqs_of(collector)))
    missing = sorted(set(range(1, last + 1)) - set(unique))
    assert not missing, f"missing {len(missing)} of {last}: {missing[:20]} ... {missing[-5:]}"
    assert len(unique) > backlog  # the whole backlog really went through
    stats = [m.json()["outbox"] for m in collector.on(f"{TOPIC}/stats")]
    depths = [s["depth"] for s in stats]
    peak = depths.index(max(depths))
    assert depths[peak] > backlog // 2  # the backlog was visible in stats while it drained ...
    assert drained(stats[-1])  # ... and was gone before the daemon stopped
    assert any(0 < s["drain_rate_per_s"] <= rate * 4 / 3 for s in stats)  # at the configured rate
    assert "mqtt connected" in (tmp_path / "daemon.log").read_text()


@pytest.mark.heavy
def test_kill_9_then_restart_no_gap_and_duplicates_within_the_window(
    persistent_broker: Mosquitto, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    collector = Collector(persistent_broker.port, f"{TOPIC}/objects", session="crash-subscriber")
    env = daemon_env(persistent_broker.port, state, **BUSY, APPLIANCE_OUTBOX__MAX_INFLIGHT="16")
    first = start_daemon(env, log=tmp_path / "daemon.log")
    collector.wait_for(lambda: len(seqs_of(collector)) >= 40, 60, "objects before the crash")
    first.kill()
    first.wait(10)
    second = start_daemon(env, log=tmp_path / "daemon.log")
    seen = len(seqs_of(collector))
    collector.wait_for(lambda: len(seqs_of(collector)) >= seen + 40, 60, "objects after the restart")
    stop(second)
    last = stored_next_seq(state) - 1
    collector.wait_for(lambda: max(seqs_of(collector)) >= last, 20, "the last message")
    collector.close()
    seqs = seqs_of(collector)
    dedupe = Deduplicator()
    kept = [s for s in seqs if dedupe.is_new("test-dev", s)]
    assert sorted(kept) == list(range(1, last + 1)), "no gap across kill -9"
    assert dedupe.duplicates <= 16, f"{dedupe.duplicates} duplicates, more than the in-flight window"


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_corrupt_outbox_file_is_quarantined_and_the_daemon_runs_on(
    broker: Mosquitto, tmp_path: Path, damage: str
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "outbox.sqlite.seq-floor").write_text("5001\n")
    if damage == "garbage":
        (state / "outbox.sqlite").write_bytes(os.urandom(64 * 1024))
    else:
        source = tmp_path / "good.sqlite"
        db = sqlite3.connect(source)
        db.execute("CREATE TABLE outbox (seq INTEGER PRIMARY KEY, payload BLOB)")
        db.executemany("INSERT INTO outbox VALUES (?, ?)", [(i, os.urandom(2000)) for i in range(200)])
        db.commit()
        db.close()
        data = source.read_bytes()
        (state / "outbox.sqlite").write_bytes(data[: len(data) // 2])
    collector = Collector(broker.port)
    daemon = start_daemon(daemon_env(broker.port, state), log=tmp_path / "daemon.log")
    collector.wait_for(lambda: bool(seqs_of(collector)), 60, "objects from a fresh outbox")
    collector.wait_for(lambda: bool(collector.on(f"{TOPIC}/stats")), 10, "stats")
    stop(daemon)
    collector.close()
    assert min(seqs_of(collector)) >= 5001  # numbering goes on above the floor, never repeats
    outbox = collector.on(f"{TOPIC}/stats")[-1].json()["outbox"]
    assert outbox["quarantined"] and "moved to" in outbox["last_error"]
    assert list(state.glob("outbox.sqlite.corrupt-*"))
    assert "was unreadable" in (tmp_path / "daemon.log").read_text()


@pytest.mark.heavy
def test_a_full_disk_is_counted_and_survived(small_disk: Path, tmp_path: Path) -> None:
    (tmp_path / "broker").mkdir()
    broker = Mosquitto(tmp_path / "broker")  # not started: the backlog can only grow
    env = daemon_env(broker.port, small_disk, **BUSY)
    daemon = start_daemon(env, log=tmp_path / "daemon.log")
    try:
        deadline = time.monotonic() + 90
        while "disk is full" not in (tmp_path / "daemon.log").read_text() and time.monotonic() < deadline:
            assert daemon.poll() is None, (tmp_path / "daemon.log").read_text()[-3000:]
            time.sleep(0.5)
        assert "disk is full" in (tmp_path / "daemon.log").read_text()
        time.sleep(2)
        assert daemon.poll() is None  # still running on a full disk
        broker.start()
        collector = Collector(broker.port)
        collector.wait_for(
            lambda: any(
                m.json()["outbox"]["drops"].get("disk_full", 0) > 0 for m in collector.on(f"{TOPIC}/stats")
            ),
            60,
            "stats counting the disk-full drops",
        )
        collector.wait_for(lambda: bool(seqs_of(collector)), 30, "the stored backlog")
        collector.close()
        stop(daemon)
    finally:
        broker.stop()
    db = sqlite3.connect(small_disk / "outbox.sqlite")
    assert db.execute("PRAGMA quick_check").fetchone()[0] == "ok"
    db.close()
