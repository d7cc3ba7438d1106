"""The fleet benchmark end to end: `appliance fleet bench` (a subprocess) against real daemons on the
demo source and a real mosquitto, its SQLite results, and the production broker's ACL for the bench
topic (issue 18, item 2)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import pytest

from device.fleetbench.hardware import device_kind
from device.fleetbench.results import DeviceResult, latest_by_kind, previous_figures, record, run_figures

from .broker import Mosquitto
from .cli_helpers import appliance
from .daemons import start_daemon
from .mqtt_helpers import DEFAULT_DETECTOR, TEST_DETECTOR, Collector, daemon_env, wait_until
from .tls_broker import connect, site_broker

# Long enough that the source never ends during a test (the default demo source stops after 3 s).
SOURCE = "images:demo?fps=15&seconds=600"
EMBEDDER = "efficientnet-lite0-int8"


def start_shop(port: int, tmp_path: Path, device_id: str, **extra: str) -> subprocess.Popen[bytes]:
    env = daemon_env(
        port, tmp_path / device_id, device_id=device_id, APPLIANCE_CAMERA__SOURCE=SOURCE, **extra
    )
    return start_daemon(env, log=tmp_path / f"{device_id}.log")


def log_of(tmp_path: Path, device_id: str) -> str:
    return (tmp_path / f"{device_id}.log").read_text(errors="replace")


def stats(collector: Collector, device_id: str) -> list[dict[str, Any]]:
    return [m.json() for m in collector.on(f"appliance/{device_id}/stats")]


def processing(collector: Collector, device_id: str) -> bool:
    return any(s["totals"]["processed"] > 0 for s in stats(collector, device_id))


def status(collector: Collector, device_id: str) -> str | None:
    seen = collector.on(f"appliance/{device_id}/status")
    return seen[-1].json().get("state") if seen else None


def fleet_bench(*args: str, timeout: float = 180) -> tuple[int, dict[str, Any]]:
    """`appliance fleet bench ... --json` as an operator runs it, with no config (the defaults)."""
    done = appliance("fleet", "bench", *args, "--json", timeout=timeout)
    assert done.stdout, done.stderr
    return done.returncode, json.loads(done.stdout)


@pytest.mark.heavy
def test_fleet_bench_collects_both_devices_stores_them_and_restores_each_pipeline(
    broker: Mosquitto, collector: Collector, tmp_path: Path
) -> None:
    for device in ("shop-1", "shop-2"):
        start_shop(broker.port, tmp_path, device)
    collector.wait_for(
        lambda: processing(collector, "shop-1") and processing(collector, "shop-2"), 90, "frames"
    )
    collector.publish("appliance/shop-2/cmd/pause", b"")  # the operator's pause: it must outlast the bench
    collector.wait_for(
        lambda: stats(collector, "shop-2")[-1]["pace"]["reason"] == "paused by operator", 10, "shop-2 paused"
    )
    db = tmp_path / "bench.sqlite"

    code, report = fleet_bench(
        "--devices", "shop-*", "--port", str(broker.port), "--runs", "5", "--bench-db", str(db)
    )

    assert code == 0, report
    request = report["request_id"]
    assert report["answered"] == ["shop-1", "shop-2"] and report["not_answering"] == {}
    for device in ("shop-1", "shop-2"):
        result = report["results"][device]
        assert result["request_id"] == request and result["status"] == "ok"
        assert result["pipeline_idle"] is True and result["nice"] == 10  # waited for the frame; low priority
        assert result["hardware"]["cpus"] == os.cpu_count() and result["hardware"]["litert"]["version"]
        assert {"before", "after"} <= set(result["temperatures"])
        assert {m["id"] for m in result["models"]} == {TEST_DETECTOR, EMBEDDER}  # the active ones
        assert all(m["invoke_ms"]["p50"] > 0 and m["fps"] > 0 for m in result["models"])
    # shop-1 was held for the bench (the pace said so), and processes frames again afterwards.
    assert f"'reason': 'benchmark {request}'" in log_of(tmp_path, "shop-1")
    after = stats(collector, "shop-1")[-1]["totals"]["processed"]
    collector.wait_for(
        lambda: stats(collector, "shop-1")[-1]["totals"]["processed"] > after, 10, "shop-1 processing again"
    )
    # shop-2 was paused by its operator before: it stays paused, and processes nothing.
    seen = len(stats(collector, "shop-2"))
    collector.wait_for(lambda: len(stats(collector, "shop-2")) >= seen + 2, 10, "two more stats of shop-2")
    # Only stats sent after the reply: the last one before it may have been taken during the hold.
    late = stats(collector, "shop-2")[seen:]
    assert all(s["pace"]["paused"] and s["pace"]["reason"] == "paused by operator" for s in late)
    assert len({s["totals"]["processed"] for s in late}) == 1
    # Both devices' results are in the SQLite, one row per device and model, under the one request id.
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT device_id, model FROM results WHERE request_id = ?", (request,)
        ).fetchall()
    assert sorted(rows) == sorted((d, m) for d in ("shop-1", "shop-2") for m in (TEST_DETECTOR, EMBEDDER))
    kinds = latest_by_kind(db)
    assert {(k.model, k.devices, k.threads) for k in kinds} == {
        (TEST_DETECTOR, 2, 2),
        (EMBEDDER, 2, 2),
    }


@pytest.mark.heavy
def test_a_matched_device_that_is_offline_or_silent_is_listed_and_the_exit_code_says_so(
    broker: Mosquitto, collector: Collector, tmp_path: Path
) -> None:
    start_shop(broker.port, tmp_path, "shop-1")
    doomed = start_shop(broker.port, tmp_path, "shop-2")
    collector.wait_for(
        lambda: status(collector, "shop-1") == status(collector, "shop-2") == "online", 90, "online"
    )
    db = tmp_path / "bench.sqlite"
    common = ("--port", str(broker.port), "--models", EMBEDDER, "--runs", "5", "--bench-db", str(db))
    code, first = fleet_bench("--devices", "shop-*", *common)
    assert code == 0 and first["answered"] == ["shop-1", "shop-2"], first

    doomed.send_signal(signal.SIGKILL)
    collector.wait_for(lambda: status(collector, "shop-2") == "offline", 20, "shop-2's will")
    # A device whose status says online but that never answers (its process hung, say), and one that
    # does not match the pattern.
    for device in ("shop-9", "lab-1"):
        collector.client.publish(f"appliance/{device}/status", b'{"state": "online"}', qos=1, retain=True)
    code, second = fleet_bench("--devices", "shop-*", *common, "--timeout", "8")

    assert code == 69, second  # EX_UNAVAILABLE
    assert second["matched"] == ["shop-1", "shop-2", "shop-9"]
    assert second["answered"] == ["shop-1"]
    assert second["not_answering"] == {"shop-2": "offline (lost)", "shop-9": "no reply within 8 s"}
    (figures,) = second["figures"]
    assert figures["model"] == EMBEDDER and figures["devices"] == 1
    assert figures["previous"]["p50_ms"] > 0  # compared with the first run, of two devices


@pytest.mark.heavy
def test_a_malformed_bench_is_ignored_with_one_warning_and_a_second_one_while_busy_is_refused(
    broker: Mosquitto, collector: Collector, tmp_path: Path
) -> None:
    start_shop(broker.port, tmp_path, "shop-1")
    collector.wait_for(lambda: processing(collector, "shop-1"), 90, "frames")
    collector.publish("appliance/shop-1/cmd/bench", b'{"request_id": "bad", "runs": 0}')
    collector.wait_for(lambda: stats(collector, "shop-1")[-1]["bench"]["malformed"] == 1, 10, "counted")
    warnings = [line for line in log_of(tmp_path, "shop-1").splitlines() if line.startswith("WARNING")]
    assert len(warnings) == 1 and "cmd/bench" in warnings[0] and "runs" in warnings[0], warnings

    # Long enough that the next request finds it running: it first waits for the frame thread to see the
    # hold, then loads the model, then times 3 + 20 invokes.
    slow = {"request_id": "slow", "models": [DEFAULT_DETECTOR], "runs": 20}  # the slow one
    collector.publish("appliance/shop-1/cmd/bench", json.dumps(slow))
    collector.publish("appliance/shop-1/cmd/bench", json.dumps({"request_id": "eager", "runs": 1}))

    def replies() -> dict[str, dict[str, Any]]:
        return {m.json()["request_id"]: m.json() for m in collector.on("appliance/shop-1/bench")}

    collector.wait_for(lambda: {"slow", "eager"} <= set(replies()), 120, "both replies")
    assert replies()["eager"]["status"] == "busy" and replies()["eager"]["running"] == "slow"
    assert replies()["slow"]["status"] == "ok"
    assert "bad" not in replies()  # the malformed one was not answered
    collector.wait_for(lambda: stats(collector, "shop-1")[-1]["bench"]["completed"] == 1, 10, "stats")
    assert stats(collector, "shop-1")[-1]["bench"] | {"running": None} == {
        "completed": 1,
        "failed": 0,
        "busy": 1,
        "malformed": 1,
        "running": None,
    }


def test_the_production_acl_lets_a_device_publish_its_own_bench_only_and_the_operator_read_it(
    tmp_path: Path, certs: Path, share_guard: Path
) -> None:
    with site_broker(tmp_path, certs, share_guard, "fleet-admin") as (broker, site):
        a = connect(broker, site, "dev-a")
        assert a.publish("appliance/dev-a/bench", b"{}") in ("Success", "No matching subscribers")
        assert a.publish("appliance/dev-b/bench", b"{}") == "Not authorized"
        a.close()
        env = daemon_env(
            broker.port,
            tmp_path / "dev-a",
            device_id="dev-a",
            APPLIANCE_CAMERA__SOURCE=SOURCE,
            APPLIANCE_MQTT__HOST="localhost",
            APPLIANCE_MQTT__TLS="true",
            APPLIANCE_MQTT__CA_FILE=str(site / "ca.crt"),
            APPLIANCE_MQTT__CERT_FILE=str(site / "dev-a.crt"),
            APPLIANCE_MQTT__KEY_FILE=str(site / "dev-a.key"),
        )
        start_daemon(env, log=tmp_path / "dev-a.log")
        operator = connect(broker, site, "fleet-admin")
        operator.subscribe("appliance/dev-a/status")
        assert wait_until(lambda: any(b'"online"' in p for _, p in operator.messages), 90), "dev-a offline"
        operator.close()
        # The operator's tool over TLS with the fleet-admin certificate: it reads the retained status and
        # the device's reply, and sends cmd/bench, all within the ACL.
        code, report = fleet_bench(
            *("--devices", "dev-*", "--models", EMBEDDER, "--runs", "3"),
            *("--host", "localhost", "--port", str(broker.port), "--tls", "--ca-file", str(site / "ca.crt")),
            *("--cert-file", str(site / "fleet-admin.crt"), "--key-file", str(site / "fleet-admin.key")),
            *("--bench-db", str(tmp_path / "bench.sqlite")),
        )
        assert code == 0, report
        assert report["answered"] == ["dev-a"] and report["results"]["dev-a"]["status"] == "ok"


def test_the_device_kind_is_the_boards_name_else_the_architecture_and_cpu_model(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.write_bytes(b"Raspberry Pi 4 Model B Rev 1.4\0")
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\n\nprocessor\t: 1\n"
    )
    assert device_kind(model, cpuinfo) == "Raspberry Pi 4 Model B Rev 1.4"
    assert device_kind(tmp_path / "absent", cpuinfo).endswith(" AMD EPYC 7B13")


def test_figures_per_kind_are_the_medians_of_a_runs_devices_compared_with_the_newest_earlier_run(
    tmp_path: Path,
) -> None:
    db = tmp_path / "bench.sqlite"

    def row(run: str, device: str, p50: float, at: float, kind: str = "Pi 4") -> DeviceResult:
        return DeviceResult(
            run, device, kind, "edgetpu-usb", "edgetpu", "ssd", 2, 50, p50, p50 + 1, 1e3 / p50, at
        )

    record(db, [row("r1", "a", 10.0, 1.0), row("r1", "b", 20.0, 1.1), row("r1", "c", 90.0, 1.2)])
    record(db, [row("r2", "a", 8.0, 2.0), row("r2", "x", 30.0, 2.1, kind="Pi 5")])
    (pi4,) = [f for f in run_figures(db, "r1") if f.device_kind == "Pi 4"]
    assert (pi4.p50_ms, pi4.devices) == (20.0, 3)  # the median: one slow device does not move it
    before = previous_figures(db, "r2")
    assert set(before) == {pi4.key} and before[pi4.key].p50_ms == 20.0  # Pi 5 has no earlier run
    latest = {f.device_kind: (f.p50_ms, f.devices) for f in latest_by_kind(db)}
    assert latest == {"Pi 4": (8.0, 1), "Pi 5": (30.0, 1)}
    assert latest_by_kind(tmp_path / "none.sqlite") == []  # no runs yet: an empty table, not an error
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
