"""The operator's side of the fleet benchmark: find the matched devices, send them one `cmd/bench`, and
collect their replies on `<prefix>/<id>/bench` until all have answered or the deadline passes.

Which devices exist comes from their retained status topics: every device that ever connected left
one, "online" while it is connected and "offline" (its clean stop, or the broker's will) after. A
matched device that is offline, that does not answer in time, or that answers busy or with an error is
reported as not answering, never left out.

paho's callbacks only put messages on a queue; this thread reads it with a deadline.
"""

from __future__ import annotations

import fnmatch
import json
import queue
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.reasoncodes import ReasonCode

from device.errors import LinkError
from device.fleetbench.request import REPLY_VERSION
from device.fleetbench.results import DeviceResult
from device.link.client import Security, make_client
from device.link.guarded import GuardedClient

CONNECT_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Broker:
    host: str
    port: int
    prefix: str
    security: Security


@dataclass(frozen=True)
class BenchAsk:
    """What to send: models None (each device's active ones), threads None (each device's config)."""

    models: tuple[str, ...] | None
    threads: int | None
    runs: int

    def payload(self, request_id: str) -> bytes:
        body: dict[str, Any] = {"request_id": request_id, "runs": self.runs}
        if self.models:
            body["models"] = list(self.models)
        if self.threads is not None:
            body["threads"] = self.threads
        return json.dumps(body).encode()


@dataclass
class Outcome:
    request_id: str
    matched: list[str]
    results: dict[str, dict[str, Any]] = field(default_factory=dict)  # device id -> its "ok" reply
    missing: dict[str, str] = field(default_factory=dict)  # device id -> why it has no result

    @property
    def complete(self) -> bool:
        return bool(self.matched) and not self.missing


def new_request_id() -> str:
    return f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"


class _Session:
    """One connection: the status burst at subscribe time, then the bench replies."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.acks: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._connected = threading.Event()
        self._refused: list[str] = []
        client_id = f"fleet-bench-{uuid.uuid4().hex[:8]}"
        self.client: GuardedClient = make_client(client_id, broker.security, None, where="--")
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda _c, _u, mid, codes, _p: self.acks.put(("suback", (mid, codes)))
        self.client.on_message = lambda _c, _u, m: self.messages.put((m.topic, bytes(m.payload)))

    def _on_connect(self, _c: mqtt.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Any) -> None:
        if reason.is_failure:
            self._refused.append(str(reason))
        self._connected.set()

    def connect(self) -> None:
        where = f"{self.broker.host}:{self.broker.port}"
        try:
            self.client.connect(self.broker.host, self.broker.port, keepalive=30)
        except (OSError, ValueError) as exc:
            raise LinkError(f"cannot reach the broker at {where}: {exc}; check --host and --port") from None
        self.client.loop_start()
        if not self._connected.wait(CONNECT_TIMEOUT_S):
            raise LinkError(f"the broker at {where} did not answer CONNECT within {CONNECT_TIMEOUT_S:.0f} s")
        if self._refused:
            raise LinkError(
                f"the broker at {where} refused the connection ({self._refused[0]}): check the "
                "credentials (--username/--password-file, or the certificate --cert-file/--key-file)"
            )

    def subscribe(self, topic: str, qos: int) -> None:
        _, mid = self.client.subscribe(topic, qos=qos)
        deadline = time.monotonic() + CONNECT_TIMEOUT_S
        while (left := deadline - time.monotonic()) > 0:
            try:
                kind, (ack_mid, codes) = self.acks.get(timeout=left)
            except queue.Empty:
                break
            if kind == "suback" and ack_mid == mid:
                if any(c.is_failure for c in codes):
                    raise LinkError(f"the broker refused the subscription to {topic}: {codes[0]}")
                return
        raise LinkError(f"no SUBACK for {topic} within {CONNECT_TIMEOUT_S:.0f} s")

    def publish(self, topic: str, payload: bytes) -> None:
        info = self.client.publish(topic, payload, qos=1)
        info.wait_for_publish(CONNECT_TIMEOUT_S)
        if not info.is_published():
            raise LinkError(f"the broker did not acknowledge {topic} within {CONNECT_TIMEOUT_S:.0f} s")

    def drain(self) -> Iterator[tuple[str, bytes]]:
        while True:
            try:
                yield self.messages.get_nowait()
            except queue.Empty:
                return

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@contextmanager
def session(broker: Broker) -> Iterator[_Session]:
    one = _Session(broker)
    one.connect()
    try:
        yield one
    finally:
        one.close()


def run_bench(broker: Broker, pattern: str, ask: BenchAsk, timeout: float) -> Outcome:
    """Send one cmd/bench to every online device whose id matches `pattern`, collect the replies."""
    prefix = broker.prefix
    with session(broker) as link:
        # QoS 0 for the retained statuses: they come right after the SUBACK, none held back by the
        # in-flight window; the second subscription's SUBACK then comes after all of them, so every
        # status the broker holds has arrived once it does.
        link.subscribe(f"{prefix}/+/status", qos=0)
        link.subscribe(f"{prefix}/+/bench", qos=1)
        states = _statuses(link.drain(), prefix)
        matched = sorted(d for d in states if fnmatch.fnmatchcase(d, pattern))
        outcome = Outcome(new_request_id(), matched)
        online = [d for d in matched if states[d] == "online"]
        outcome.missing.update({d: f"offline ({states[d]})" for d in matched if d not in online})
        for device in online:
            link.publish(f"{prefix}/{device}/cmd/bench", ask.payload(outcome.request_id))
        _collect(link, outcome, set(online), time.monotonic() + timeout)
    for device in online:
        if device not in outcome.results and device not in outcome.missing:
            outcome.missing[device] = f"no reply within {timeout:g} s"
    return outcome


def _statuses(messages: Iterator[tuple[str, bytes]], prefix: str) -> dict[str, str]:
    states: dict[str, str] = {}
    for topic, payload in messages:
        device = _device_of(topic, prefix, "status")
        if device is None or not payload:  # an empty retained message clears a status: no device
            continue
        try:
            body = json.loads(payload)
        except (UnicodeDecodeError, json.JSONDecodeError):
            body = {}
        state = body.get("state") if isinstance(body, dict) else None
        reason = body.get("reason") if isinstance(body, dict) else None
        states[device] = "online" if state == "online" else (reason or str(state or "unreadable status"))
    return states


def _collect(link: _Session, outcome: Outcome, waiting: set[str], deadline: float) -> None:
    prefix = link.broker.prefix
    while waiting and (left := deadline - time.monotonic()) > 0:
        try:
            topic, payload = link.messages.get(timeout=left)
        except queue.Empty:
            return
        device = _device_of(topic, prefix, "bench")
        reply = _reply(payload)
        if device not in waiting or reply is None or reply.get("request_id") != outcome.request_id:
            continue  # another run's reply, a status, or not ours to read
        waiting.discard(device)
        if reply.get("status") == "ok":
            outcome.results[device] = reply
        elif reply.get("status") == "busy":
            outcome.missing[device] = f"busy with benchmark {reply.get('running')}"
        else:
            outcome.missing[device] = f"failed: {reply.get('error') or reply.get('status')}"


def _reply(payload: bytes) -> dict[str, Any] | None:
    try:
        body = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(body, dict) or body.get("version") != REPLY_VERSION:
        return None  # a reply format this tool does not know: not trusted to mean what we think
    return body


def _device_of(topic: str, prefix: str, leaf: str) -> str | None:
    head, tail = f"{prefix}/", f"/{leaf}"
    if not (topic.startswith(head) and topic.endswith(tail)):
        return None
    device = topic[len(head) : -len(tail)]
    return device if device and "/" not in device else None


def device_results(outcome: Outcome) -> list[DeviceResult]:
    """One row per device and model, for the results store. A reply missing a field is a device bug:
    KeyError says which, rather than a row of made-up figures."""
    rows = []
    for device, reply in sorted(outcome.results.items()):
        for model in reply["models"]:
            rows.append(
                DeviceResult(
                    request_id=outcome.request_id,
                    device_id=device,
                    device_kind=reply["hardware"]["kind"],
                    accelerator=model["accelerator"],
                    backend=model["backend"],
                    model=model["id"],
                    threads=int(reply["threads"]),
                    runs=int(reply["runs"]),
                    p50_ms=float(model["invoke_ms"]["p50"]),
                    p90_ms=float(model["invoke_ms"]["p90"]),
                    fps=float(model["fps"]),
                    at=float(reply["at"]),
                )
            )
    return rows
