"""The production broker config (deploy/mosquitto) on a real mosquitto over TLS, with certificates from
deploy/pki.sh: every device reaches only its own topics. The rig: tests/tls_broker.py; the rate and size
limits: tests/test_broker_limits.py."""

from __future__ import annotations

import dataclasses
import signal
import threading
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from device.wire import decode, encode
from pricing.catalog import CatalogInfo, Item, load_catalog, write_catalog
from pricing.config import ServiceConfig
from pricing.pricer import Pricer
from pricing.service import PricingService

from .conftest import DATA
from .daemons import start_daemon
from .mqtt_helpers import daemon_env, wait_until
from .tls_broker import DEPLOY, Client, TlsBroker, connect


def test_a_device_reaches_its_own_topics_and_the_pricing_service_does_its_job(
    tls_broker: TlsBroker, certs: Path
) -> None:
    pricing = connect(tls_broker, certs, "pricing-service")
    device = connect(tls_broker, certs, "dev-a")
    assert pricing.connected.is_set() and device.connected.is_set()
    assert pricing.subscribe("$share/pricing/appliance/+/objects") == 1
    assert device.subscribe("appliance/dev-a/quotes") == 1
    assert device.publish("appliance/dev-a/objects", b"embedding") == "Success"
    assert pricing.publish("appliance/dev-a/quotes", b"quote") == "Success"
    assert wait_until(lambda: ("appliance/dev-a/objects", b"embedding") in pricing.messages)
    assert wait_until(lambda: ("appliance/dev-a/quotes", b"quote") in device.messages)
    for topic in ("appliance/dev-a/status", "appliance/dev-a/stats"):
        assert device.publish(topic, b"{}") == "No matching subscribers"  # accepted; nobody listening
    pricing.close()
    device.close()


def test_a_device_cannot_publish_as_another(tls_broker: TlsBroker, certs: Path) -> None:
    pricing = connect(tls_broker, certs, "pricing-service")
    pricing.subscribe("$share/pricing/appliance/+/objects")
    a = connect(tls_broker, certs, "dev-a")
    assert a.publish("appliance/dev-b/objects", b"forged") == "Not authorized"
    assert a.publish("appliance/dev-b/cmd/pause", b"") == "Not authorized"
    assert a.publish("appliance/fleet/release", b"{}") == "Not authorized"
    # The broker handles one client's messages in order: once its own arrives, a forged one would have.
    assert a.publish("appliance/dev-a/objects", b"own") == "Success"
    assert wait_until(lambda: pricing.messages)
    assert pricing.messages == [("appliance/dev-a/objects", b"own")]
    pricing.close()
    a.close()


def test_a_device_cannot_read_another_devices_quotes(tls_broker: TlsBroker, certs: Path) -> None:
    a = connect(tls_broker, certs, "dev-a")
    a.subscribe("appliance/dev-b/quotes")
    a.subscribe("appliance/+/objects")
    a.subscribe("appliance/dev-a/quotes")
    pricing = connect(tls_broker, certs, "pricing-service")
    pricing.subscribe("$share/pricing/appliance/+/objects")
    b = connect(tls_broker, certs, "dev-b")
    b.subscribe("appliance/dev-b/quotes")
    b.publish("appliance/dev-b/objects", b"b's embedding")
    assert wait_until(lambda: pricing.messages)
    pricing.publish("appliance/dev-b/quotes", b"for b only")
    pricing.publish("appliance/dev-a/quotes", b"for a")
    # a's own quote comes after anything the broker would have given it of b's.
    assert wait_until(lambda: a.messages)
    assert a.messages == [("appliance/dev-a/quotes", b"for a")]
    assert wait_until(lambda: b.messages)
    assert b.messages == [("appliance/dev-b/quotes", b"for b only")]
    for client in (a, b, pricing):
        client.close()


@pytest.mark.parametrize("stolen_id", ["dev-a", "appliance-dev-a"])
def test_a_device_cannot_take_over_another_devices_connection(
    tls_broker: TlsBroker, certs: Path, stolen_id: str
) -> None:
    """dev-b's certificate with dev-a's client id (the one it names itself by, or the one the device
    sends) leaves dev-a connected: the broker takes the client id from the certificate."""
    a = connect(tls_broker, certs, "dev-a", client_id="appliance-dev-a")
    attacker = connect(tls_broker, certs, "dev-b", client_id=stolen_id)
    assert a.connected.is_set() and attacker.connected.is_set()
    # A round trip after the attacker's CONNACK: a DISCONNECT for dev-a would have come before its PUBACK.
    assert a.publish("appliance/dev-a/status", b"{}") in ("Success", "No matching subscribers")
    assert a.disconnects == []
    attacker.close()
    a.close()


@pytest.mark.parametrize("stolen_id", ["dev-a", "appliance-dev-a"])
def test_a_devices_queued_quotes_stay_in_its_own_session(
    tls_broker: TlsBroker, certs: Path, stolen_id: str
) -> None:
    a = connect(tls_broker, certs, "dev-a", client_id="appliance-dev-a", session=True)
    assert a.subscribe("appliance/dev-a/quotes") == 1
    a.close()  # offline: the broker keeps its session and queues its QoS 1 quotes
    pricing = connect(tls_broker, certs, "pricing-service")
    assert pricing.publish("appliance/dev-a/quotes", b"queued for a") == "Success"
    attacker = connect(tls_broker, certs, "dev-b", client_id=stolen_id, session=True)
    assert attacker.connected.is_set()
    # The device comes back (with the client id it always sends) to its session and its quote.
    again = connect(tls_broker, certs, "dev-a", client_id="appliance-dev-a", session=True)
    assert wait_until(lambda: again.messages), "dev-a's queued quote was not delivered to dev-a"
    assert again.messages == [("appliance/dev-a/quotes", b"queued for a")]
    assert attacker.messages == []
    for client in (pricing, attacker, again):
        client.close()


def test_pricing_replicas_have_their_own_identities_and_share_the_work(
    tls_broker: TlsBroker, certs: Path
) -> None:
    """Two copies of the pricing service with their own certificates, even with one client id (the same
    instance setting), stay connected and split the devices' messages between them."""
    replicas = [
        connect(tls_broker, certs, name, client_id="pricing-pricing-1") for name in ("pricing-1", "pricing-2")
    ]
    for replica in replicas:
        assert replica.subscribe("$share/pricing/appliance/+/objects") == 1
    device = connect(tls_broker, certs, "dev-a")
    sent = [f"object {i}".encode() for i in range(10)]
    for payload in sent:
        assert device.publish("appliance/dev-a/objects", payload) == "Success"
    assert wait_until(lambda: sum(len(r.messages) for r in replicas) >= len(sent))
    assert sorted(p for r in replicas for _t, p in r.messages) == sorted(sent)
    assert all(r.messages for r in replicas)  # both took a share
    assert [r.disconnects for r in replicas] == [[], []]
    for client in (*replicas, device):
        client.close()


def test_two_pricing_services_with_their_own_certificates_answer_every_device(
    tls_broker: TlsBroker, certs: Path, tmp_path: Path
) -> None:
    """The real service, two copies as docs/broker.md sets them up: certificate and instance pricing-N."""
    template = decode((DATA / "wire" / "full_1280.bin").read_bytes())
    catalog = tmp_path / "catalog.sqlite"
    info = CatalogInfo(template.model_id, template.model_version, template.dim, synthetic=True)
    write_catalog(catalog, info, [Item("a", bytes(template.dim), 0.1, 0, 5.0, "JPY", "sold")])
    stop, threads, services = threading.Event(), [], []
    for name in ("pricing-1", "pricing-2"):
        config = ServiceConfig(
            host="localhost", port=tls_broker.port, catalog=catalog, instance=name, index="exact",
            ca_file=certs / "ca.crt", cert_file=certs / f"{name}.crt", key_file=certs / f"{name}.key",
        )  # fmt: skip
        services.append(PricingService(config, Pricer(load_catalog(catalog), config)))
        ready = threading.Event()
        threads.append(threading.Thread(target=services[-1].run, args=(stop, ready), daemon=True))
        threads[-1].start()
        assert ready.wait(10)
    device = connect(tls_broker, certs, "dev-a")
    assert device.subscribe("appliance/dev-a/quotes") == 1
    for seq in range(1, 21):
        payload = encode(dataclasses.replace(template, seq=seq))
        assert device.publish("appliance/dev-a/objects", payload) == "Success"
    assert wait_until(lambda: len(device.messages) >= 20, 30), f"{len(device.messages)} of 20 answered"
    stop.set()
    for thread in threads:
        thread.join(5)
    device.close()
    assert all(s.counts["received"] > 0 for s in services)  # both took part


def test_a_pricing_service_refused_its_subscription_never_says_it_serves(
    tls_broker: TlsBroker, certs: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Run with a device's certificate (a mistake in a deployment), the service connects but the broker
    refuses it the pricing group: it says so, counts it, and is never ready (it was, on the CONNACK)."""
    catalog = tmp_path / "catalog.sqlite"
    item = Item("a", bytes(8), 0.1, 0, 5.0, "JPY", "sold")
    write_catalog(catalog, CatalogInfo("m", "1", 8, synthetic=True), [item])
    config = ServiceConfig(
        host="localhost", port=tls_broker.port, catalog=catalog, index="exact",
        ca_file=certs / "ca.crt", cert_file=certs / "dev-a.crt", key_file=certs / "dev-a.key",
    )  # fmt: skip
    service = PricingService(config, Pricer(load_catalog(catalog), config))
    stop, ready = threading.Event(), threading.Event()
    thread = threading.Thread(target=service.run, args=(stop, ready), daemon=True)
    thread.start()
    try:
        assert wait_until(lambda: service.counts["refused_subscriptions"] == 1, 10)
        assert service.counts["connects"] == 1 and not ready.is_set()
        assert any("may not join the pricing group" in r.getMessage() for r in caplog.records)
    finally:
        stop.set()
        thread.join(5)


class QuotingService(Client):
    """The pricing identity answering every object message with a quote to its sender."""

    def __init__(self, broker: TlsBroker, certs: Path) -> None:
        super().__init__(broker, certs, "pricing-service")
        self.client.on_message = self._answer

    def _answer(self, client: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        self.messages.append((message.topic, bytes(message.payload)))
        client.publish(message.topic.replace("/objects", "/quotes"), message.payload, qos=1)


@pytest.mark.parametrize(
    "shared", ["$share/pricing/appliance/+/objects", "$share/x/appliance/+/objects", "$share/pricing/#"]
)
def test_a_device_cannot_join_a_shared_subscription(tls_broker: TlsBroker, certs: Path, shared: str) -> None:
    """A device in the pricing group would be handed its turn of every device's messages, which the read
    check then drops: the senders get their PUBACK and never a quote."""
    pricing = QuotingService(tls_broker, certs)
    pricing.connected.wait(5)
    assert pricing.subscribe("$share/pricing/appliance/+/objects") == 1
    thief = connect(tls_broker, certs, "dev-b")
    assert thief.subscribe(shared) >= 0x80
    a = connect(tls_broker, certs, "dev-a")
    assert a.subscribe("appliance/dev-a/quotes") == 1
    sent = [f"object {i}".encode() for i in range(10)]
    for payload in sent:
        assert a.publish("appliance/dev-a/objects", payload) == "Success"
    assert wait_until(lambda: len(a.messages) >= len(sent))
    assert sorted(p for _t, p in a.messages) == sorted(sent)  # a quote for every object
    assert len(pricing.messages) == len(sent) and thief.messages == []
    for client in (pricing, thief, a):
        client.close()


def test_the_plugin_and_the_acl_name_the_same_pricing_identities() -> None:
    """A pricing identity missing from either file could not join the group or read the objects."""
    conf = (DEPLOY / "mosquitto/appliance.conf").read_text().splitlines()
    members = {line.split()[1] for line in conf if line.startswith("plugin_opt_member ")}
    readers, user = set(), None
    for line in (DEPLOY / "mosquitto/acl").read_text().splitlines():
        if line.startswith("user "):
            user = line.split()[1]
        elif line.strip() == "topic read appliance/+/objects" and user:
            readers.add(user)
    assert members and members == readers


@pytest.mark.parametrize("who", ["no certificate", "another CA", "revoked"])
def test_strangers_are_refused(tls_broker: TlsBroker, certs: Path, who: str) -> None:
    name = {"no certificate": None, "another CA": "impostor", "revoked": "revoked-dev"}[who]
    client = connect(tls_broker, certs, name)
    # Refused, and seen to be: in the TLS handshake, or by the broker closing the connection after it
    # (TLS 1.3 checks the client's certificate after the client's side of the handshake is done).
    assert (client.refused or client.disconnects) and not client.connected.is_set()
    if not client.refused:
        client.close()


def test_the_daemon_over_tls_with_its_certificate(tls_broker: TlsBroker, certs: Path, tmp_path: Path) -> None:
    pricing = connect(tls_broker, certs, "pricing-service")
    pricing.subscribe("$share/pricing/appliance/+/objects")
    env = daemon_env(
        tls_broker.port,
        tmp_path / "state",
        device_id="dev-a",
        APPLIANCE_MQTT__HOST="localhost",
        APPLIANCE_MQTT__TLS="true",
        APPLIANCE_MQTT__CA_FILE=str(certs / "ca.crt"),
        APPLIANCE_MQTT__CERT_FILE=str(certs / "dev-a.crt"),
        APPLIANCE_MQTT__KEY_FILE=str(certs / "dev-a.key"),
    )
    daemon = start_daemon(env, log=tmp_path / "daemon.log")
    wait_until(lambda: pricing.messages, 60)
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(10) == 0
    pricing.close()
    topic, payload = pricing.messages[0]
    assert topic == "appliance/dev-a/objects" and decode(payload).dim == 1280
