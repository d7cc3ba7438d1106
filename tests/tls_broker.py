"""The rig for the production broker config (deploy/mosquitto) on a real mosquitto over TLS, with
certificates from deploy/pki.sh: the broker, and a paho client holding one of the site's certificates.
The fixtures that build them are in tests/conftest.py."""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from .broker import Mosquitto
from .mqtt_helpers import wait_until

# Not conftest's ROOT: conftest imports this module.
DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
# Where docs/broker.md installs the plugin; the tests load the one they build instead.
PLUGIN_PATH = "/usr/local/lib/mosquitto/share_guard.so"


def pki(directory: Path, *args: str) -> None:
    subprocess.run(
        [str(DEPLOY / "pki.sh"), args[0], str(directory), *args[1:]], check=True, capture_output=True
    )


def site_pki(directory: Path) -> Path:
    """A site's CA in `directory` / "site" with a broker, devices, pricing identities and a revoked device,
    plus `impostor`: dev-a's name signed by another CA."""
    assert shutil.which("openssl"), "openssl is needed (make test installs it)"
    site = directory / "site"
    pki(site, "init")
    pki(site, "broker", "localhost")
    for name in ("dev-a", "dev-b", "pricing-service", "pricing-1", "pricing-2", "revoked-dev"):
        pki(site, "client", name)
    pki(site, "revoke", "revoked-dev")
    other = directory / "other"
    pki(other, "init")
    pki(other, "client", "dev-a")  # same name, wrong CA
    shutil.copy(other / "dev-a.crt", site / "impostor.crt")
    shutil.copy(other / "dev-a.key", site / "impostor.key")
    return site


def build_share_guard(plugin: Path) -> Path:
    """The broker plugin, built by the same script an operator runs on the broker host."""
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


@contextmanager
def site_broker(
    tmp_path: Path, certs: Path, plugin: Path, *identities: str
) -> Iterator[tuple[TlsBroker, Path]]:
    """The production broker on a copy of the test site's certificates, plus a client certificate for
    each of `identities` issued by deploy/pki.sh as an operator would (fleet-admin, homeassistant,
    fleet-exporter ...); stopped on the way out, whatever happened."""
    site = tmp_path / "site"
    shutil.copytree(certs, site)
    for name in identities:
        pki(site, "client", name)
    (tmp_path / "broker").mkdir()
    broker = TlsBroker(tmp_path / "broker", site, plugin)
    broker.start()
    try:
        yield broker, site
    finally:
        broker.stop()


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
        assert wait_until(lambda: mid in self.subacks), f"no SUBACK for {topic}"
        return self.subacks[mid][0]

    def publish(self, topic: str, payload: bytes) -> str:
        info = self.client.publish(topic, payload, qos=1)
        info.wait_for_publish(5)
        wait_until(lambda: info.mid in self.acks, 1)
        return self.acks.get(info.mid, "")

    def close(self) -> None:
        self.client.disconnect()  # first: the network thread then ends at once instead of at its timeout
        self.client.loop_stop()


def connect(*args: Any, **kwargs: Any) -> Client:
    client = Client(*args, **kwargs)
    if not client.refused:  # connected, or refused after the handshake (a revoked certificate)
        wait_until(lambda: client.connected.is_set() or client.disconnects)
    return client
