"""The device's MQTT link against a real broker: what it does when its consumer falls behind."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from device.backoff import Backoff
from device.clock import SystemClock
from device.config import MqttConfig, OutboxConfig
from device.errors import LinkError
from device.link.drain import Drainer
from device.link.mqtt import Link
from device.link.outbox import Outbox, Pending
from device.link.topics import Topics
from pricing.catalog import CatalogInfo, Item, load_catalog, write_catalog
from pricing.config import ServiceConfig
from pricing.pricer import Pricer
from pricing.service import PricingService

from .broker import Mosquitto
from .mqtt_helpers import Collector, wait_until


def make_link(
    port: int, folder: Path, drainer: type[Drainer] = Drainer, backoff: Backoff | None = None
) -> Link:
    """The device's real link, with a real outbox, as device shop-1 (not started)."""
    config = OutboxConfig()
    outbox = Outbox(folder / "outbox.sqlite", config, SystemClock())
    return Link(MqttConfig(port=port), TOPICS, dict, drainer(outbox, config, SystemClock()), backoff)


TOPICS = Topics("appliance", "shop-1")


def test_commands_beyond_a_full_queue_are_counted_and_logged(
    broker: Mosquitto, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    topics = TOPICS
    status = Collector(broker.port, topics.status)
    link = make_link(broker.port, tmp_path)
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


@pytest.mark.parametrize(
    ("settings", "error"),
    [
        ({"username": "p", "password_file": "missing"}, r"^password_file .*missing cannot be read"),
        ({"ca_file": "missing"}, r"^ca_file = .*missing does not exist or is not a file"),
        ({"ca_file": "ca.crt", "cert_file": "ca.crt"}, r"^cert_file and key_file go together"),
    ],
)
def test_the_pricing_service_names_the_setting_that_cannot_be_used(
    tmp_path: Path, settings: dict[str, str], error: str
) -> None:
    """The same builder as the device's link (device/link/client.py), in the service's own key names."""
    catalog = tmp_path / "catalog.sqlite"
    item = Item("i1", bytes(4), 1 / 127, 0, 100.0, "JPY", "sold")
    write_catalog(catalog, CatalogInfo("test-embedder", "1.0.0", 4, synthetic=True), [item])
    (tmp_path / "ca.crt").write_text("not really a certificate, but a file")
    paths = {k: v if k == "username" else tmp_path / v for k, v in settings.items()}
    config = ServiceConfig(catalog=catalog, index="exact", **paths)
    with pytest.raises(LinkError, match=error):
        PricingService(config, Pricer(load_catalog(catalog), config))


class BrokenOnce(Drainer):
    """A drainer with a bug that shows once, on the first pump after connecting."""

    failed = False

    def pump(self, publish: Callable[[Pending], int | None]) -> None:
        if not self.failed:
            self.failed = True
            raise KeyError("a bug in the drainer")
        super().pump(publish)


def test_an_unexpected_error_restarts_the_network_thread_and_says_so(
    broker: Mosquitto, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    link = make_link(broker.port, tmp_path, BrokenOnce, Backoff(0.05, 0.1))
    with caplog.at_level(logging.ERROR, logger="device.supervise"):
        link.start()
        try:
            assert wait_until(lambda: link.stats.connects >= 2 and link.stats.connected, 10), "no reconnect"
        finally:
            link.stop()
    assert link.stats.crashes == 1 and link.stats.last_crash == "KeyError: 'a bug in the drainer'"
    assert any("mqtt thread failed" in r.getMessage() and r.exc_info for r in caplog.records)
