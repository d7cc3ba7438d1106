"""Home Assistant MQTT discovery with the real daemon on a real mosquitto: the retained configs name topics
the device really uses, their templates render (with jinja2, as Home Assistant does) against the
device's real messages, the buttons really pause and resume it, turning the feature off removes them,
and the production ACL keeps each device to its own discovery topics."""

from __future__ import annotations

import json
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment

from device.config import HomeAssistantConfig, load_config
from device.errors import ConfigError
from device.link.homeassistant import Discovery
from device.link.topics import Topics
from pricing.catalog import CatalogInfo, Item, write_catalog
from pricing.config import ServiceConfig
from pricing.service import PricingService

from .broker import Mosquitto
from .daemons import start_daemon
from .mqtt_helpers import Collector, Received, daemon_env, wait_until
from .pricing_helpers import running_service
from .tls_broker import TlsBroker, connect, site_broker

DEVICE = "ha-dev"
TOPIC = f"appliance/{DEVICE}"
ENTITIES = 10  # 6 sensors, the online binary sensor, 3 buttons
PI_MODEL = "Raspberry Pi 4 Model B Rev 1.4"
# Home Assistant renders MQTT templates in a sandbox, with the payload as `value` and, when it is JSON,
# as `value_json`; a template that reads a missing key must fail here, not quietly print nothing.
JINJA = ImmutableSandboxedEnvironment(undefined=jinja2.StrictUndefined)


def render(template: str, message: Received) -> str:
    text = message.payload.decode()
    return JINJA.from_string(template).render(value=text, value_json=json.loads(text)).strip()


@pytest.fixture()
def pricing(broker: Mosquitto, tmp_path: Path) -> Iterator[PricingService]:
    """The real pricing service on a three-item catalog that quotes every object (in EUR)."""
    catalog = tmp_path / "catalog.sqlite"
    rng = np.random.default_rng(0)
    items = [
        Item(
            f"i{n}", rng.integers(-127, 127, 1280, dtype=np.int8).tobytes(), 1 / 127, 0, price, "EUR", "sold"
        )
        for n, price in enumerate((10.0, 20.0, 30.0))
    ]
    write_catalog(catalog, CatalogInfo("efficientnet-lite0-int8", "1.0.0", 1280, synthetic=True), items)
    config = ServiceConfig(
        port=broker.port, catalog=catalog, instance="pricing-ha", index="exact", min_similarity=-1.0,
        min_neighbours=1,
    )  # fmt: skip
    with running_service(config) as service:
        yield service


def start(broker: Mosquitto, tmp_path: Path, enabled: bool = True, **extra: str) -> subprocess.Popen[bytes]:
    """The daemon on the demo photos (until stopped), with a Pi's device tree and a PCIe TPU at 52 °C."""
    sysfs = tmp_path / "sys"
    (sysfs / "class/apex/apex_0").mkdir(parents=True, exist_ok=True)
    (sysfs / "class/apex/apex_0/temp").write_text("52000\n")
    (sysfs / "firmware/devicetree/base").mkdir(parents=True, exist_ok=True)
    (sysfs / "firmware/devicetree/base/model").write_bytes(PI_MODEL.encode() + b"\0")
    env = daemon_env(
        broker.port, tmp_path / "state", DEVICE,
        APPLIANCE_CAMERA__SOURCE="images:demo?fps=5",
        APPLIANCE_GOVERNOR__SYSFS_ROOT=str(sysfs),
        APPLIANCE_GOVERNOR__INTERVAL_S="0.5",
        APPLIANCE_HOMEASSISTANT__ENABLED=str(enabled).lower(),
        **extra,
    )  # fmt: skip
    return start_daemon(env, log=tmp_path / "daemon.log")


def configs(collector: Collector) -> dict[str, dict[str, Any]]:
    """The newest non-empty config per discovery topic."""
    return {m.topic: m.json() for m in collector.on("/config") if m.payload}


def retained(port: int, topic: str) -> list[Received]:
    """What a subscriber that connects now gets of `topic`'s retained messages: they come before a
    message published after subscribing, so once that marker arrives, every one of them has."""
    fresh = Collector(port, topic)
    marker = topic.replace("#", "marker")
    fresh.publish(marker, b"marker")
    fresh.wait_for(lambda: bool(fresh.on("marker")), 5, "the marker")
    fresh.close()
    return [m for m in fresh.messages if m.topic != marker]


def test_configs_are_retained_name_the_devices_topics_and_render_against_its_real_messages(
    broker: Mosquitto, pricing: PricingService, tmp_path: Path
) -> None:
    device = Collector(broker.port, f"{TOPIC}/#")
    start(broker, tmp_path, APPLIANCE_HOMEASSISTANT__QUOTE_CURRENCY="EUR")
    device.wait_for(lambda: any(m.json().get("status") == "ok" for m in device.on("/quotes")), 90, "a quote")
    device.wait_for(lambda: any(s.json()["fps"]["processed"] > 0 for s in device.on("/stats")), 30, "fps")
    found = {m.topic: m.json() for m in retained(broker.port, "homeassistant/#") if m.retain}
    assert len(found) == ENTITIES
    real = {
        f"{TOPIC}/status": [m for m in device.on("/status") if m.json()["state"] == "online"][-1],
        f"{TOPIC}/stats": [m for m in device.on("/stats") if m.json()["fps"]["processed"] > 0][-1],
        f"{TOPIC}/quotes": [m for m in device.on("/quotes") if m.json().get("status") == "ok"][-1],
    }
    for topic, config in found.items():
        component, node, object_id, leaf = topic.split("/")[1:]
        assert (node, leaf) == (DEVICE, "config") and component in ("sensor", "binary_sensor", "button")
        assert config["unique_id"].endswith(object_id) and config["origin"]["name"] == "appliance"
        assert config["device"]["identifiers"] == [f"appliance_{DEVICE}"]
        if component != "button":
            assert config["state_topic"] in real  # a topic the device publishes, or gets its quotes on
        for where in config.get("availability", []):
            assert where["topic"] == f"{TOPIC}/status"
            assert render(where["value_template"], real[where["topic"]]) == where["payload_available"]
    device_info = next(iter(found.values()))["device"]
    status = real[f"{TOPIC}/status"].json()
    assert (device_info["model"], device_info["manufacturer"]) == (PI_MODEL, "Raspberry Pi Ltd")
    assert device_info["sw_version"].startswith(status["version"])
    assert all(m["id"] in device_info["sw_version"] for m in status["models"].values())
    states = {t.split("/")[3]: render(c["value_template"], real[c["state_topic"]]) for t, c in found.items()
              if "value_template" in c}  # fmt: skip
    stats, quote = real[f"{TOPIC}/stats"].json(), real[f"{TOPIC}/quotes"].json()
    assert float(states["fps"]) == stats["fps"]["processed"] > 0
    assert float(states["tpu_temperature"]) == 52.0  # the apex driver's file
    # This machine has no CPU sensor: Home Assistant's "None" (unknown), never a made-up number.
    cpu = stats["temperatures"]["cpu_c"]
    assert states["cpu_temperature"] == ("None" if cpu == "unknown" else str(cpu))
    assert int(states["outbox_depth"]) == stats["outbox"]["depth"]
    assert float(states["last_quote"]) == quote["avg_sold_price"] and quote["currency"] == "EUR"
    assert states["pace"] == stats["pace"]["reason"] and states["online"] == "online"
    for object_id, message in (("pace", real[f"{TOPIC}/stats"]), ("last_quote", real[f"{TOPIC}/quotes"])):
        config = found[f"homeassistant/sensor/{DEVICE}/{object_id}/config"]
        assert isinstance(json.loads(render(config["json_attributes_template"], message)), dict)
    # Without quote_currency any quote's price shows; with another currency than the quote's, unknown.
    for currency, price in ((None, str(quote["avg_sold_price"])), ("JPY", "None")):
        config = HomeAssistantConfig(enabled=True, quote_currency=currency)
        entities = Discovery(config, Topics("appliance", DEVICE), 1, PI_MODEL).entities
        template = next(e.options["value_template"] for e in entities if e.object_id == "last_quote")
        assert render(template, real[f"{TOPIC}/quotes"]) == price
    device.close()


def test_the_buttons_pause_resume_and_check_for_updates(broker: Mosquitto, tmp_path: Path) -> None:
    ha = Collector(broker.port, "homeassistant/#")
    device = Collector(broker.port, f"{TOPIC}/#")
    start(broker, tmp_path)
    ha.wait_for(lambda: len(configs(ha)) == ENTITIES, 60, "the discovery configs")
    buttons = {t.split("/")[3]: c for t, c in configs(ha).items() if t.startswith("homeassistant/button/")}
    assert set(buttons) == {"pause", "resume", "ota_check"}

    def press(name: str) -> int:
        """Publish what Home Assistant publishes for a press; returns the number of stats seen before."""
        button, seen = buttons[name], len(device.on("/stats"))
        info = ha.client.publish(
            button["command_topic"], button["payload_press"], button["qos"], button["retain"]
        )
        info.wait_for_publish(5)
        return seen

    def stats_since(seen: int, paused: bool) -> list[dict[str, Any]]:
        """Stats after a press showing the pipeline paused (no frame processed over a whole interval),
        or running (frames processed), as asked."""
        stats = [m.json() for m in device.on("/stats")[seen:]]
        return [
            s for s in stats if s["pace"]["paused"] is paused and (s["fps"]["processed"] > 0) is not paused
        ]

    device.wait_for(lambda: any(s.json()["fps"]["processed"] > 0 for s in device.on("/stats")), 60, "fps")
    seen = press("pause")
    assert wait_until(lambda: stats_since(seen, paused=True), 15), "no stats with the pipeline paused"
    assert stats_since(seen, paused=True)[0]["pace"]["reason"] == "paused by operator"
    seen = press("resume")
    assert wait_until(lambda: stats_since(seen, paused=False), 15), "no stats with frames processed again"
    press("ota_check")
    log = tmp_path / "daemon.log"
    assert wait_until(lambda: "OTA check (operator command cmd/ota-check) ignored" in log.read_text(), 10)
    assert "ignored malformed message" not in log.read_text()
    ha.close()
    device.close()


def test_turning_it_off_removes_the_device_from_home_assistant(broker: Mosquitto, tmp_path: Path) -> None:
    ha = Collector(broker.port, "homeassistant/#")
    daemon = start(broker, tmp_path)
    ha.wait_for(lambda: len(configs(ha)) == ENTITIES, 60, "the discovery configs")
    topics = set(configs(ha))
    assert {m.topic for m in retained(broker.port, "homeassistant/#")} == topics
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(10) == 0
    start(broker, tmp_path, enabled=False)
    ha.wait_for(lambda: {m.topic for m in ha.messages if not m.payload} == topics, 60, "empty payloads")
    assert retained(broker.port, "homeassistant/#") == []
    ha.close()


def test_disabled_by_default_and_validated(tmp_path: Path) -> None:
    assert load_config(None, environ={}).homeassistant == HomeAssistantConfig()
    assert HomeAssistantConfig().enabled is False
    for key, value in (("discovery_prefix", '"home/#"'), ("quote_currency", '"euro"'), ("enabled", '"yes"')):
        path = tmp_path / "config.toml"
        path.write_text(f"[homeassistant]\n{key} = {value}\n")
        with pytest.raises(ConfigError, match=re.escape(f"homeassistant.{key} in config file {path}")):
            load_config(path, environ={})
    # Home Assistant's broker user: a device by that name would get its rights (deploy/mosquitto/acl).
    with pytest.raises(ConfigError, match="reserved"):
        load_config(None, environ={"APPLIANCE_DEVICE_ID": "homeassistant"})


def test_the_production_acl_keeps_each_device_to_its_own_discovery_topics(
    tmp_path: Path, certs: Path, share_guard: Path
) -> None:
    """With a certificate for Home Assistant, as docs/homeassistant.md issues it."""
    with site_broker(tmp_path, certs, share_guard, "homeassistant") as (broker, site):
        check_the_discovery_acl(broker, site)


def check_the_discovery_acl(broker: TlsBroker, site: Path) -> None:
    ha = connect(broker, site, "homeassistant")
    assert ha.subscribe("homeassistant/#") == 1 and ha.subscribe("appliance/+/status") == 1
    a, b = connect(broker, site, "dev-a"), connect(broker, site, "dev-b")
    enabled = HomeAssistantConfig(enabled=True)
    own = Discovery(enabled, Topics("appliance", "dev-a"), 10, PI_MODEL).messages({"version": "0.1.0"})
    other = Discovery(enabled, Topics("appliance", "dev-b"), 10, PI_MODEL).messages({"version": "0.1.0"})
    assert [a.publish(topic, b"{}") for topic, _ in other] == ["Not authorized"] * ENTITIES
    assert a.publish("homeassistant/switch/dev-a/x/config", b"{}") == "Not authorized"  # not one of ours
    assert a.publish("homeassistant/status", b"offline") == "Not authorized"  # Home Assistant's own
    assert all(a.publish(topic, payload) == "Success" for topic, payload in own)
    assert wait_until(lambda: len(ha.messages) >= len(own))
    assert sorted(ha.messages) == sorted(own)  # dev-a's own, and nothing dev-a tried for dev-b
    # Home Assistant presses dev-b's buttons and nothing else of a device's.
    assert b.subscribe("appliance/dev-b/cmd/#") == 1
    assert ha.publish("appliance/dev-b/cmd/pause", b"") == "Success"
    assert wait_until(lambda: b.messages) and b.messages == [("appliance/dev-b/cmd/pause", b"")]
    for topic in (
        "appliance/dev-b/cmd/pace",
        "appliance/dev-b/objects",
        "homeassistant/sensor/dev-b/x/config",
    ):
        assert ha.publish(topic, b"{}") == "Not authorized"
    assert ha.publish("homeassistant/status", b"online") == "Success"  # its birth message
    for client in (ha, a, b):
        client.close()
