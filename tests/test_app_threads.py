"""What runs on the frame thread, and what must not: the daemon in-process, on the demo source."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import pytest

from device.app import App, Observers
from device.config import load_config

from .broker import Mosquitto
from .mqtt_helpers import daemon_env, wait_until


def test_a_slow_stats_consumer_does_not_hold_up_the_frames(broker: Mosquitto, tmp_path: Path) -> None:
    """The stats (snapshot, outbox expiry, publishing, observers) run on their own thread: while one
    of them hangs, frames keep being processed."""
    entered, release = threading.Event(), threading.Event()

    def hang(_snapshot: dict[str, Any]) -> None:
        entered.set()
        release.wait(30)

    env = daemon_env(
        broker.port, tmp_path / "state", APPLIANCE_CAMERA__SOURCE="images:demo?fps=30&seconds=60"
    )
    app = App(load_config(environ=env), observers=Observers(on_stats=hang))
    stop = threading.Event()
    runner = threading.Thread(target=app.run, args=(stop,))
    runner.start()
    try:
        assert entered.wait(30), "no stats were taken"
        frames = app.pipeline.counters.frames
        assert wait_until(lambda: app.pipeline.counters.frames >= frames + 10, 15), "frames stopped"
        assert entered.is_set() and not release.is_set()  # all while the stats still hang
    finally:
        release.set()
        stop.set()
        runner.join(15)
    assert not runner.is_alive()


def test_a_stats_thread_that_raises_is_logged_and_goes_on(
    broker: Mosquitto, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[int] = []

    def once_broken(snapshot: dict[str, Any]) -> None:
        calls.append(snapshot["totals"]["processed"])
        if len(calls) == 1:
            raise RuntimeError("an observer with a bug")

    env = daemon_env(broker.port, tmp_path / "state")
    app = App(load_config(environ=env), observers=Observers(on_stats=once_broken))
    stop = threading.Event()
    runner = threading.Thread(target=app.run, args=(stop,))
    with caplog.at_level(logging.ERROR, logger="device.supervise"):
        runner.start()
        try:
            assert wait_until(lambda: len(calls) >= 3, 30), calls  # restarted after its backoff
        finally:
            stop.set()
            runner.join(15)
    assert any("stats thread failed" in r.getMessage() and r.exc_info for r in caplog.records)
