"""One hostile device against the pricing service, through a real mosquitto: packets paho cannot parse,
and a seeded corpus of everything else a device can send wrong. Other devices' quotes must carry on."""

from __future__ import annotations

import json
import logging
import queue
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from device.wire import CONTENT_TYPE, encode
from pricing.bench_fuzz_rig import Client
from pricing.catalog import CatalogInfo, Item, write_catalog
from pricing.config import ServiceConfig
from pricing.fuzz import Attack, corpus, template
from pricing.service import PricingService

from .broker import Mosquitto
from .pricing_helpers import running_service

INFO = CatalogInfo("test-embedder", "2.0.0", 8, synthetic=False)
BASE = template(INFO.model_id, INFO.model_version, INFO.dim)


@pytest.fixture()
def service(broker: Mosquitto, tmp_path: Path) -> Iterator[PricingService]:
    vector = bytes([100, 0, 0, 0, 0, 0, 0, 0])
    items = [Item(f"i{n}", vector, 0.01, 0, 1000.0 + n, "JPY", "sold") for n in range(5)]
    path = tmp_path / "catalog.sqlite"
    write_catalog(path, INFO, items)
    with running_service(
        ServiceConfig(port=broker.port, catalog=path, index="exact", min_neighbours=1)
    ) as svc:
        yield svc


class Device:
    """A well-behaved device: one object message, then wait for its quote (or fail at the deadline). The
    fuzz benchmark's client (pricing/bench_fuzz_rig.py) underneath: one MQTT rig for both."""

    def __init__(self, port: int, device_id: str) -> None:
        self.device_id = device_id
        self.quotes = f"appliance/{device_id}/quotes"
        self.link = Client(port, device_id, subscribe=self.quotes)

    def send(self, seq: int, attack: Attack | None = None) -> None:
        attack = attack or Attack("honest", encode(BASE.with_seq(seq)), response_topic=self.quotes)
        self.link.send(attack).wait_for_publish(5)

    # A deadline, not a speed test: on a loaded CI machine a quote took over 5 s once. A dropped
    # connection is caught by the `connects` count, and a lost request by no quote at all.
    def quote_for(self, seq: int, timeout: float = 15.0) -> dict[str, Any]:
        self.send(seq)
        while True:
            try:
                quote: dict[str, Any] = json.loads(self.link.received.get(timeout=timeout).payload)
            except queue.Empty:
                raise AssertionError(f"{self.device_id}: no quote for seq {seq} within {timeout} s") from None
            if quote["seq"] == seq:
                return quote

    def close(self) -> None:
        self.link.close()


@pytest.mark.parametrize(
    "where", ["user property value", "user property key", "response topic", "content type"]
)
def test_a_property_paho_cannot_parse_costs_that_message_not_the_connection(
    broker: Mosquitto, service: PricingService, where: str, caplog: pytest.LogCaptureFixture
) -> None:
    """U+FEFF passes mosquitto, and paho's parser raised MalformedPacket on it and dropped the service's
    connection: other devices' requests sent meanwhile were lost. Now each is refused alone, and logged
    at a falling rate."""
    caplog.set_level(logging.WARNING, logger="device.link.guarded")
    honest, evil = Device(broker.port, "shop-1"), Device(broker.port, "evil")
    bad = {
        "user property value": Attack("bom", encode(BASE), user_properties=[("note", "\ufeff")]),
        "user property key": Attack("bom", encode(BASE), user_properties=[("\ufeff", "x")]),
        "response topic": Attack("bom", encode(BASE), response_topic="appliance/evil/quotes\ufeff"),
        "content type": Attack("bom", encode(BASE), content_type=CONTENT_TYPE + "\ufeff"),
    }[where]
    try:
        for seq in range(1, 21):
            evil.send(seq, bad)
            assert honest.quote_for(seq)["status"] == "ok"
    finally:
        honest.close()
        evil.close()
    stats = service.stats()
    assert stats["counts"]["refused_packets"] == 20
    assert stats["counts"]["connects"] == 1  # never dropped, never reconnected
    assert stats["counts"]["ok"] == 20  # nothing from the attacker was priced
    # Logged from paho's network thread at the 1st, 2nd, 4th, 8th and 16th refusal, naming the topic and
    # the running count; the other 15 are counted only. Every refusal was read before its honest
    # device's quote came back (one connection, in order), so all five lines are in by now.
    lines = [r.getMessage() for r in caplog.records if r.name == "device.link.guarded"]
    assert [line.rsplit("(", 1)[1] for line in lines] == [f"{n} so far)" for n in (1, 2, 4, 8, 16)]
    assert all("'appliance/evil/objects'" in line and "connection kept" in line for line in lines)


def test_a_seeded_fuzz_corpus_leaves_other_devices_quotes_alone(
    broker: Mosquitto, service: PricingService
) -> None:
    honest, evil = Device(broker.port, "shop-1"), Device(broker.port, "evil")
    attacks = list(corpus(3300, seed=11, base=BASE, device="evil"))
    try:
        for n, attack in enumerate(attacks):
            evil.send(0, attack)
            if n % 33 == 0:
                assert honest.quote_for(n // 33 + 1)["status"] == "ok"
        assert honest.quote_for(len(attacks) // 33 + 1)["status"] == "ok"  # and after the attack
    finally:
        honest.close()
        evil.close()
    counts = service.stats()["counts"]
    assert counts["connects"] == 1
    assert counts["refused_packets"] == 300  # every bad_property attack, and nothing else
    assert counts["rejected_oversize"] == 300
    assert counts.get("rejected_malformed", 0) >= 600  # bad floats, random and most mutated bytes
    assert counts["rejected_content_type"] == 300
    # The honest device was answered every time, and no attacker message was priced at a NaN.
    assert counts["ok"] >= 101
    assert service.dedupe.ranges("shop-1") == 1
