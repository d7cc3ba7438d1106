"""A PCIe Edge TPU that dies at run time (it reads about -89 °C): the real daemon moves its models to
the CPU without a restart and says so on the status topic. The TPU is the gcc-built stub delegate and
the sysfs tree is a real directory the test writes, as the apex driver would."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .broker import Mosquitto
from .daemons import start_daemon
from .mqtt_helpers import Collector, daemon_env

TOPIC = "appliance/tpu-dev"


def online(collector: Collector, predicate: Any, timeout: float, what: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = []

    def seen() -> bool:
        found.extend(
            s
            for s in (m.json() for m in collector.on(f"{TOPIC}/status"))
            if s.get("state") == "online" and predicate(s)
        )
        return bool(found)

    collector.wait_for(seen, timeout, what)
    return found[0]


def on_a_pcie_tpu(
    port: int, stub_delegate: Path, tmp_path: Path, **extra: str
) -> tuple[dict[str, str], Path]:
    """The daemon's environment on the stub TPU, and the apex temperature file it reads (52 °C now)."""
    temp = tmp_path / "sys" / "class" / "apex" / "apex_0" / "temp"
    temp.parent.mkdir(parents=True)
    temp.write_text("52000\n")
    env = {
        **daemon_env(port, tmp_path / "state", "tpu-dev"),
        "APPLIANCE_RUNTIME__DEVICE": "pci",
        "APPLIANCE_RUNTIME__DELEGATE_LIBRARY": str(stub_delegate),
        "APPLIANCE_GOVERNOR__SYSFS_ROOT": str(tmp_path / "sys"),
        "APPLIANCE_GOVERNOR__INTERVAL_S": "0.5",
        "STUB_DELEGATE_LOG": str(tmp_path / "delegate.log"),
        **extra,
    }
    return env, temp


def test_a_tpu_that_fails_at_run_time_moves_the_models_to_the_cpu(
    broker: Mosquitto, stub_delegate: Path, tmp_path: Path
) -> None:
    env, temp = on_a_pcie_tpu(broker.port, stub_delegate, tmp_path)
    collector = Collector(broker.port, f"{TOPIC}/#")
    daemon = start_daemon(env, log=tmp_path / "daemon.log")
    try:
        online(
            collector, lambda s: s["models"]["detector"]["accelerator"] == "edgetpu", 60, "models on the TPU"
        )
        temp.write_text("-89000\n")  # what the apex driver reports once the TPU has failed
        status = online(
            collector, lambda s: s["models"]["detector"]["accelerator"] == "cpu", 30, "the failover"
        )
        for kind in ("detector", "embedder"):
            model = status["models"][kind]
            assert model["accelerator"] == "cpu" and model["cpu_fallback"] is True
            assert "apex_0 failed" in model["reason"]
        assert daemon.poll() is None  # no restart
    finally:
        daemon.terminate()
        daemon.wait(10)
        collector.close()
    assert "moving the models to the CPU" in (tmp_path / "daemon.log").read_text()


def test_with_fallback_fail_the_daemon_stops_and_says_why(
    broker: Mosquitto, stub_delegate: Path, tmp_path: Path
) -> None:
    env, temp = on_a_pcie_tpu(broker.port, stub_delegate, tmp_path, APPLIANCE_RUNTIME__FALLBACK="fail")
    collector = Collector(broker.port, f"{TOPIC}/#")
    daemon = start_daemon(env, log=tmp_path / "daemon.log")
    try:
        online(
            collector, lambda s: s["models"]["detector"]["accelerator"] == "edgetpu", 60, "models on the TPU"
        )
        temp.write_text("-89000\n")
        assert daemon.wait(30) == 69  # EX_UNAVAILABLE; systemd restarts it and the operator sees why
    finally:
        collector.close()
    assert "runtime.fallback is 'fail'" in (tmp_path / "daemon.log").read_text()
