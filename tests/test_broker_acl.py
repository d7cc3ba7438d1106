"""The production broker config (deploy/mosquitto) on a real mosquitto over TLS, with certificates from
deploy/pki.sh: every device reaches only its own topics."""

from __future__ import annotations

import dataclasses
import os
import pwd
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from device.wire import decode, encode
from pricing.catalog import CatalogInfo, Item, load_catalog, write_catalog
from pricing.config import ServiceConfig
from pricing.pricer import Pricer
from pricing.service import PricingService

from .broker import Mosquitto
from .conftest import DATA, ROOT
from .daemons import start_daemon
from .mqtt_helpers import daemon_env

DEPLOY = ROOT / "deploy"
# Where docs/broker.md installs the plugin; the tests load the one they build instead.
PLUGIN_PATH = "/usr/local/lib/mosquitto/share_guard.so"


def pki(directory: Path, *args: str) -> None:
    subprocess.run(
        [str(DEPLOY / "pki.sh"), args[0], str(directory), *args[1:]], check=True, capture_output=True
    )


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    assert shutil.which("openssl"), "openssl is needed (make test installs it)"
    directory = tmp_path_factory.mktemp("pki") / "site"
    pki(directory, "init")
    pki(directory, "broker", "localhost")
    for name in ("dev-a", "dev-b", "pricing-service", "pricing-1", "pricing-2", "revoked-dev"):
        pki(directory, "client", name)
    pki(directory, "revoke", "revoked-dev")
    other = tmp_path_factory.mktemp("pki") / "other"
    pki(other, "init")
    pki(other, "client", "dev-a")  # same name, wrong CA
    shutil.copy(other / "dev-a.crt", directory / "impostor.crt")
    shutil.copy(other / "dev-a.key", directory / "impostor.key")
    return directory


@pytest.fixture(scope="module")
def share_guard(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The broker plugin, built by the same script an operator runs on the broker host."""
    plugin = tmp_path_factory.mktemp("plugin") / "share_guard.so"
    build = subprocess.run(
        [str(DEPLOY / "mosquitto/build-share-guard.sh"), str(plugin)],
        check=False,
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, build.stderr
    assert "warning" not in build.stderr, build.stderr
    return plugin


class TlsBroker(Mosquitto):
    """mosquitto running deploy/mosquitto/appliance.conf, on a loopback port, with the test's certificates."""

    def __init__(
        self, directory: Path, certs: Path, plugin: Path, limit: tuple[int, int] | None = None
    ) -> None:
        """`limit` (rate, burst) replaces the plugin's production per-client publish rate limit."""
        super().__init__(directory)
        text = (DEPLOY / "mosquitto" / "appliance.conf").read_text()
        if limit is not None:
            text = re.sub(r"(?m)^plugin_opt_rate .*$", f"plugin_opt_rate {limit[0]}", text)
            text = re.sub(r"(?m)^plugin_opt_burst .*$", f"plugin_opt_burst {limit[1]}", text)
        text = text.replace("listener 8883", f"listener {self.port} 127.0.0.1")
        text = text.replace(PLUGIN_PATH, str(plugin))
        text = text.replace("/etc/mosquitto/certs", str(certs)).replace(
            "/etc/mosquitto/acl", str(DEPLOY / "mosquitto/acl")
        )
        text = text.replace("persistence true", "persistence false").replace(
            "persistence_location /var/lib/mosquitto/\n", ""
        )
        user = pwd.getpwuid(
            os.getuid()
        ).pw_name  # as root, mosquitto would drop to a user that cannot read the keys
        self.config.write_text(text + f"\nuser {user}\nlog_dest stderr\n")


@pytest.fixture()
def tls_broker(tmp_path: Path, certs: Path, share_guard: Path) -> Iterator[TlsBroker]:
    broker = TlsBroker(tmp_path, certs, share_guard)
    broker.start()
    yield broker
    broker.stop()


def wait_for(condition: Callable[[], object], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


class Client:
    """A paho client with a site certificate; `session` asks for a persistent session (clean_start false,
    an hour's expiry), as a device that wants its queued quotes after a reconnect would."""

    def __init__(
        self,
        broker: TlsBroker,
        certs: Path,
        name: str | None,
        ca: Path | None = None,
        client_id: str | None = None,
        session: bool = False,
    ) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.acks: dict[int, str] = {}
        self.subacks: dict[int, list[int]] = {}
        self.disconnects: list[str] = []
        self.connected = threading.Event()
        self.refused = ""
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id or f"test-{name}", protocol=mqtt.MQTTv5
        )
        self.client.tls_set(
            ca_certs=str(ca or certs / "ca.crt"),
            certfile=None if name is None else str(certs / f"{name}.crt"),
            keyfile=None if name is None else str(certs / f"{name}.key"),
        )
        self.client.on_message = lambda _c, _u, m: self.messages.append((m.topic, bytes(m.payload)))
        self.client.on_publish = lambda _c, _u, mid, rc, _p: self.acks.__setitem__(mid, str(rc))
        self.client.on_subscribe = lambda _c, _u, mid, rcs, _p: self.subacks.__setitem__(
            mid, [rc.value for rc in rcs]
        )
        self.client.on_disconnect = lambda _c, _u, _f, rc, _p: self.disconnects.append(str(rc))
        self.client.on_connect = lambda _c, _u, _f, rc, _p: (
            self.connected.set() if not rc.is_failure else None
        )
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # paho leaves it untyped
        if session:
            properties.SessionExpiryInterval = 3600
        try:
            self.client.connect("localhost", broker.port, clean_start=not session, properties=properties)
        except OSError as exc:  # TLS handshake refused
            self.refused = str(exc)
            return
        self.client.loop_start()

    def subscribe(self, topic: str) -> int:
        """Subscribe at QoS 1 and return the SUBACK's reason code (0x80 and above: refused)."""
        _rc, mid = self.client.subscribe(topic, qos=1)
        assert mid is not None, f"not connected: cannot subscribe to {topic}"
        assert wait_for(lambda: mid in self.subacks), f"no SUBACK for {topic}"
        return self.subacks[mid][0]

    def publish(self, topic: str, payload: bytes) -> str:
        info = self.client.publish(topic, payload, qos=1)
        info.wait_for_publish(5)
        wait_for(lambda: info.mid in self.acks, 1)
        return self.acks.get(info.mid, "")

    def close(self) -> None:
        self.client.disconnect()  # first: the network thread then ends at once instead of at its timeout
        self.client.loop_stop()


def connect(*args: Any, **kwargs: Any) -> Client:
    client = Client(*args, **kwargs)
    if not client.refused:  # connected, or refused after the handshake (a revoked certificate)
        wait_for(lambda: client.connected.is_set() or client.disconnects)
    return client


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
    assert wait_for(lambda: ("appliance/dev-a/objects", b"embedding") in pricing.messages)
    assert wait_for(lambda: ("appliance/dev-a/quotes", b"quote") in device.messages)
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
    assert wait_for(lambda: pricing.messages)
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
    assert wait_for(lambda: pricing.messages)
    pricing.publish("appliance/dev-b/quotes", b"for b only")
    pricing.publish("appliance/dev-a/quotes", b"for a")
    # a's own quote comes after anything the broker would have given it of b's.
    assert wait_for(lambda: a.messages)
    assert a.messages == [("appliance/dev-a/quotes", b"for a")]
    assert wait_for(lambda: b.messages)
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
    assert wait_for(lambda: again.messages), "dev-a's queued quote was not delivered to dev-a"
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
    assert wait_for(lambda: sum(len(r.messages) for r in replicas) >= len(sent))
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
    assert wait_for(lambda: len(device.messages) >= 20, 30), f"{len(device.messages)} of 20 answered"
    stop.set()
    for thread in threads:
        thread.join(5)
    device.close()
    assert all(s.counts["received"] > 0 for s in services)  # both took part


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
    assert wait_for(lambda: len(a.messages) >= len(sent))
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
    assert client.refused or not client.connected.is_set()
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
    try:
        wait_for(lambda: pricing.messages, 60)
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(10) == 0
    finally:
        if daemon.poll() is None:
            daemon.kill()
    pricing.close()
    topic, payload = pricing.messages[0]
    assert topic == "appliance/dev-a/objects" and decode(payload).dim == 1280


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
    assert wait_for(lambda: all(mid in client.acks for mid in mids), 30), "PUBACKs missing"
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
    assert wait_for(lambda: ("appliance/dev-a/objects", b"last") in pricing.messages)
    assert sum(t == "appliance/dev-b/objects" for t, _p in pricing.messages) == accepted
    assert sum(t == "appliance/dev-a/objects" for t, _p in pricing.messages) == 21
    assert "Not authorized" not in flood(pricing, "appliance/dev-a/quotes", 3 * BURST)

    # Logged at a falling rate: the 1st, 2nd, 4th, 8th ... refusal.
    def logged() -> int:
        return limited_broker.log.read_text().count("rate limit: refused dev-b publishing")

    assert wait_for(lambda: logged() >= refused.bit_length())
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
