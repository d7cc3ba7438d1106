"""fleet-exporter: the fleet's status and stats as Prometheus metrics (issue 17).

Here: what the metrics say for real-shaped messages, hostile messages, dropping silent devices (on a
fake clock, exact), the bench's checks, and the exporter end to end through a real broker.
tests/test_fleet_prometheus.py has the real Prometheus with two real daemons; the alert rules' own tests
are promtool's (deploy/prometheus/appliance-alerts_test.yml), run from there too.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from device.clock import FakeClock
from fleet.bench import exporter_checks
from fleet.collector import FleetCollector
from fleet.config import ExporterConfig, load_exporter_config
from fleet.errors import ExporterConfigError
from fleet.exporter import Exporter
from fleet.fleetsim import encode, stats_message, status_message
from fleet.state import FleetState
from rigs.broker import free_port

from .broker import Mosquitto
from .conftest import ROOT
from .mqtt_helpers import Collector, wait_until
from .prom_helpers import Samples, of_device, sample, scrape_text
from .tls_broker import TlsBroker, connect, site_broker


class Fleet:
    def __init__(self, drop_after_s: float = 600.0, max_devices: int = 100) -> None:
        self.clock = FakeClock()
        self.state = FleetState("appliance", self.clock, drop_after_s, max_devices, 65536)
        self.registry = CollectorRegistry()
        self.registry.register(FleetCollector(self.state, self.clock))

    def send(self, device: str, kind: str, body: dict[str, Any] | bytes) -> str:
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        return self.state.ingest(f"appliance/{device}/{kind}", payload)

    def scrape(self) -> Samples:
        return scrape_text(generate_latest(self.registry).decode())


def real_stats() -> dict[str, Any]:
    return stats_message(1, 3, random.Random(1))


def test_a_device_s_stats_become_its_series() -> None:
    fleet = Fleet()
    stats = real_stats()
    stats["temperatures"]["throttle"]["under_voltage"] = True
    stats["models"]["detector"]["cpu_fallback"] = True
    stats["ota"]["last"] = {"outcome": "rolled_back", "kind": "embedder", "version": "1.1.0", "at": 1.8e9}
    assert fleet.send("shop-1", "status", status_message(1)) == "status"
    assert fleet.send("shop-1", "stats", stats) == "stats"
    got = fleet.scrape()
    d = {"device": "shop-1"}
    assert sample(got, "appliance_online", **d) == 1.0
    assert sample(got, "appliance_fps", **d, kind="processed") == stats["fps"]["processed"]
    assert sample(got, "appliance_stage_seconds", **d, stage="detect") == pytest.approx(
        stats["stage_ms"]["detect"] / 1000
    )
    assert sample(got, "appliance_frame_latency_seconds", **d, quantile="0.99") == pytest.approx(
        stats["latency_ms"]["p99"] / 1000
    )
    assert sample(got, "appliance_cpu_temperature_celsius", **d) == stats["temperatures"]["cpu_c"]
    assert (
        sample(got, "appliance_tpu_temperature_celsius", **d, tpu="apex_0")
        == (stats["temperatures"]["tpu_c"]["apex_0"])
    )
    assert sample(got, "appliance_throttle", **d, flag="under_voltage") == 1.0
    assert sample(got, "appliance_throttle", **d, flag="throttled") == 0.0
    assert sample(got, "appliance_outbox_depth", **d) == stats["outbox"]["depth"]
    assert sample(got, "appliance_outbox_dropped_total", **d, reason="expired") == 0.0
    assert sample(got, "appliance_model_cpu_fallback", **d, kind="detector") == 1.0
    assert sample(got, "appliance_model_cpu_fallback", **d, kind="embedder") == 0.0
    info = {**d, "kind": "embedder", "id": "efficientnet-lite0-int8", "version": "1.0.0"}
    assert sample(got, "appliance_model_info", **info, accelerator="edgetpu", cpu_fallback="false") == 1.0
    assert sample(got, "appliance_pace_info", **d, reason="config") == 1.0
    last = {**d, "outcome": "rolled_back", "kind": "embedder", "version": "1.1.0"}
    assert sample(got, "appliance_ota_last_outcome", **last) == 1.0
    assert sample(got, "appliance_last_stats_age_seconds", **d) == 0.0
    fleet.clock.advance(42)
    assert sample(fleet.scrape(), "appliance_last_stats_age_seconds", **d) == 42.0


def test_the_will_makes_a_device_offline_and_unknown_figures_are_absent_not_zero() -> None:
    fleet = Fleet()
    stats = real_stats()
    stats["temperatures"] = {"cpu_c": "unknown", "tpu_c": {}, "tpu_failed": [], "throttle": "unknown"}
    fleet.send("shop-1", "stats", stats)
    fleet.send("shop-1", "status", {"state": "offline", "reason": "lost"})
    got = fleet.scrape()
    assert sample(got, "appliance_online", device="shop-1") == 0.0
    names = of_device(got, "shop-1")
    assert "appliance_cpu_temperature_celsius" not in names and "appliance_throttle" not in names
    assert "appliance_fps" in names


def test_a_silent_device_loses_every_series_after_the_drop_time() -> None:
    fleet = Fleet(drop_after_s=600)
    fleet.send("shop-1", "status", status_message(1))
    fleet.send("shop-1", "stats", real_stats())
    fleet.send("shop-2", "stats", real_stats())
    fleet.clock.advance(599)
    fleet.send("shop-2", "stats", real_stats())  # shop-2 keeps reporting
    assert of_device(fleet.scrape(), "shop-1")  # 599 s: still there
    fleet.clock.advance(2)
    got = fleet.scrape()
    assert of_device(got, "shop-1") == set()  # 601 s: every series gone
    assert of_device(got, "shop-2")
    assert sample(got, "fleet_exporter_dropped_devices_total") == 1.0
    assert sample(got, "fleet_exporter_devices") == 1.0


@pytest.mark.parametrize(
    ("topic_device", "payload", "reason"),
    [
        ("shop-1", b'{"fps": {"processed": NaN}}', "not_json_object"),
        ("shop-1", b'{"uptime_s": Infinity}', "not_json_object"),
        ("shop-1", b"[1, 2, 3]", "not_json_object"),
        ("shop-1", b"\xff\xfe not json", "not_json_object"),
        ("shop-1", b"[" * 100_000 + b"]" * 100_000, "too_large"),
        ("shop-1", b'{"a": ' + b"[" * 30_000 + b"]" * 30_000 + b"}", "not_json_object"),
        ("shop 1", b"{}", "device_id"),
        ("x" * 65, b"{}", "device_id"),
    ],
)
def test_hostile_messages_are_refused_counted_and_hurt_nobody(
    topic_device: str, payload: bytes, reason: str
) -> None:
    fleet = Fleet()
    fleet.send("shop-2", "stats", real_stats())
    before = fleet.scrape()
    assert fleet.send(topic_device, "stats", payload) == f"refused:{reason}"
    after = fleet.scrape()
    assert sample(after, "fleet_exporter_refused_total", reason=reason) == 1.0
    shop2 = {k: v for k, v in after.items() if ("device", "shop-2") in k[1]}
    assert shop2 == {k: v for k, v in before.items() if ("device", "shop-2") in k[1]}


def test_a_figure_of_the_wrong_type_is_left_out_not_fatal() -> None:
    fleet = Fleet()
    stats = real_stats()
    stats["fps"] = {"processed": "fast", "camera": True, "detected": 3.0}
    stats["temperatures"] = "hot"
    stats["models"] = ["not", "a", "dict"]
    stats["pace"] = {"reason": "x" * 10_000, "detect_every": None}
    fleet.send("shop-1", "stats", stats)
    got = fleet.scrape()
    assert sample(got, "appliance_fps", device="shop-1", kind="detected") == 3.0
    assert sample(got, "appliance_fps", device="shop-1", kind="processed") is None
    assert sample(got, "appliance_fps", device="shop-1", kind="camera") is None  # a bool is no figure
    reasons = [dict(k[1])["reason"] for k in got if k[0] == "appliance_pace_info"]
    assert [len(r) for r in reasons] == [120]  # free text is cut, not served whole


def test_a_new_device_beyond_max_devices_is_refused_known_ones_still_update() -> None:
    fleet = Fleet(max_devices=2)
    assert fleet.send("shop-1", "stats", real_stats()) == "stats"
    assert fleet.send("shop-2", "stats", real_stats()) == "stats"
    assert fleet.send("shop-3", "stats", real_stats()) == "refused:too_many_devices"
    assert fleet.send("shop-1", "status", status_message(1)) == "status"
    assert of_device(fleet.scrape(), "shop-3") == set()


def test_pricing_stats_give_the_quote_latency_per_instance() -> None:
    fleet = Fleet()
    stats = {"instance": "pricing-1", "latency_ms": {"p50": 2.5, "p99": 8.0}, "counts": {}}
    assert fleet.state.ingest("pricing/pricing-1/stats", json.dumps(stats).encode()) == "pricing"
    got = fleet.scrape()
    latency = sample(got, "appliance_quote_latency_seconds", instance="pricing-1", quantile="0.99")
    assert latency == pytest.approx(0.008)


@pytest.mark.parametrize(
    ("settings", "names"),
    [
        ({"drop_after_s": 60}, "drop_after_s"),  # shorter than the offline alert's 2 minutes
        ({"cert_file": "/etc/ssl/x.pem"}, "cert_file and key_file"),
        ({"listen_port": 0}, "listen_port"),
        ({"extra": 1}, "extra"),
    ],
)
def test_a_bad_setting_is_refused_with_its_name(settings: dict[str, object], names: str) -> None:
    with pytest.raises(ExporterConfigError, match=names):
        load_exporter_config(None, settings)


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ("drop_after_s = inf", "drop_after_s"),  # was accepted: no device ever dropped
        ('port = "1883"', "port"),  # was read as 1883
        ("max_devices = 1e5", "max_devices"),  # was read as 100000
        ('listen_port = "9310"', "listen_port"),
    ],
)
def test_an_exporter_setting_of_the_wrong_type_or_not_finite_is_refused(
    tmp_path: Path, line: str, key: str
) -> None:
    path = tmp_path / "exporter.toml"
    path.write_text(line + "\n")
    with pytest.raises(ExporterConfigError, match=rf"config file {path}: {key}: "):
        load_exporter_config(path, {})


def test_the_documented_exporter_config_loads(tmp_path: Path) -> None:
    """docs/fleet.md's example, paths as text and whole-number seconds, loads strictly."""
    doc = (ROOT / "docs" / "fleet.md").read_text()
    example = doc.split("```toml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "exporter.toml"
    path.write_text(example)
    config = load_exporter_config(path, {"port": 1883, "ca_file": Path("/tmp/ca.crt")})
    assert config.drop_after_s == 3600.0 and config.cert_file == Path(
        "/etc/fleet-exporter/fleet-exporter.crt"
    )
    assert config.port == 1883 and config.ca_file == Path("/tmp/ca.crt")


GOOD_BENCH = {
    "message_headroom": 12.0,
    "scrape_core_share": 0.2,
    "missed": 0,
    "memory": {"kb_per_device": 12.0},
}


@pytest.mark.parametrize(
    ("bad", "failing"),
    [
        ({"message_headroom": 3.0}, "stats messages one core"),
        ({"scrape_core_share": 0.8}, "scrapes take"),
        ({"missed": 5}, "missed"),
        ({"memory": {"kb_per_device": 64.0}}, "memory per device"),
    ],
)
def test_each_exporter_bench_check_fails_on_a_bad_measurement(bad: dict[str, object], failing: str) -> None:
    assert all(c["ok"] for c in exporter_checks(GOOD_BENCH))
    checks = exporter_checks({**GOOD_BENCH, **bad})
    assert [c["check"] for c in checks if not c["ok"]] == [
        c["check"] for c in checks if failing in c["check"]
    ]
    assert any(failing in c["check"] for c in checks)


@pytest.fixture()
def exporter(broker: Mosquitto) -> Iterator[Exporter]:
    running = Exporter(ExporterConfig(port=broker.port, listen_port=free_port()))
    stop = threading.Event()
    thread = threading.Thread(target=running.run, args=(stop,), daemon=True)
    thread.start()
    assert running.connected.wait(10), "the exporter did not connect"
    yield running
    stop.set()
    thread.join(5)


def http_metrics(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return scrape_text(response.read().decode())


def test_end_to_end_through_a_real_broker(broker: Mosquitto, exporter: Exporter) -> None:
    devices = Collector(broker.port, "nothing/#")  # a publisher with its SUBACK awaited
    devices.client.publish("appliance/shop-7/status", encode(status_message(7)), qos=1, retain=True)
    devices.publish("appliance/shop-7/stats", encode(real_stats()), qos=1)
    devices.publish("appliance/shop-8/stats", b'{"uptime_s": NaN}', qos=1)
    port = exporter.config.listen_port
    assert wait_until(
        lambda: sample(http_metrics(port), "appliance_fps", device="shop-7", kind="processed"), 10
    )
    devices.publish("appliance/shop-7/status", b'{"state": "offline", "reason": "lost"}')
    assert wait_until(lambda: sample(http_metrics(port), "appliance_online", device="shop-7") == 0.0, 10)
    got = http_metrics(port)
    assert sample(got, "fleet_exporter_refused_total", reason="not_json_object") == 1.0
    assert of_device(got, "shop-8") == set()
    devices.close()


def test_fleet_exporter_bench_reports_every_figure() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "fleet", "bench", "--devices", "300", "--json"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        check=False,
    )
    assert result.returncode in (0, 1), result.stderr  # 1: a budget missed on a loaded machine
    report = json.loads(result.stdout)
    assert report["taken"] + report["missed"] == report["messages"] == 600
    assert report["cpu_us_per_message"] > 0 and report["memory"]["kb_per_device"] > 0
    assert report["scrape"]["series"] >= 300 * 30  # every device's series were served
    assert [c["check"] for c in report["checks"]] == [c["check"] for c in exporter_checks(report)]
    assert set(report["machine_load"]) == {"start", "end"}


def test_the_exporter_s_own_identity_on_the_production_broker(
    tmp_path: Path, certs: Path, share_guard: Path
) -> None:
    """deploy/mosquitto/acl, `user fleet-exporter`: the exporter, with its own certificate, reads the
    devices' status and stats; it cannot read their objects, nor command or impersonate them."""
    with site_broker(tmp_path, certs, share_guard, "fleet-exporter") as (broker, site):
        check_the_exporter_identity(broker, site)


def check_the_exporter_identity(broker: TlsBroker, site: Path) -> None:
    config = ExporterConfig(
        host="localhost",
        port=broker.port,
        listen_port=free_port(),
        ca_file=site / "ca.crt",
        cert_file=site / "fleet-exporter.crt",
        key_file=site / "fleet-exporter.key",
    )
    device = connect(broker, site, "dev-a")
    # By hand first, with the exporter's identity (its client id too: it would take the exporter's place).
    spy = connect(broker, site, "fleet-exporter")
    assert spy.subscribe("appliance/+/objects") == 1  # allowed; each message is checked on delivery
    assert spy.subscribe("appliance/+/stats") == 1
    for topic in ("appliance/dev-a/cmd/pause", "appliance/dev-a/status", "appliance/fleet/release"):
        assert spy.publish(topic, b"{}") == "Not authorized"
    device.publish("appliance/dev-a/objects", b"embedding")
    device.publish("appliance/dev-a/stats", encode(real_stats()))
    assert wait_until(lambda: spy.messages)  # in order: the objects would have come first
    assert [topic for topic, _ in spy.messages] == ["appliance/dev-a/stats"]
    spy.close()
    running, stop = Exporter(config), threading.Event()
    thread = threading.Thread(target=running.run, args=(stop,), daemon=True)
    thread.start()
    try:
        assert running.connected.wait(10), "the exporter's certificate was refused"
        assert device.publish("appliance/dev-a/status", encode(status_message(1))) == "Success"
        assert device.publish("appliance/dev-a/stats", encode(real_stats())) == "Success"
        assert wait_until(lambda: running.state.tally().get("stats") == 1, 10)
        assert sample(http_metrics(config.listen_port), "appliance_online", device="dev-a") == 1.0
    finally:
        device.close()
        stop.set()
        thread.join(5)
