"""The boot test's site, on the host's loopback: the site PKI (deploy/pki.sh), mosquitto with the
production config over TLS (deploy/mosquitto, as tests/tls_broker.py runs it), the pricing service with
catalogs for embedder 1.0.0 and 1.1.0, a signed model repository served over HTTP (as `make run` and
`make release-demo` do), and two observers with the site's own identities: fleet-admin reads the
device's status, pricing-2 its object messages (sequence numbers). The broker's debug log shows each
quote sent to the device, which no other identity may read.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from boot_vm import HOST_FROM_GUEST, BootTestError, run, wait_for
from paho.mqtt.enums import CallbackAPIVersion

from device import wire
from rigs.broker import free_port
from tests.tls_broker import TlsBroker, build_share_guard

ROOT = Path(__file__).resolve().parents[2]
PKI = ROOT / "deploy" / "pki.sh"
RELEASE = Path(sys.executable).parent / "appliance-release"
NEXT_EMBEDDER = ROOT / "deploy" / "demo-release" / "manifest.toml"  # efficientnet-lite0-int8 1.1.0


def site_pki(site: Path, device_id: str) -> None:
    """The site CA and identities, from deploy/pki.sh; the broker's certificate is also valid for the
    address the guest reaches the host at (pki.sh names a broker by DNS name and 127.0.0.1 only)."""
    for args in (["init"], ["client", device_id], ["client", "pricing-1"], ["client", "pricing-2"]):
        run(str(PKI), args[0], str(site), *args[1:])
    run(str(PKI), "client", str(site), "fleet-admin")
    key, csr, crt = site / "broker.key", site / "broker.csr", site / "broker.crt"
    run("openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", str(key), "-subj", "/CN=broker", "-out", str(csr))  # fmt: skip
    ext = site / "broker.ext"
    ext.write_text(
        f"subjectAltName=DNS:localhost,IP:127.0.0.1,IP:{HOST_FROM_GUEST}\nextendedKeyUsage=serverAuth\n"
    )
    ca = ["-CA", str(site / "ca.crt"), "-CAkey", str(site / "ca.key"), "-CAcreateserial"]
    run(
        "openssl", "x509", "-req", "-in", str(csr), *ca, "-days", "30", "-extfile", str(ext), "-out", str(crt)
    )
    if not (site / "crl.pem").exists():
        crl = ["-gencrl", "-out", str(site / "crl.pem")]
        run("openssl", "ca", "-batch", "-config", str(site / "ca.cnf"), *crl)


@dataclass
class BrokerLog:
    """Follows mosquitto's log and notes, by host monotonic time, what the device sent and was sent."""

    path: Path
    device_id: str
    objects_in: list[float] = field(default_factory=list)
    quotes_out: list[float] = field(default_factory=list)
    connects: list[float] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        threading.Thread(target=self._follow, daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _follow(self) -> None:
        offset = 0
        pending = ""
        while not self._stop.is_set():
            with self.path.open(errors="replace") as handle:
                handle.seek(offset)
                chunk = handle.read()
                offset = handle.tell()
            pending += chunk
            *complete, pending = pending.split("\n")
            now = time.monotonic()
            for line in complete:
                self._note(line, now)
            time.sleep(0.1)

    def _note(self, line: str, now: float) -> None:
        device = re.escape(self.device_id)
        if re.search(rf"Received PUBLISH from {device} .*'appliance/{device}/objects'", line):
            self.objects_in.append(now)
        elif re.search(rf"Sending PUBLISH to {device} .*'appliance/{device}/quotes'", line):
            self.quotes_out.append(now)
        elif re.search(rf"New client connected from .* as {device} ", line):
            self.connects.append(now)
        if "pricing-1" in line or "Error" in line or "error" in line:
            self.lines.append(line)


class Observer:
    """A paho client with one of the site's identities, subscribed (again after every reconnect) to
    `topics`, keeping every message with its host monotonic arrival time."""

    def __init__(self, site: Path, name: str, port: int, topics: list[str]) -> None:
        self.messages: list[tuple[float, str, bytes]] = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=name, protocol=mqtt.MQTTv5)
        self.client.tls_set(str(site / "ca.crt"), str(site / f"{name}.crt"), str(site / f"{name}.key"))
        self.topics = topics
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(1, 2)
        self.client.connect("localhost", port)
        self.client.loop_start()

    def _on_connect(self, client: mqtt.Client, *_: object) -> None:
        # Again after every reconnect: the broker keeps no session for this client.
        for topic in self.topics:
            client.subscribe(topic, qos=1)

    def _on_message(self, _c: object, _u: object, message: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.messages.append((time.monotonic(), message.topic, bytes(message.payload)))

    def since(self, start: float, topic_end: str) -> list[tuple[float, bytes]]:
        with self.lock:
            return [(at, p) for at, t, p in self.messages if at >= start and t.endswith(topic_end)]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Site:
    """Everything the device talks to, started on free loopback ports under `work`."""

    def __init__(self, work: Path, device_id: str) -> None:
        self.work, self.device_id = work, device_id
        self.site = work / "site"
        site_pki(self.site, device_id)
        plugin = build_share_guard(work / "share_guard.so")
        (work / "broker").mkdir(exist_ok=True)
        self.broker = TlsBroker(work / "broker", self.site, plugin)
        # Debug lines name every PUBLISH in and out: the quotes sent to the device show only here.
        with self.broker.config.open("a") as config:
            config.write("log_type all\n")
        self.log = BrokerLog(self.broker.log, device_id)
        self.pricing: subprocess.Popen[bytes] | None = None
        self.http: subprocess.Popen[bytes] | None = None
        self.ota_port = free_port()
        self.repo, self.keys = work / "ota-repo", work / "ota-keys"
        self.status: Observer | None = None
        self.objects: Observer | None = None

    @property
    def port(self) -> int:
        return self.broker.port

    def start(self) -> None:
        self.broker.start()
        self.log.start()
        catalogs = [self.work / "catalog.sqlite", self.work / "catalog-1.1.0.sqlite"]
        for catalog, manifest in zip(
            catalogs, [ROOT / "models" / "manifest.toml", NEXT_EMBEDDER], strict=True
        ):
            if not catalog.exists():
                run(
                    sys.executable,
                    "-m",
                    "pricing",
                    "catalog",
                    "demo",
                    "--manifest",
                    str(manifest),
                    "--out",
                    str(catalog),
                )
        run(str(RELEASE), "--repo", str(self.repo), "--keys", str(self.keys), "init")
        port = str(self.ota_port)
        self.http = subprocess.Popen(
            [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "--directory", str(self.repo), port],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        config = self.work / "pricing.toml"
        config.write_text(
            f'host = "localhost"\nport = {self.port}\ninstance = "pricing-1"\nindex = "exact"\n'
            f'catalog = ["{catalogs[0]}", "{catalogs[1]}"]\nca_file = "{self.site}/ca.crt"\n'
            f'cert_file = "{self.site}/pricing-1.crt"\nkey_file = "{self.site}/pricing-1.key"\n'
        )
        with (self.work / "pricing.log").open("ab") as log:
            self.pricing = subprocess.Popen(
                [sys.executable, "-m", "pricing", "run", "--config", str(config)],
                stdout=log,
                stderr=log,
                cwd=ROOT,
            )
        wait_for("the pricing service to connect", lambda: "as pricing-1" in self.broker.log.read_text(), 60)
        topic = f"appliance/{self.device_id}"
        self.status = Observer(self.site, "fleet-admin", self.port, [f"{topic}/status", f"{topic}/stats"])
        self.objects = Observer(self.site, "pricing-2", self.port, [f"{topic}/objects"])

    def release_next_embedder(self) -> None:
        """Publishes the demo's embedder 1.1.0, signed, to every device on the stable channel."""
        photos = [
            arg for photo in ("coffee.png", "chelsea.png") for arg in ("--photo", str(ROOT / "demo" / photo))
        ]
        where = ["--repo", str(self.repo), "--keys", str(self.keys)]
        model = ["--manifest", str(NEXT_EMBEDDER), "--model", "efficientnet-lite0-int8"]
        run(str(RELEASE), *where, "add", *model, "--channel", "stable", "--percent", "100", *photos)

    def stop_broker(self) -> None:
        self.broker.stop()

    def start_broker(self) -> None:
        self.broker.start()

    def stop(self) -> None:
        for observer in (self.status, self.objects):
            if observer is not None:
                observer.close()
        for process in (self.pricing, self.http):
            if process is not None and process.poll() is None:
                process.terminate()
                process.wait(10)
        self.log.stop()
        self.broker.stop()

    # What the observers saw -------------------------------------------------------------------------

    def latest_status(self) -> dict[str, Any] | None:
        assert self.status is not None
        found = self.status.since(0.0, "/status")
        return json.loads(found[-1][1]) if found else None

    def online_since(self, start: float) -> dict[str, Any] | None:
        """The first `online` status that arrived after `start` (retained ones count when they arrive)."""
        assert self.status is not None
        for _, payload in self.status.since(start, "/status"):
            status = json.loads(payload)
            if status.get("state") == "online":
                return dict(status)
        return None

    def seqs(self, start: float = 0.0) -> list[int]:
        assert self.objects is not None
        return [wire.decode(payload).seq for _, payload in self.objects.since(start, "/objects")]


def check_no_gaps(seqs: list[int], what: str) -> tuple[int, int]:
    """Sequence numbers seen (duplicates allowed: delivery is at least once) must be gap-free."""
    if not seqs:
        raise BootTestError(f"{what}: no object message seen")
    unique = sorted(set(seqs))
    missing = sorted(set(range(unique[0], unique[-1] + 1)) - set(unique))
    if missing:
        raise BootTestError(f"{what}: sequence numbers lost: {missing[:20]} (of {unique[0]}..{unique[-1]})")
    return unique[0], unique[-1]
