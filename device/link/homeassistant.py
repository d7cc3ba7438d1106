"""Home Assistant MQTT discovery: the retained configs that make a device show up in Home Assistant.

Pure data: `Discovery.messages(status)` returns (topic, payload) pairs and the Link publishes them
(retained, QoS 1) where it publishes the status, on every connect and when the status changes. The
entities read only what the device already publishes (status, stats) or receives (quotes), and the
buttons publish exactly what device/control.py accepts. Field names follow Home Assistant's MQTT
discovery schema (integrations/mqtt, sensor.mqtt, binary_sensor.mqtt, button.mqtt); docs/homeassistant.md
lists each entity and the fields used. While the feature is off the same topics get empty payloads,
which is how Home Assistant is told to delete an entity.
"""

from __future__ import annotations

import json
import math
import platform
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from device import __version__
from device.config import HomeAssistantConfig
from device.link.topics import Topics

# The device tree's model string: "Raspberry Pi 4 Model B Rev 1.4" on a Pi (NUL-terminated).
DT_MODEL = Path("firmware/devicetree/base/model")
# Sensors fed by the stats turn `unavailable` after this many stats intervals without one: the status
# can still say online while the stats thread is stuck, and a stale fps must not look current.
STATS_INTERVALS_TO_EXPIRE = 3
# Home Assistant keeps at most 255 characters of a state.
MAX_STATE = 255
# "None" is the payload Home Assistant's MQTT sensors take as `unknown` (its PAYLOAD_NONE): a sensor
# this machine does not have (no TPU, no CPU zone) shows unknown, never a made-up number.
NUMBER_OR_NONE = "{{% set v = {expr} %}}{{{{ v if v is number else None }}}}"
ONLINE = "{{ value_json.state }}"


def hardware_model(sysfs_root: Path = Path("/sys")) -> str:
    """The Pi model from the device tree, else the OS and machine (`Linux x86_64`)."""
    try:
        text = (sysfs_root / DT_MODEL).read_bytes().rstrip(b"\0").decode("utf-8", "replace").strip()
    except OSError:
        text = ""
    return text or f"{platform.system()} {platform.machine()}"


@dataclass(frozen=True)
class Entity:
    component: str  # Home Assistant's platform: sensor, binary_sensor or button
    object_id: str  # the topic's <object_id>, and the end of unique_id and default_entity_id
    name: str
    options: dict[str, Any] = field(default_factory=dict)
    available_from_status: bool = True  # the status topic (and its will) decides availability


def _sensor(object_id: str, name: str, expr: str, **options: Any) -> Entity:
    """A numeric sensor on the stats topic (`expr` reads value_json)."""
    return Entity(
        "sensor",
        object_id,
        name,
        {"value_template": NUMBER_OR_NONE.format(expr=expr), "state_class": "measurement", **options},
    )


def entities(topics: Topics, config: HomeAssistantConfig) -> list[Entity]:
    stats, diagnostic = {"state_topic": topics.stats}, {"entity_category": "diagnostic"}
    price = "value_json.get('avg_sold_price')"
    if config.quote_currency:  # a price in another currency must not show with this unit
        price = f"{price} if value_json.get('currency') == '{config.quote_currency}' else None"
    money = (
        {"device_class": "monetary", "unit_of_measurement": config.quote_currency}
        if config.quote_currency
        else {}
    )
    command = {"qos": 1, "retain": False, "payload_press": ""}  # control.py ignores the payload
    return [
        _sensor("fps", "Processed fps", "value_json.fps.processed", **stats, unit_of_measurement="fps",
                suggested_display_precision=1, icon="mdi:speedometer"),
        _sensor("cpu_temperature", "CPU temperature", "value_json.temperatures.cpu_c", **stats,
                **diagnostic, device_class="temperature", unit_of_measurement="°C"),
        # The hottest TPU: the governor slows down for the hottest one too.
        _sensor("tpu_temperature", "TPU temperature",
                "value_json.temperatures.tpu_c.values() | select('number') | max", **stats, **diagnostic,
                device_class="temperature", unit_of_measurement="°C"),
        _sensor("outbox_depth", "Outbox depth", "value_json.outbox.depth", **stats, **diagnostic,
                unit_of_measurement="messages", icon="mdi:tray-full"),
        Entity("sensor", "pace", "Pace", {
            **stats, "icon": "mdi:speedometer-slow",
            "value_template": f"{{{{ value_json.pace.reason[:{MAX_STATE}] }}}}",
            "json_attributes_topic": topics.stats,
            "json_attributes_template": "{{ value_json.pace | tojson }}",
        }),
        # Every quote the pricing service sends this device; HA reads the device's own quotes topic.
        Entity("sensor", "last_quote", "Last quote", {
            "state_topic": topics.quotes, **money, "icon": "mdi:tag",
            "value_template": NUMBER_OR_NONE.format(expr=price),
            "json_attributes_topic": topics.quotes,
            "json_attributes_template": "{{ {'currency': value_json.get('currency'), "
            "'sell_through': value_json.get('sell_through'), 'n': value_json.get('n'), "
            "'status': value_json.get('status')} | tojson }}",
        }),
        # Its state is the status; always available, so a lost device reads off, not unavailable.
        Entity("binary_sensor", "online", "Online", {
            "state_topic": topics.status, "value_template": ONLINE, "payload_on": "online",
            "payload_off": "offline", "device_class": "connectivity", "qos": 1,
        }, available_from_status=False),
        Entity("button", "pause", "Pause", {
            "command_topic": topics.command("pause"), **command, "icon": "mdi:pause"}),
        Entity("button", "resume", "Resume", {
            "command_topic": topics.command("resume"), **command, "icon": "mdi:play"}),
        Entity("button", "ota_check", "Check for model updates", {
            "command_topic": topics.command("ota-check"), **command, "device_class": "update",
            "entity_category": "config"}),
    ]  # fmt: skip


class Discovery:
    def __init__(
        self, config: HomeAssistantConfig, topics: Topics, stats_interval_s: float, model: str
    ) -> None:
        self.config = config
        self.topics = topics
        self.model = model
        self.expire_after = max(1, math.ceil(STATS_INTERVALS_TO_EXPIRE * stats_interval_s))
        self.entities = entities(topics, config)
        # Unique in Home Assistant across fleets on one broker: the topic prefix is part of it.
        self.base = re.sub(r"[^A-Za-z0-9_-]", "_", f"{topics.prefix}_{topics.device_id}")
        self.slug = re.sub(r"[^a-z0-9]", "_", topics.device_id.lower())

    def topic(self, entity: Entity) -> str:
        """<discovery_prefix>/<component>/<node_id>/<object_id>/config, the node being the device id."""
        node = f"{self.config.discovery_prefix}/{entity.component}/{self.topics.device_id}"
        return f"{node}/{entity.object_id}/config"

    def messages(self, status: dict[str, Any]) -> list[tuple[str, bytes]]:
        """Every entity's config for this status (models, version), or, while disabled, an empty payload
        for each, which deletes the entity in Home Assistant and the retained message on the broker."""
        if not self.config.enabled:
            return [(self.topic(e), b"") for e in self.entities]
        device = self.device(status)
        return [(self.topic(e), json.dumps(self.config_of(e, device)).encode()) for e in self.entities]

    def config_of(self, entity: Entity, device: dict[str, Any]) -> dict[str, Any]:
        config: dict[str, Any] = {
            "name": entity.name,
            "unique_id": f"{self.base}_{entity.object_id}",
            # Home Assistant 2025.10 replaced object_id with default_entity_id; older ones ignore it.
            "default_entity_id": f"{entity.component}.{self.slug}_{entity.object_id}",
            **entity.options,
            "device": device,
            "origin": {"name": "appliance", "sw_version": __version__},
        }
        if entity.available_from_status:
            config["availability"] = [
                {
                    "topic": self.topics.status,
                    "value_template": ONLINE,
                    "payload_available": "online",
                    "payload_not_available": "offline",
                }
            ]
        if config.get("state_topic") == self.topics.stats:
            config["expire_after"] = self.expire_after
        return config

    def device(self, status: dict[str, Any]) -> dict[str, Any]:
        """One Home Assistant device per appliance: firmware and models as sw_version, so an OTA update
        shows there too."""
        version = str(status.get("version", __version__))
        models = status.get("models") or {}
        running = "; ".join(
            f"{kind} {m.get('id')} {m.get('version')} ({m.get('accelerator')})"
            for kind, m in sorted(models.items())
            if isinstance(m, dict)
        )
        device: dict[str, Any] = {
            "identifiers": [self.base],
            "name": self.config.device_name or self.topics.device_id,
            "model": self.model,
            "hw_version": platform.machine(),
            "sw_version": f"{version}; {running}" if running else version,
        }
        if self.model.startswith("Raspberry Pi"):
            device["manufacturer"] = "Raspberry Pi Ltd"
        if self.config.suggested_area:
            device["suggested_area"] = self.config.suggested_area
        return device
