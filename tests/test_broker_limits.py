"""The production broker's limits on a real mosquitto over TLS (rig: tests/tls_broker.py): share_guard's
per-certificate publish rate, and max_packet_size. One device over a limit must not hurt the others."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .mqtt_helpers import wait_until
from .tls_broker import Client, TlsBroker, connect

RATE, BURST = 50, 50  # the tests' publish limit per client: low, so a flood is over it at once


@pytest.fixture()
def limited_broker(tmp_path: Path, certs: Path, share_guard: Path) -> Iterator[TlsBroker]:
    broker = TlsBroker(tmp_path, certs, share_guard, limit=(RATE, BURST))
    broker.start()
    yield broker
    broker.stop()


def flood(client: Client, topic: str, count: int) -> list[str]:
    """Publish `count` QoS 1 messages as fast as paho sends them; their PUBACK reasons, in order."""
    mids = [client.client.publish(topic, b"flood %d" % i, qos=1).mid for i in range(count)]
    assert wait_until(lambda: all(mid in client.acks for mid in mids), 30), "PUBACKs missing"
    return [client.acks[mid] for mid in mids]


def test_a_flooding_device_is_held_to_its_rate_and_others_get_through(
    limited_broker: TlsBroker, certs: Path
) -> None:
    """A device far over its limit gets "not authorized" PUBACKs for the excess, and the pricing identity
    receives no more of its messages than the burst plus the rate; a device publishing slowly meanwhile
    gets every message through, and the pricing identity's own publishes are exempt."""
    pricing = connect(limited_broker, certs, "pricing-service")
    assert pricing.subscribe("$share/pricing/appliance/+/objects") == 1
    honest, flooder = connect(limited_broker, certs, "dev-a"), connect(limited_broker, certs, "dev-b")
    honest_acks: list[str] = []
    pace = threading.Event()  # never set: its timeout spaces the honest device's messages

    def trickle() -> None:  # 20 messages at 40/s at most: under the rate whatever the burst
        while len(honest_acks) < 20 and not pace.wait(0.025):
            honest_acks.append(honest.publish("appliance/dev-a/objects", b"slow %d" % len(honest_acks)))

    thread = threading.Thread(target=trickle)
    start = time.monotonic()
    thread.start()
    acks: list[str] = []
    while thread.is_alive():  # the flood lasts as long as the trickle
        acks += flood(flooder, "appliance/dev-b/objects", 100)
    elapsed = time.monotonic() - start
    thread.join()
    accepted, refused = acks.count("Success"), acks.count("Not authorized")
    assert len(acks) / elapsed > 4 * RATE, "the flood was too slow to test the limit"
    assert accepted + refused == len(acks)
    assert BURST <= accepted <= BURST + RATE * elapsed + 3, (accepted, elapsed)
    assert honest_acks == ["Success"] * 20
    # The broker forwards one client's messages in order: after this one, any of the flood's would be in.
    assert honest.publish("appliance/dev-a/objects", b"last") == "Success"
    assert wait_until(lambda: ("appliance/dev-a/objects", b"last") in pricing.messages)
    assert sum(t == "appliance/dev-b/objects" for t, _p in pricing.messages) == accepted
    assert sum(t == "appliance/dev-a/objects" for t, _p in pricing.messages) == 21
    assert "Not authorized" not in flood(pricing, "appliance/dev-a/quotes", 3 * BURST)

    # Logged at a falling rate: the 1st, 2nd, 4th, 8th ... refusal.
    def logged() -> int:
        return limited_broker.log.read_text().count("rate limit: refused dev-b publishing")

    assert wait_until(lambda: logged() >= refused.bit_length())
    assert logged() == refused.bit_length()
    for client in (pricing, honest, flooder):
        client.close()


def test_reconnecting_does_not_refill_a_devices_rate_limit(limited_broker: TlsBroker, certs: Path) -> None:
    """The limit belongs to the certificate, not the connection: a new connection starts with what the
    old one left, or a flooder would reconnect for a fresh burst."""
    pricing = connect(limited_broker, certs, "pricing-service")
    assert pricing.subscribe("$share/pricing/appliance/+/objects") == 1
    flooder = connect(limited_broker, certs, "dev-b")
    assert "Not authorized" in flood(flooder, "appliance/dev-b/objects", 3 * BURST)
    emptied = time.monotonic()  # its last PUBACK was a refusal: the bucket held less than one message
    flooder.close()
    again = connect(limited_broker, certs, "dev-b")
    assert again.connected.is_set()
    accepted = flood(again, "appliance/dev-b/objects", BURST).count("Success")
    assert accepted <= RATE * (time.monotonic() - emptied) + 2
    for client in (pricing, again):
        client.close()


def test_an_oversized_packet_disconnects_its_sender_alone(tls_broker: TlsBroker, certs: Path) -> None:
    """max_packet_size 16384 in the production config: a device sending 20,000 bytes is disconnected
    ("packet too large") and its message goes nowhere, while another device connected meanwhile keeps
    its connection and its messages keep reaching the pricing identity; 10,000 bytes go through."""
    pricing = connect(tls_broker, certs, "pricing-service")
    assert pricing.subscribe("$share/pricing/appliance/+/objects") == 1
    honest, big = connect(tls_broker, certs, "dev-a"), connect(tls_broker, certs, "dev-b")
    assert honest.connected.is_set() and big.connected.is_set()
    fits = b"f" * 10_000
    assert big.publish("appliance/dev-b/objects", fits) == "Success"
    assert wait_until(lambda: ("appliance/dev-b/objects", fits) in pricing.messages)
    assert honest.publish("appliance/dev-a/objects", b"before") == "Success"
    # Not Client.publish: no PUBACK comes for it; the DISCONNECT is the broker's answer.
    big.client.publish("appliance/dev-b/objects", b"x" * 20_000, qos=1)
    assert wait_until(lambda: big.disconnects, 10), "the broker took a 20,000-byte packet"
    assert big.disconnects[0] == "Packet too large"
    big.close()
    for i in range(5):  # the other device's connection and messages are untouched
        assert honest.publish("appliance/dev-a/objects", b"after %d" % i) == "Success"
    assert wait_until(lambda: ("appliance/dev-a/objects", b"after 4") in pricing.messages)
    assert [p for t, p in pricing.messages if t == "appliance/dev-a/objects"] == [
        b"before",
        *(b"after %d" % i for i in range(5)),
    ]
    assert [p for t, p in pricing.messages if t == "appliance/dev-b/objects"] == [fits]
    assert honest.disconnects == [] and pricing.disconnects == []
    for client in (pricing, honest):
        client.close()
