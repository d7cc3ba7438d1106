"""OTA with the real daemon and the real CLI: kill -9 at every step, the hot swap without a restart, the
health window's rollback after a crash, and frames that keep flowing through a swap."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from device.camera.source import Frame
from device.ota.engine import Engine
from device.ota.faults import STEPS
from device.vision.manifest import Manifest
from device.vision.preprocess import Image
from device.vision.runtime import InterpreterFactory, LoadedModel

from .broker import Mosquitto
from .conftest import ROOT
from .mqtt_helpers import wait_until
from .ota_helpers import (
    TOPIC,
    daemon_rig,
    embedder_version,
    last_outcome,
    light_pipeline,
    new_repo,
    ota_config,
    ota_env,
    release,
    serve,
)

# A window that stays open for the whole test; the first check comes within one 5 s interval.
WINDOW_OPEN_10_MIN = {"APPLIANCE_OTA__HEALTH_WINDOW_S": "600", "APPLIANCE_OTA__INTERVAL_S": "5"}


def ota_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    full = {**{k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}, **env}
    return subprocess.run(
        [sys.executable, "-m", "device", "ota", *args],
        cwd=ROOT,
        env=full,
        capture_output=True,
        check=False,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("step", [s for s in STEPS if s != "health"])
def test_kill_9_at_each_step_leaves_the_old_or_the_new_model_never_a_broken_one(
    tmp_path: Path, step: str
) -> None:
    repo = new_repo(tmp_path)
    release(repo)
    state = tmp_path / "state"
    with serve(repo.path) as url:
        env = ota_env(url, repo, state)
        crashed = ota_cli({**env, "OTA_FAULT_CRASH_AT": step}, "check")
        assert crashed.returncode == -9, crashed.stderr
        engine = Engine(ota_config(url, repo, state))
        assert engine.slots.current("embedder") is None  # every step before activation leaves the old model
        manifest, model_id, version = engine.active("embedder")
        assert version == "1.0.0" and engine.factory.load(manifest, model_id)  # and it loads
        again = ota_cli(env, "check", "--json")
        assert again.returncode == 0, again.stderr
    assert '"outcome": "activated"' in again.stdout
    engine = Engine(ota_config(url, repo, state))
    manifest, model_id, version = engine.active("embedder")
    assert version == "1.1.0" and engine.factory.load(manifest, model_id)
    staging = state / "ota" / "staging"
    assert not [p for p in staging.iterdir() if p.is_dir() or p.suffix == ".part"]  # cleaned up


@pytest.mark.heavy
def test_a_new_embedder_is_swapped_in_without_a_restart_and_confirmed(
    broker: Mosquitto, tmp_path: Path
) -> None:
    window = {"APPLIANCE_OTA__HEALTH_WINDOW_S": "3", "APPLIANCE_OTA__HEALTH_MIN_FRAMES": "5"}
    with daemon_rig(broker.port, tmp_path, new_repo(tmp_path), extra=window) as rig:
        daemon = rig.start()
        rig.status(lambda s: embedder_version(s) == "1.0.0", 60, "the daemon online")
        release(rig.repo)
        rig.collector.publish("appliance/fleet/release", '{"hint": "new embedder"}')  # only a trigger
        # Published on activation, after the swap: the new version runs, the window is open.
        rig.status(
            lambda s: embedder_version(s) == "1.1.0" and last_outcome(s) == "activated",
            60,
            "the new embedder, activated",
        )
        rig.status(lambda s: last_outcome(s) == "confirmed", 30, "the health window's verdict")
        assert daemon.poll() is None  # the same process all along
        rig.collector.wait_for(
            lambda: any(
                ((m.json().get("ota") or {}).get("last") or {}).get("outcome") == "confirmed"
                for m in rig.collector.on(f"{TOPIC}/stats")
            ),
            10,
            "the outcome in stats too",
        )
    log = (tmp_path / "daemon.log").read_text()
    assert "swapped in between frames" in log and "confirmed" in log


def test_a_crash_during_the_health_window_rolls_back_at_the_next_start(
    broker: Mosquitto, tmp_path: Path
) -> None:
    repo = new_repo(tmp_path)
    release(repo)
    with daemon_rig(broker.port, tmp_path, repo, extra=WINDOW_OPEN_10_MIN) as rig:
        first = rig.start()
        rig.status(lambda s: embedder_version(s) == "1.1.0", 90, "the activation")
        first.kill()  # inside the 10-minute window
        first.wait(10)
        rig.start()
        status = rig.status(
            lambda s: last_outcome(s) == "rolled_back" and embedder_version(s) == "1.0.0", 60, "the rollback"
        )
        assert "health window" in status["ota"]["last"]["reason"]
        engine = Engine(ota_config(rig.url, repo, rig.state))
    assert engine.slots.current("embedder") is None
    assert "efficientnet-lite0-int8@1.1.0" in engine.journal.state.refused  # not taken again


def test_frames_keep_flowing_through_a_swap(
    load_model: Callable[[str], LoadedModel],
    cpu_factory: InterpreterFactory,
    manifest: Manifest,
    photo: Callable[[str], Image],
) -> None:
    """The swap is a pointer exchange between frames: while another thread loads and warms new models,
    the frame thread keeps processing frames with the old ones, and takes the new ones at the next frame.
    Frames are counted, not timed: the gaps a swap causes are `appliance bench ota`'s to measure."""
    pipeline = light_pipeline(load_model)
    frame = Frame(photo("astronaut"), 0.0, 1)
    loading, requested = threading.Event(), threading.Event()

    def reload() -> None:
        loading.set()
        fresh = light_pipeline(lambda name: cpu_factory.load(manifest, name))  # new interpreters
        pipeline.request_swap(fresh.detector, fresh.embedder)
        requested.set()

    loader = threading.Thread(target=reload)
    loader.start()
    assert loading.wait(10)
    during = 0
    while not requested.is_set():
        pipeline.process(frame)
        during += 1
    loader.join(10)
    old = pipeline.detector
    pipeline.process(frame)
    assert pipeline.counters.swaps == 1 and pipeline.detector is not old
    assert during >= 2, f"{during} frames while the new models loaded: the frame thread waited for them"


def test_a_detector_and_an_embedder_swapped_in_before_the_next_frame_both_run_from_it(
    load_model: Callable[[str], LoadedModel], cpu_factory: InterpreterFactory, manifest: Manifest
) -> None:
    """One check can activate both kinds; the agent swaps them in one after the other through the
    port, and the frame thread takes both at its next frame (the second request used to replace the
    first: the daemon kept the old detector while its slot and health window named the new one)."""
    pipeline = light_pipeline(load_model)
    fresh = light_pipeline(lambda name: cpu_factory.load(manifest, name))  # new interpreters
    pipeline.swap_model(fresh.detector)
    pipeline.swap_model(fresh.embedder)
    pipeline.apply_swap()
    assert (pipeline.detector, pipeline.embedder) == (fresh.detector, fresh.embedder)


def test_an_operator_pins_a_version_and_rolls_back_from_the_cli(tmp_path: Path) -> None:
    repo = new_repo(tmp_path)
    release(repo, "1.1.0")
    release(repo, "1.2.0")
    state = tmp_path / "state"
    with serve(repo.path) as url:
        env = ota_env(url, repo, state)
        assert ota_cli(env, "pin", "embedder", "1.1.0").returncode == 0
        checked = ota_cli(env, "check", "--json")
        assert checked.returncode == 0, checked.stderr
    status = json.loads(ota_cli(env, "status", "--json").stdout)
    assert status["models"]["embedder"]["version"] == "1.1.0"  # the pin, not the newest
    assert status["pins"] == {"embedder": "1.1.0"}
    text = ota_cli(env, "status").stdout
    assert "embedder  efficientnet-lite0-int8 1.1.0 (slot 1.1.0; previous: bundled)" in text
    assert "health window open  pinned to 1.1.0" in text and "last      activated embedder 1.1.0" in text
    assert "\nchecked   20" in text  # when the repository was last checked
    rolled = ota_cli(env, "rollback", "embedder")
    assert rolled.returncode == 0 and "rolled_back" in rolled.stdout
    status = json.loads(ota_cli(env, "status", "--json").stdout)
    assert status["models"]["embedder"]["version"] == "1.0.0"
    assert "efficientnet-lite0-int8@1.1.0" in status["refused"]
    again = ota_cli(env, "rollback", "embedder")
    assert again.returncode == 65 and "nothing to roll back to" in again.stderr


def test_two_updaters_never_run_at_once(tmp_path: Path) -> None:
    repo = new_repo(tmp_path)
    release(repo)
    state = tmp_path / "state"
    with serve(repo.path) as url:
        env = ota_env(url, repo, state)
        with Engine(ota_config(url, repo, state)).checking():  # as the daemon's check holds it
            busy = ota_cli(env, "check")
        assert busy.returncode == 75 and "another check is in progress" in busy.stderr
        assert ota_cli(env, "check").returncode == 0  # and once it is free, the check runs


def _opened(lock: Path) -> int:
    """How many open files of `lock` this process has."""
    opened = 0
    for fd in Path("/proc/self/fd").iterdir():
        with contextlib.suppress(OSError):  # an fd closed while we look
            opened += os.readlink(fd) == str(lock)
    return opened


def _waiting_for(lock: Path, check: threading.Thread, deadline_s: float = 30) -> bool:
    """Whether a second open file of `lock` appears in this process (the check, come to take the lock
    another thread holds) while `check` still runs; False if the check ended first. The lock offers no
    event to wait on, so this is the suite's polling wait with a deadline."""
    wait_until(lambda: _opened(lock) >= 2 or not check.is_alive(), deadline_s)
    return _opened(lock) >= 2 and check.is_alive()


def test_a_check_waits_out_a_brief_hold_of_the_update_lock(tmp_path: Path) -> None:
    """The daemon holds the update lock for milliseconds (a rollback, a verdict, following a slot); a
    check that meets such a hold waits for it (docs/ota.md: 75 only if it stays busy for 10 s)."""
    repo = new_repo(tmp_path)
    release(repo)
    state = tmp_path / "state"
    results: list[object] = []
    with serve(repo.path) as url:
        holder, checker = Engine(ota_config(url, repo, state)), Engine(ota_config(url, repo, state))

        def run() -> None:
            try:
                results.append(checker.check()[0][-1])
            except Exception as exc:  # the test reports it
                results.append(exc)

        check = threading.Thread(target=run)
        with holder.locked():
            check.start()
            waited = _waiting_for(state / "ota" / "lock", check)
        check.join(60)
    [outcome] = results
    assert waited and getattr(outcome, "outcome", outcome) == "activated", outcome


def test_start_up_waits_out_a_brief_hold_and_still_rolls_back_a_crashed_window(tmp_path: Path) -> None:
    """A daemon that starts while `appliance ota` holds the update lock for a moment must still judge a
    window it died in: skipping start-up would run the unconfirmed model with no verdict to come."""
    repo = new_repo(tmp_path)
    release(repo)
    state = tmp_path / "state"
    with serve(repo.path) as url:
        config = ota_config(url, repo, state)
        Engine(config).check()
    Engine(config).startup()  # the window starts; the daemon then dies inside it
    results: list[object] = []

    def start() -> None:
        try:
            results.append(Engine(config).startup())
        except Exception as exc:  # the test reports it
            results.append(exc)

    daemon = threading.Thread(target=start)
    with Engine(config).locked():
        daemon.start()
        waited = _waiting_for(state / "ota" / "lock", daemon)
    daemon.join(60)
    [outcomes] = results
    assert waited and isinstance(outcomes, list), outcomes
    assert [o.outcome for o in outcomes] == ["rolled_back"]
    assert Engine(config).slots.current("embedder") is None


def test_an_operator_rolls_back_and_pins_over_mqtt(broker: Mosquitto, tmp_path: Path) -> None:
    repo = new_repo(tmp_path)
    release(repo)
    with daemon_rig(broker.port, tmp_path, repo, extra=WINDOW_OPEN_10_MIN) as rig:
        daemon = rig.start()
        rig.status(lambda s: embedder_version(s) == "1.1.0", 60, "the activation")
        rig.collector.publish(f"{TOPIC}/cmd/ota-pin", '{"kind": "camera"}')  # malformed: ignored
        rig.collector.publish(f"{TOPIC}/cmd/ota-rollback", '{"kind": "embedder"}')
        status = rig.status(
            lambda s: last_outcome(s) == "rolled_back" and embedder_version(s) == "1.0.0",
            30,
            "the operator's rollback",
        )
        assert "operator command" in status["ota"]["last"]["reason"]
        rig.collector.publish(f"{TOPIC}/cmd/ota-pin", '{"kind": "embedder", "version": "1.1.0"}')
        rig.status(
            lambda s: s["ota"]["pins"] == {"embedder": "1.1.0"} and embedder_version(s) == "1.1.0",
            30,
            "the pinned version, taken again despite the earlier rollback",
        )
        assert daemon.poll() is None
    assert (
        "ignored malformed message on appliance/ota-dev/cmd/ota-pin: kind"
        in (tmp_path / "daemon.log").read_text()
    )
