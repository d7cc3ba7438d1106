"""The device's MQTT link against a real broker: what it does when its consumer falls behind."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from device.clock import SystemClock
from device.config import MqttConfig, OutboxConfig
from device.link.drain import Drainer
from device.link.mqtt import Link
from device.link.outbox import Outbox
from device.link.topics import Topics

from .broker import Mosquitto
from .mqtt_helpers import Collector, wait_until


def test_commands_beyond_a_full_queue_are_counted_and_logged(
    broker: Mosquitto, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    topics = Topics("appliance", "shop-1")
    status = Collector(broker.port, topics.status)
    config = OutboxConfig()
    drainer = Drainer(Outbox(tmp_path / "outbox.sqlite", config, SystemClock()), config, SystemClock())
    link = Link(MqttConfig(port=broker.port), topics, dict, drainer)
    link.start()
    try:
        # The status goes out after the subscription on the same connection: once it is here, so is that.
        status.wait_for(
            lambda: any(m.json()["state"] == "online" for m in status.on("/status")), 10, "online"
        )
        capacity = link.incoming.maxsize
        with caplog.at_level(logging.WARNING, logger="device.link.mqtt"):
            infos = [
                status.client.publish(topics.command("pause"), b"{}", qos=1) for _ in range(capacity + 10)
            ]
            for info in infos:
                info.wait_for_publish(5)
            assert wait_until(lambda: link.stats.received == capacity + 10, timeout=10), link.stats
        assert link.incoming.qsize() == capacity and link.stats.incoming_dropped == 10
        lines = [r.getMessage() for r in caplog.records if "queue full" in r.getMessage()]
        assert lines == [f"{topics.command('pause')}: queue full, dropped ({n} so far)" for n in (1, 2, 4, 8)]
    finally:
        link.stop()
        status.close()
