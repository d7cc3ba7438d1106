"""The updater on real networks: slow servers meet the check's deadline and rate floor, a stalled check
never holds up an operator's rollback or a health-window verdict, and kept-alive connections stay clean
(HTTP/1.1 servers that send an error's body after its headers)."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
from tuf.api import exceptions

from device.config import OtaConfig
from device.errors import UpdateBusyError
from device.ota.engine import Engine
from device.ota.fetcher import Budget, Limits, ResumingFetcher
from rigs.http import serving

from .broker import Mosquitto
from .conftest import ROOT
from .ota_helpers import (
    TOPIC,
    Faults,
    daemon_rig,
    embedder_version,
    new_repo,
    nginx_log,
    ota_config,
    ota_env,
    release,
    serve,
    serve_nginx,
)

MODEL_BYTES = 5_400_000  # about the size of the embedder a release carries


def ota_cli(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "device", "ota", *args],
        cwd=ROOT,
        env=_env(env),
        capture_output=True,
        check=False,
        text=True,
        timeout=timeout,
    )


def _env(env: dict[str, str]) -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}, **env}


def running(status: dict[str, Any]) -> tuple[str, str]:
    """The detector's id and the embedder's version the daemon runs, by its status."""
    return str(status["models"]["detector"]["id"]), embedder_version(status)


def journal_last(state: Path) -> dict[str, str]:
    return dict(json.loads((state / "ota" / "journal.json").read_text())["history"][-1])


# -- point 1: deadlines ---------------------------------------------------------------------------------
def test_the_default_budget_cuts_a_trickle_within_a_minute_and_lets_a_slow_honest_link_through() -> None:
    ota = OtaConfig()
    trickle = 2  # bytes per second: one every half second
    assert trickle * ota.rate_window_s < ota.min_rate_bytes_per_s * ota.rate_window_s  # it is cut ...
    assert ota.rate_window_s + 1 < 60  # ... after one window (and a watchdog tick)
    honest = 20_000  # bytes per second: a weak 3G link
    assert honest >= ota.min_rate_bytes_per_s and MODEL_BYTES / honest < ota.check_deadline_s


def test_a_check_against_a_trickling_timestamp_ends_at_its_deadline(tmp_path: Path) -> None:
    repo = new_repo(tmp_path)
    state = tmp_path / "state"
    faults = Faults(slow="timestamp.json", slow_every_s=1.5)  # one byte every 1.5 s
    with serve(repo.path, faults) as url:
        env = ota_env(url, repo, state, APPLIANCE_OTA__CHECK_DEADLINE_S="3")
        started = time.monotonic()
        checked = ota_cli(env, "check", timeout=30)  # today: for ever (each byte beats the read timeout)
        took = time.monotonic() - started
    assert checked.returncode == 69, checked.stderr
    assert "was too slow" in checked.stderr and "ota.check_deadline_s = 3 s" in checked.stderr
    assert took < 10
    last = journal_last(state)
    assert last["outcome"] == "unavailable" and "was too slow" in last["reason"]


def test_a_model_trickled_after_its_first_megabyte_is_cut_by_the_rate_floor_then_resumed(
    tmp_path: Path,
) -> None:
    repo = new_repo(tmp_path)
    release(repo)
    state = tmp_path / "state"
    faults = Faults(slow="/targets/models/", slow_after=1_000_000)  # then a byte every 0.5 s
    with serve(repo.path, faults) as url:
        env = ota_env(url, repo, state, APPLIANCE_OTA__RATE_WINDOW_S="2")
        started = time.monotonic()
        checked = ota_cli(env, "check", timeout=30)
        took = time.monotonic() - started
        assert checked.returncode == 69, checked.stderr
        assert "was too slow" in checked.stderr and "ota.min_rate_bytes_per_s" in checked.stderr
        assert took < 10
        [part] = (state / "ota" / "staging").glob("*.part")
        kept = part.stat().st_size
        assert 1_000_000 <= kept < 1_000_100  # what arrived is kept ...
        faults.slow = None
        again = ota_cli(env, "check", "--json")
    assert again.returncode == 0, again.stderr
    assert '"outcome": "activated"' in again.stdout
    assert faults.ranges == [f"bytes={kept}-"]  # ... and resumed


def test_an_operator_rolls_back_at_once_while_a_check_is_stalled_and_the_check_does_not_undo_it(
    tmp_path: Path,
) -> None:
    repo = new_repo(tmp_path)
    release(repo, "1.1.0")
    state = tmp_path / "state"
    faults = Faults()
    with serve(repo.path, faults) as url:
        env = ota_env(url, repo, state, APPLIANCE_OTA__MIN_RATE_BYTES_PER_S="0")
        engine = Engine(ota_config(url, repo, state))
        assert engine.check()[0][-1].outcome == "activated"
        with engine.locked():
            engine.confirm("embedder", "healthy")
        release(repo, "1.2.0")
        faults.slow, faults.slow_after = "/targets/models/", 100_000
        stalled = subprocess.Popen(
            [sys.executable, "-m", "device", "ota", "check", "--json"],
            cwd=ROOT,
            env=_env(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert faults.trickling.wait(30), f"the check never reached the model: {stalled.poll()}"
            started = time.monotonic()
            rolled = ota_cli(env, "rollback", "embedder")
            took = time.monotonic() - started
            assert rolled.returncode == 0, rolled.stderr  # today: 75, the check holds the lock
            assert took < 10
            faults.release.set()  # the check gets its model, validates it, and must not activate it
            out, err = stalled.communicate(timeout=60)
        finally:
            if stalled.poll() is None:
                stalled.kill()
                stalled.wait()
    assert stalled.returncode == 0, err
    [outcome] = [o for o in json.loads(out) if o.get("kind") == "embedder"]
    assert outcome["outcome"] == "waiting" and "changed during the check" in outcome["reason"]
    engine = Engine(ota_config(url, repo, state))
    assert engine.slots.current("embedder") is None  # the operator's rollback stands
    assert "efficientnet-lite0-int8@1.1.0" in engine.journal.state.refused


@pytest.mark.heavy
def test_a_health_window_and_an_operator_roll_back_on_time_while_a_check_is_stalled(
    broker: Mosquitto, tmp_path: Path
) -> None:
    """CenterNet float, much slower than the SSD it replaces, and a new embedder are activated; then a
    check stalls on a trickling timestamp.json. During the check an operator's `cmd/ota-rollback` of the
    embedder is carried out at once, and the detector's verdict still comes at the window's end."""
    repo = new_repo(tmp_path)
    release(repo, "2.0.0", model_id="centernet-coco-float")
    release(repo, "1.1.0")
    faults = Faults()
    env = {
        "APPLIANCE_MODELS__DETECTOR": "ssdlite-person-int8",
        "APPLIANCE_OTA__KINDS": '["detector", "embedder"]',
        "APPLIANCE_OTA__HEALTH_WINDOW_S": "6",
        "APPLIANCE_OTA__INTERVAL_S": "5",
        "APPLIANCE_OTA__HEALTH_MIN_FRAMES": "10",
        "APPLIANCE_OTA__MIN_RATE_BYTES_PER_S": "0",
    }
    with daemon_rig(broker.port, tmp_path, repo, faults=faults, extra=env) as rig:
        daemon = rig.start()
        rig.status(lambda s: running(s) == ("centernet-coco-float", "1.1.0"), 90, "both activated")
        activated = time.monotonic()
        faults.slow = "timestamp.json"
        rig.collector.publish("appliance/fleet/release", "{}")
        assert faults.trickling.wait(10), "the second check never started"
        rig.collector.publish(f"{TOPIC}/cmd/ota-rollback", '{"kind": "embedder"}')
        refused = "efficientnet-lite0-int8@1.1.0"
        status = rig.status(lambda s: refused in s["ota"]["refused"], 10, "the rollback")
        assert status["ota"]["state"] == "checking"  # the check is still stalled
        assert "operator command" in status["ota"]["last"]["reason"]
        status = rig.status(
            lambda s: refused in s["ota"]["refused"] and embedder_version(s) == "1.0.0", 10, "the swap back"
        )
        assert status["ota"]["state"] == "checking"  # and the bundled embedder runs again
        status = rig.status(lambda s: "centernet-coco-float@2.0.0" in s["ota"]["refused"], 30, "the verdict")
        assert time.monotonic() - activated < 6 + 10  # the window, and a margin for enough invokes
        assert status["ota"]["state"] == "checking"  # still
        assert status["ota"]["last"]["outcome"] == "rolled_back"
        assert "latency regression" in status["ota"]["last"]["reason"]
        assert running(status) == ("ssdlite-person-int8", "1.0.0")
        assert daemon.poll() is None


# -- point 2: kept-alive connections -------------------------------------------------------------------
def test_a_404_whose_body_comes_late_leaves_the_kept_alive_connection_clean(tmp_path: Path) -> None:
    """Every check asks for the next root version, normally a 404. Its body 50 ms after its headers
    used to be read as the status line of the next response on the same connection."""
    repo = new_repo(tmp_path)
    release(repo)
    with serve(repo.path, Faults(late_body_s=0.05, late_statuses=(404,))) as url:
        outcomes, _ = Engine(ota_config(url, repo, tmp_path / "state")).check()
    assert outcomes[-1].outcome == "activated", outcomes[-1].reason


def test_a_416_whose_body_comes_late_leaves_the_kept_alive_connection_clean(tmp_path: Path) -> None:
    """A part file that already holds the whole target (a crash before it was checked) gets a 416 for
    its Range; the download starts over on the same connection."""
    repo = new_repo(tmp_path)
    release(repo)
    state = tmp_path / "state"
    [model] = (repo.path / "targets").rglob("*embedder.tflite")
    with serve(repo.path, Faults(late_body_s=0.05, late_statuses=(416,))) as url:
        staging = state / "ota" / "staging"
        limits = Limits(60, 0, 1)
        fetcher = ResumingFetcher(staging, "", 5, "test", budget=Budget(limits, url))
        part = fetcher.part_path(f"{url}/{model.relative_to(repo.path)}")
        staging.mkdir(parents=True)
        part.write_bytes(model.read_bytes())
        outcomes, _ = Engine(ota_config(url, repo, state)).check()
    assert outcomes[-1].outcome == "activated", outcomes[-1].reason


def test_nginx_serves_checks_over_kept_alive_connections(tmp_path: Path) -> None:
    """The rig itself: nginx keeps connections alive, so the parametrized tests in test_ota.py really
    run over reused connections (a 404 for the next root among them)."""
    repo = new_repo(tmp_path)
    release(repo)
    with serve_nginx(repo.path) as url:
        first, _ = Engine(ota_config(url, repo, tmp_path / "state")).check()
        again, _ = Engine(ota_config(url, repo, tmp_path / "state")).check()
    assert (first[-1].outcome, again[-1].outcome) == ("activated", "up_to_date")
    served = nginx_log(tmp_path / "nginx-repo")
    assert 404 in served["statuses"] and served["most_per_connection"] > 2


class _Overrun(BaseHTTPRequestHandler):
    """HTTP/1.1, kept alive. `/long` is longer than its reader allows (LIMIT). It sends LIMIT + 1 bytes,
    which the reader must read to the last to see the overrun, so no byte of it is left on the socket;
    then it holds the rest of its body until the socket is readable again (the client's next request on
    the same connection, or the client closing it) and only then sends it. A connection that went back
    to the pool with that tail unread reads it as its next status line. Nothing depends on timing."""

    protocol_version = "HTTP/1.1"
    LIMIT = 50_000
    BODY = b"x" * (LIMIT + 100)

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        body = self.BODY if self.path.endswith("/long") else b"its own body"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if len(body) <= self.LIMIT:
            self.wfile.write(body)
            return
        self.wfile.write(body[: self.LIMIT + 1])
        self.wfile.flush()
        readable, _, _ = select.select([self.connection], [], [], 30)
        self.close_connection = not readable  # the client neither spoke nor left: the test fails anyway
        try:
            self.wfile.write(body[self.LIMIT + 1 :])
            self.wfile.flush()
        except OSError:  # the client closed the connection: it never reused it
            self.close_connection = True


@contextmanager
def serve_overrun() -> Iterator[str]:
    with serving(_Overrun) as url:
        yield url


def _overrun(fetcher: ResumingFetcher, url: str) -> str:
    """Read `url` as a target (download_file) or as metadata (download_bytes, ngclient's own reading),
    under a limit it is longer than; the error's message."""
    try:
        if url.startswith(fetcher.targets_url):
            with fetcher.download_file(url, _Overrun.LIMIT):
                pass
        else:
            fetcher.download_bytes(url, _Overrun.LIMIT)
    except exceptions.DownloadLengthMismatchError as exc:
        return str(exc)
    # The exception (and with it ngclient's reading generator, which _fetch's `finally` ends) is gone.
    raise AssertionError(f"{url} was read whole although longer than {_Overrun.LIMIT} bytes")


@pytest.mark.parametrize("path", ["targets/long", "metadata/long"])
def test_a_body_left_unread_for_being_too_long_never_goes_back_to_the_pool(tmp_path: Path, path: str) -> None:
    """A target longer than signed, or metadata over ngclient's limit: reading stops mid-body. That
    connection must not serve the next request, which would read the rest as its status line."""
    with serve_overrun() as url:
        budget = Budget(Limits(60, 0, 1), url)
        fetcher = ResumingFetcher(tmp_path, f"{url}/targets/", 5, "test", budget=budget)
        error = _overrun(fetcher, f"{url}/{path}")
        assert "longer than" in error or "exceeding" in error
        assert fetcher.download_bytes(f"{url}/metadata/next.json", 1000) == b"its own body"


@pytest.mark.parametrize("stalled", ["timestamp.json", "/targets/models/"], ids=["metadata", "download"])
def test_a_lock_still_busy_after_the_network_part_postpones_the_check_and_writes_nothing(
    tmp_path: Path, stalled: str
) -> None:
    """A check comes back from the network (metadata, or a release's files) to take the update lock
    again and finds it busy for longer than it waits: the check is postponed (75, the daemon retries
    soon) as when it could not start, and it writes nothing, since it does not hold the lock."""
    repo = new_repo(tmp_path)
    release(repo)
    state = tmp_path / "state"
    faults = Faults(slow=stalled, slow_after=0 if stalled == "timestamp.json" else 100_000)
    ended: list[object] = []
    with serve(repo.path, faults) as url:
        config = ota_config(url, repo, state, APPLIANCE_OTA__MIN_RATE_BYTES_PER_S="0")
        checker = Engine(config, lock_wait_s=0.5)  # the real wait is 10 s: the same path, sooner

        def run() -> None:
            try:
                ended.append(checker.check()[0])
            except Exception as exc:  # the test reports it
                ended.append(exc)

        check = threading.Thread(target=run)
        check.start()
        assert faults.trickling.wait(30), "the check never reached the stalled file"
        with Engine(config).locked():  # free: the check waits on the network without it
            journal = (state / "ota" / "journal.json").read_bytes()
            faults.release.set()  # the check gets its bytes and comes back for the lock
            check.join(60)
            assert (state / "ota" / "journal.json").read_bytes() == journal, "written without the lock"
        [busy] = ended
        assert isinstance(busy, UpdateBusyError) and busy.exit_code == 75, busy
        again, _ = Engine(config).check()  # and the next check cleans up and goes on
    assert again[-1].outcome == "activated", again[-1].reason
