"""The real daemon process against a real mosquitto: what subscribers see, and how it survives faults."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from device.wire import CONTENT_TYPE, decode

from .broker import Mosquitto, free_port
from .daemons import start_daemon
from .mqtt_helpers import DEFAULT_DETECTOR, Collector, daemon_env, wait_until

TOPIC = "appliance/test-dev"


@pytest.fixture()
def daemon(broker: Mosquitto, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    process = start_daemon(daemon_env(broker.port, tmp_path / "state"), log=tmp_path / "daemon.log")
    yield process
    if process.poll() is None:
        process.kill()
        process.wait(10)


def online(collector: Collector) -> bool:
    return any(m.json().get("state") == "online" for m in collector.on(f"{TOPIC}/status"))


def log_of(tmp_path: Path) -> str:
    return (tmp_path / "daemon.log").read_text(errors="replace")


@pytest.mark.heavy
def test_subscriber_sees_stable_tracks_gapless_seqs_and_sane_boxes(
    broker: Mosquitto, collector: Collector, tmp_path: Path
) -> None:
    env = daemon_env(broker.port, tmp_path / "state", APPLIANCE_MODELS__DETECTOR=DEFAULT_DETECTOR)
    daemon = start_daemon(env, log=tmp_path / "daemon.log")  # the product's own models, end to end
    collector.wait_for(lambda: len(collector.on(f"{TOPIC}/objects")) >= 4, 60, "4 object messages")
    collector.wait_for(lambda: len(collector.on(f"{TOPIC}/stats")) >= 2, 10, "2 stats messages")
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(10) == 0, log_of(tmp_path)
    raw = collector.on(f"{TOPIC}/objects")
    assert all(m.content_type == CONTENT_TYPE for m in raw)
    messages = [decode(m.payload) for m in raw]
    seqs = [m.seq for m in messages]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs  # rising, no gaps
    assert [int.from_bytes(m.correlation or b"", "little") for m in raw] == seqs
    for message in messages:
        x1, y1, x2, y2 = message.box
        assert 0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1
        assert message.dim == 1280 and message.model_id == "efficientnet-lite0-int8"
    people = [m for m in messages if m.label == "person"]
    assert people and len({m.track_id for m in people}) == 1  # one astronaut, one id while she moves
    stats = collector.on(f"{TOPIC}/stats")[-1].json()
    assert stats["fps"]["processed"] > 0 and stats["models"]["detector"]["accelerator"] == "cpu"
    assert {"detect", "track", "embed", "publish"} <= set(stats["stage_ms"])
    # The governor's view: numbers where this machine has sensors, "unknown" where it has none.
    assert set(stats["temperatures"]) >= {"cpu_c", "tpu_c", "throttle", "battery_percent"}
    assert stats["pace"]["reason"]


def test_status_is_retained_online_then_offline_on_sigterm(
    broker: Mosquitto, collector: Collector, daemon: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    collector.wait_for(lambda: online(collector), 60, "status online")
    started = time.monotonic()
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(10) == 0
    assert time.monotonic() - started < 2.5, "SIGTERM must stop the daemon within 2 s"
    late = Collector(broker.port, f"{TOPIC}/status")  # a subscriber arriving later gets the retained one
    late.wait_for(lambda: bool(late.on("/status")), 5, "retained status")
    status = late.on("/status")[-1]
    late.close()
    assert status.retain and status.json() == {"state": "offline", "reason": "stopped"}
    first = next(m.json() for m in collector.on(f"{TOPIC}/status") if m.json()["state"] == "online")
    assert first["models"]["embedder"]["id"] == "efficientnet-lite0-int8" and "version" in first


def test_kill_9_leaves_the_last_will_offline(
    broker: Mosquitto, collector: Collector, daemon: subprocess.Popen[bytes]
) -> None:
    collector.wait_for(lambda: online(collector), 60, "status online")
    daemon.kill()
    daemon.wait(10)
    collector.wait_for(
        lambda: collector.on(f"{TOPIC}/status")[-1].json()["state"] == "offline", 15, "the will"
    )
    late = Collector(broker.port, f"{TOPIC}/status")
    late.wait_for(lambda: bool(late.on("/status")), 5, "retained status")
    assert late.on("/status")[-1].json() == {"state": "offline", "reason": "lost"}
    late.close()


def test_broker_restart_reconnects_and_publishing_goes_on(
    broker: Mosquitto, daemon: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    first = Collector(broker.port)
    first.wait_for(lambda: len(first.on(f"{TOPIC}/objects")) >= 1, 60, "an object before the restart")
    first.close()
    broker.stop()
    assert wait_until(lambda: "mqtt disconnected" in log_of(tmp_path), 15), "the daemon never saw the outage"
    broker.start()
    second = Collector(broker.port)
    second.wait_for(lambda: online(second), 20, "status online after the restart")
    second.wait_for(lambda: len(second.on(f"{TOPIC}/stats")) >= 1, 10, "stats after the restart")
    assert daemon.poll() is None
    log = log_of(tmp_path)
    assert log.count("mqtt connected") >= 2 and "mqtt disconnected" in log
    second.close()


def test_commands_pause_resume_pace_and_malformed(
    collector: Collector, daemon: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    collector.wait_for(lambda: len(collector.on(f"{TOPIC}/stats")) >= 1, 60, "stats")

    def last_pace() -> dict[str, object]:
        pace: dict[str, object] = collector.on(f"{TOPIC}/stats")[-1].json()["pace"]
        return pace

    collector.publish(f"{TOPIC}/cmd/pace", "not json")
    collector.publish(f"{TOPIC}/cmd/pace", json.dumps({"detect_every": 0}))
    collector.publish(f"{TOPIC}/cmd/pace", json.dumps({"detect_every": 3, "expires_s": 60}))
    collector.wait_for(lambda: last_pace()["detect_every"] == 3, 10, "pace override in stats")
    assert last_pace()["reason"] == "operator override"
    collector.publish(f"{TOPIC}/cmd/pause", "")
    collector.wait_for(lambda: last_pace()["paused"] is True, 10, "paused in stats")
    # The stats message that said "paused" may count a frame that was under way: judge the next two.
    seen = len(collector.on(f"{TOPIC}/stats"))
    collector.wait_for(lambda: len(collector.on(f"{TOPIC}/stats")) >= seen + 1, 10, "a stats message")
    frozen = collector.on(f"{TOPIC}/stats")[-1].json()["totals"]["processed"]
    collector.wait_for(lambda: len(collector.on(f"{TOPIC}/stats")) >= seen + 3, 10, "two more stats")
    assert collector.on(f"{TOPIC}/stats")[-1].json()["totals"]["processed"] == frozen
    collector.publish(f"{TOPIC}/cmd/resume", "")
    collector.wait_for(
        lambda: collector.on(f"{TOPIC}/stats")[-1].json()["totals"]["processed"] > frozen, 10, "frames again"
    )
    collector.publish(f"{TOPIC}/cmd/reboot", "")
    assert wait_until(lambda: "cmd/reboot: unknown command" in log_of(tmp_path), 10)
    assert daemon.poll() is None
    log = log_of(tmp_path)
    assert "ignored malformed message on appliance/test-dev/cmd/pace" in log
    assert "detect_every: Input should be greater than or equal to 1" in log
    assert "cmd/reboot: unknown command" in log


def test_unreachable_broker_at_start_keeps_retrying_quietly(tmp_path: Path) -> None:
    port = free_port()
    process = start_daemon(daemon_env(port, tmp_path / "state"), log=tmp_path / "daemon.log")
    assert wait_until(lambda: log_of(tmp_path).count("retrying in") >= 3, 60), log_of(tmp_path)[-2000:]
    assert process.poll() is None, log_of(tmp_path)
    # One line per backoff step, each step longer (0.2, 0.4, 0.8 s +-20%): quiet, not a flood.
    delays = [float(d) for d in re.findall(r"retrying in ([0-9.]+) s", log_of(tmp_path))]
    assert delays[0] >= 0.1 and delays[1] > delays[0] and delays[2] > delays[1], delays
    (tmp_path / "late").mkdir()
    late_broker = Mosquitto(tmp_path / "late", port=port)
    late_broker.start()
    collector = Collector(port)
    collector.wait_for(
        lambda: len(collector.on(f"{TOPIC}/objects")) >= 1, 30, "objects once the broker is up"
    )
    collector.close()
    process.send_signal(signal.SIGTERM)
    assert process.wait(10) == 0
    late_broker.stop()
