"""The production broker config (deploy/mosquitto) on a real mosquitto over TLS, with certificates from
deploy/pki.sh: every device reaches only its own topics."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from device.wire import decode

from .broker import Mosquitto
from .conftest import ROOT
from .daemons import start_daemon
from .mqtt_helpers import daemon_env

DEPLOY = ROOT / "deploy"


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
    for name in ("dev-a", "dev-b", "pricing-service", "revoked-dev"):
        pki(directory, "client", name)
    pki(directory, "revoke", "revoked-dev")
    other = tmp_path_factory.mktemp("pki") / "other"
    pki(other, "init")
    pki(other, "client", "dev-a")  # same name, wrong CA
    shutil.copy(other / "dev-a.crt", directory / "impostor.crt")
    shutil.copy(other / "dev-a.key", directory / "impostor.key")
    return directory


class TlsBroker(Mosquitto):
    """mosquitto running deploy/mosquitto/appliance.conf, on a loopback port, with the test's certificates."""

    def __init__(self, directory: Path, certs: Path) -> None:
        super().__init__(directory)
        text = (DEPLOY / "mosquitto" / "appliance.conf").read_text()
        text = text.replace("listener 8883", f"listener {self.port} 127.0.0.1")
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
def tls_broker(tmp_path: Path, certs: Path) -> Iterator[TlsBroker]:
    broker = TlsBroker(tmp_path, certs)
    broker.start()
    yield broker
    broker.stop()


class Client:
    def __init__(self, broker: TlsBroker, certs: Path, name: str | None, ca: Path | None = None) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.acks: dict[int, str] = {}
        self.connected = threading.Event()
        self.refused = ""
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"test-{name}", protocol=mqtt.MQTTv5)
        if name is None:
            self.client.tls_set(ca_certs=str(ca or certs / "ca.crt"))
        else:
            self.client.tls_set(
                ca_certs=str(ca or certs / "ca.crt"),
                certfile=str(certs / f"{name}.crt"),
                keyfile=str(certs / f"{name}.key"),
            )
        self.client.on_message = lambda _c, _u, m: self.messages.append((m.topic, bytes(m.payload)))
        self.client.on_publish = lambda _c, _u, mid, rc, _p: self.acks.__setitem__(mid, str(rc))
        self.client.on_connect = lambda _c, _u, _f, rc, _p: (
            self.connected.set() if not rc.is_failure else None
        )
        try:
            self.client.connect("localhost", broker.port)
        except OSError as exc:  # TLS handshake refused
            self.refused = str(exc)
            return
        self.client.loop_start()

    def subscribe(self, topic: str) -> None:
        self.client.subscribe(topic, qos=1)
        time.sleep(0.3)

    def publish(self, topic: str, payload: bytes) -> str:
        info = self.client.publish(topic, payload, qos=1)
        info.wait_for_publish(5)
        time.sleep(0.05)
        return self.acks.get(info.mid, "")

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def connect(*args: Any, **kwargs: Any) -> Client:
    client = Client(*args, **kwargs)
    if not client.refused:
        client.connected.wait(5)
    return client


def test_a_device_reaches_its_own_topics_and_the_pricing_service_does_its_job(
    tls_broker: TlsBroker, certs: Path
) -> None:
    pricing = connect(tls_broker, certs, "pricing-service")
    device = connect(tls_broker, certs, "dev-a")
    assert pricing.connected.is_set() and device.connected.is_set()
    pricing.subscribe("$share/pricing/appliance/+/objects")
    device.subscribe("appliance/dev-a/quotes")
    assert device.publish("appliance/dev-a/objects", b"embedding") == "Success"
    assert pricing.publish("appliance/dev-a/quotes", b"quote") == "Success"
    time.sleep(0.5)
    assert ("appliance/dev-a/objects", b"embedding") in pricing.messages
    assert ("appliance/dev-a/quotes", b"quote") in device.messages
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
    time.sleep(0.5)
    assert pricing.messages == []
    pricing.close()
    a.close()


def test_a_device_cannot_read_another_devices_quotes(tls_broker: TlsBroker, certs: Path) -> None:
    a = connect(tls_broker, certs, "dev-a")
    a.subscribe("appliance/dev-b/quotes")
    a.subscribe("appliance/+/objects")
    pricing = connect(tls_broker, certs, "pricing-service")
    b = connect(tls_broker, certs, "dev-b")
    b.subscribe("appliance/dev-b/quotes")
    pricing.publish("appliance/dev-b/quotes", b"for b only")
    b.publish("appliance/dev-b/objects", b"b's embedding")
    time.sleep(0.5)
    assert a.messages == []
    assert b.messages == [("appliance/dev-b/quotes", b"for b only")]
    for client in (a, b, pricing):
        client.close()


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
        deadline = time.monotonic() + 60
        while not pricing.messages and time.monotonic() < deadline:
            time.sleep(0.2)
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(10) == 0
    finally:
        if daemon.poll() is None:
            daemon.kill()
    pricing.close()
    topic, payload = pricing.messages[0]
    assert topic == "appliance/dev-a/objects" and decode(payload).dim == 1280
