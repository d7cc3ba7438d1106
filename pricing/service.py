"""The MQTT side of the pricing service.

- Subscribes to `$share/<group>/<prefix>/+/objects`: every copy of the service with the same group gets
  a share of the devices' messages, so the service scales out by starting more copies.
- Answers each object message on its MQTT v5 response topic with its correlation data, falling back to
  `<prefix>/<device_id>/quotes`. A response topic outside the sending device's own topics is not
  honoured (a device must not make the service publish into another device's topics).
- Drops repeats of (device_id, epoch, seq) (the devices deliver at least once; docs/wire.md), answers
  each message from the catalog built with its embedder (pricing/catalogs.py), refuses vectors no
  catalog can compare, and counts and logs (rate-limited) every payload it cannot use. It never crashes
  on one, and a payload larger than any catalog's vector could need is refused before it is queued, so
  a flood of big messages cannot hold memory.
- A PUBLISH whose MQTT v5 properties paho cannot parse is refused alone (device/link/guarded.py); the
  connection, and every other device's quotes, carry on.
- paho's callbacks only enqueue; one worker thread decodes, prices and publishes.
"""

from __future__ import annotations

import json
import logging
import random
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any
from wsgiref.simple_server import WSGIServer

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from prometheus_client import start_http_server

from device.dedupe import Deduplicator
from device.link.client import Security, Will, make_client
from device.link.guarded import GuardedClient
from device.link.properties import EPOCH_PROPERTY
from device.metrics import Percentiles
from device.ratelog import log_rarely
from device.wire import CONTENT_TYPE, HEADER_SIZE, MAX_TEXT, VECTOR_HEADER_SIZE, WireError, decode
from pricing.catalogs import Catalogs
from pricing.config import ServiceConfig
from pricing.fair_queue import FairQueue
from pricing.metrics import PricingMetrics
from pricing.pricer import Pricer

log = logging.getLogger(__name__)
# Quotes sent before the broker's PUBACK (paho's default of 20 made replies queue up during a flood),
# and the most kept unacknowledged (in flight and queued): some hundreds of KB.
REPLIES_IN_FLIGHT = 100
REPLIES_QUEUED = 1000
_EPOCH = re.compile(r"[0-9a-f]{16}")


@dataclass(frozen=True)
class Request:
    topic: str
    payload: bytes
    response_topic: str | None
    correlation: bytes | None
    content_type: str | None
    received: float  # perf_counter at arrival, for the service's own latency
    epoch: str = ""  # the device's sequence epoch (MQTT v5 user property; "" from older firmware)
    size: int = -1  # the payload's size when it was too large to keep (the payload is then empty)


@dataclass(frozen=True)
class Reply:
    topic: str
    payload: bytes
    correlation: bytes | None


class PricingService:
    def __init__(self, config: ServiceConfig, pricer: Pricer | Catalogs) -> None:
        self.config = config
        self.catalogs = pricer if isinstance(pricer, Catalogs) else Catalogs([pricer])
        self.counts: Counter[str] = Counter()
        self.latency_ms = Percentiles()
        self.dedupe = Deduplicator()
        # One line per device, served in turn: a flooding device waits behind itself only.
        self._requests: FairQueue[Request, str] = FairQueue()
        self._max_payload = self._largest_payload(self.catalogs)
        self._serving = False  # the broker granted the subscription: the status may say online
        self._client = self._make_client()
        self.metrics = PricingMetrics(config.instance, self.stats)

    @staticmethod
    def _largest_payload(catalogs: Catalogs) -> int:
        """The largest object message any catalog here could price: a bigger one is refused on arrival,
        so that a queue of 10,000 requests holds at most a few MB, whatever devices send."""
        dim = max(p.catalog.info.dim for p in catalogs.pricers.values())
        return HEADER_SIZE + 3 * (1 + MAX_TEXT) + VECTOR_HEADER_SIZE + dim

    # -- pure request handling (tests call this directly) -------------------------------------------
    def handle(self, request: Request) -> Reply | None:
        self.counts["received"] += 1
        device_id = self._device_of(request.topic)
        if device_id is None:
            self._log_limited("topic", f"not an objects topic: {request.topic}")
            return None
        if request.size >= 0:
            self._log_limited(
                "oversize", f"from {device_id}: {request.size} bytes, above {self._max_payload}"
            )
            return None
        if request.content_type not in (None, CONTENT_TYPE):
            # Another format version: its bytes would decode to nonsense here.
            self._log_limited("content_type", f"from {device_id}: content type {request.content_type}")
            return None
        try:
            message = decode(request.payload)
        except WireError as exc:
            self._log_limited("malformed", f"from {device_id}: {exc}")
            return None
        if not self._is_new(device_id, message.seq, request.epoch):
            return None
        quote, used = self.catalogs.quote(message)
        self.counts[quote.status] += 1
        if quote.status == "refused":
            _log_rarely(self.counts["refused"], f"refused {device_id} seq {message.seq}: {quote.reason}")
        body = {
            "device_id": device_id,
            "seq": message.seq,
            "track_id": message.track_id,
            **quote.to_dict(),
            "synthetic": used is not None and used.catalog.info.synthetic,
            "latency_ms": round((time.perf_counter() - request.received) * 1e3, 3),
        }
        return Reply(
            self._reply_topic(device_id, request.response_topic),
            json.dumps(body).encode(),
            request.correlation,
        )

    def _is_new(self, device_id: str, seq: int, epoch: str) -> bool:
        """Deduplicator's answer, logged at a falling rate: a device churning epochs must not flood the
        journal. The counts are the Deduplicator's own (see stats)."""
        resets = self.dedupe.resets
        if not self.dedupe.is_new(device_id, seq, epoch):
            _log_rarely(self.dedupe.duplicates, f"from {device_id}: seq {seq} (epoch {epoch or '-'}) again")
            return False
        if self.dedupe.resets > resets:
            _log_rarely(self.dedupe.resets, f"{device_id} numbers its messages afresh, epoch {epoch or '-'}")
        return True

    def _device_of(self, topic: str) -> str | None:
        prefix = self.config.topic_prefix + "/"
        if not topic.startswith(prefix) or not topic.endswith("/objects"):
            return None
        device_id = topic[len(prefix) : -len("/objects")]
        return device_id if device_id and "/" not in device_id else None

    def _reply_topic(self, device_id: str, requested: str | None) -> str:
        own = f"{self.config.topic_prefix}/{device_id}/"
        if requested and requested.startswith(own) and "+" not in requested and "#" not in requested:
            return requested
        if requested:
            self._log_limited(
                "response_topic", f"{device_id} asked for replies on {requested}; using its own"
            )
        return own + "quotes"

    def _log_limited(self, reason: str, text: str) -> None:
        self.counts[f"rejected_{reason}"] += 1
        _log_rarely(self.counts[f"rejected_{reason}"], text)

    # -- MQTT ---------------------------------------------------------------------------------------
    def _make_client(self) -> GuardedClient:
        cfg = self.config
        security = Security(cfg.username, cfg.password_file, False, cfg.ca_file, cfg.cert_file, cfg.key_file)
        will = json.dumps({"state": "offline", "instance": cfg.instance}).encode()
        client = make_client(f"pricing-{cfg.instance}", security, Will(self.status_topic, will), where="")
        client.on_connect = lambda _c, _u, _f, reason, _p: self._requests.put_control(f"connected:{reason}")
        client.on_subscribe = lambda _c, _u, _m, codes, _p: self._requests.put_control(
            "subscribed:" + ",".join("refused" if code.is_failure else "granted" for code in codes)
        )
        client.on_message = self._on_message
        client.max_inflight_messages_set(REPLIES_IN_FLIGHT)
        client.max_queued_messages_set(REPLIES_QUEUED)
        # paho's own reconnect doubles its delay with no jitter (and takes whole seconds): a random first
        # step of 1-3 s keeps copies that lost the broker together from coming back in step.
        client.reconnect_delay_set(min_delay=random.randint(1, 3), max_delay=30)
        return client

    def reload(self, catalogs: Catalogs) -> None:
        """Serve from `catalogs` from the next message on (SIGHUP: `systemctl reload pricing`). The
        worker reads the attribute once per message, so a message is priced wholly by the old set or
        wholly by the new one."""
        self._max_payload = max(self._max_payload, self._largest_payload(catalogs))
        self.catalogs = catalogs
        log.info("catalogs reloaded: %s", ", ".join(f"{m} {v}" for m, v in catalogs.pricers))
        if self._serving:
            self._publish(self.status_topic, json.dumps(self._online()).encode(), retain=True)

    @property
    def status_topic(self) -> str:
        return f"pricing/{self.config.instance}/status"

    def _on_message(self, _c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        props = message.properties
        size = len(message.payload)
        request = Request(
            message.topic,
            bytes(message.payload) if size <= self._max_payload else b"",
            getattr(props, "ResponseTopic", None),
            getattr(props, "CorrelationData", None),
            getattr(props, "ContentType", None),
            time.perf_counter(),
            _epoch(getattr(props, "UserProperty", ())),
            size if size > self._max_payload else -1,
        )
        # Full (counted in the queue): the worker is behind on this device, or on everybody.
        self._requests.put(message.topic, request)

    def run(self, stop: threading.Event, ready: threading.Event | None = None) -> None:
        cfg = self.config
        metrics = self._serve_metrics()
        self._client.connect_async(cfg.host, cfg.port, keepalive=30)
        self._client.loop_start()
        log.info(
            "pricing service %s: %d items in %s, %s index, broker %s:%d",
            cfg.instance,
            self.catalogs.items,
            ", ".join(f"{m} {v}" for m, v in self.catalogs.pricers),
            self.catalogs.index_kind,
            cfg.host,
            cfg.port,
        )
        next_stats = time.monotonic() + cfg.stats_interval_s
        try:
            while not stop.is_set():
                self._serve_one(ready)
                if time.monotonic() >= next_stats:
                    self._publish(f"pricing/{cfg.instance}/stats", json.dumps(self.stats()).encode(), qos=0)
                    next_stats = time.monotonic() + cfg.stats_interval_s
        finally:
            self._publish(
                self.status_topic,
                json.dumps({"state": "offline", "instance": cfg.instance}).encode(),
                retain=True,
            )
            self._client.disconnect()
            self._client.loop_stop()
            if metrics is not None:
                metrics.shutdown()
                metrics.server_close()

    def _serve_metrics(self) -> WSGIServer | None:
        cfg = self.config
        if not cfg.metrics_port:
            return None
        server, _thread = start_http_server(
            cfg.metrics_port, cfg.metrics_host, registry=self.metrics.registry
        )
        log.info("metrics on http://%s:%d/metrics", cfg.metrics_host, cfg.metrics_port)
        return server

    def _serve_one(self, ready: threading.Event | None) -> None:
        item = self._requests.get(timeout=0.1)
        if item is None:
            return
        if isinstance(item, str):  # a connection event: (re)subscribe; once granted, say we are online
            if item.startswith("subscribed:"):
                self._on_subscribed(item, ready)
            else:
                self._on_connected(item)
            return
        try:
            reply = self.handle(item)
        except Exception:
            log.exception("internal error on %s; message dropped", item.topic)
            self.counts["internal_errors"] += 1
            return
        if reply is not None:
            self.send_reply(reply)
            seconds = time.perf_counter() - item.received
            self.latency_ms.add(seconds * 1e3)
            self.metrics.quote_seconds.observe(seconds)

    def send_reply(self, reply: Reply) -> None:
        """Publish a quote (QoS 1). paho keeps every unacknowledged one; past REPLIES_QUEUED the reply is
        dropped and counted: a flood answered faster than the broker acknowledges must not grow the
        service's memory (issue 11: RSS after a flood)."""
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        props.ContentType = "application/json"
        if reply.correlation is not None:
            props.CorrelationData = reply.correlation
        info = self._client.publish(reply.topic, reply.payload, qos=1, properties=props)
        if info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:
            self.counts["reply_backlog"] += 1
            _log_rarely(
                self.counts["reply_backlog"],
                f"quote to {reply.topic} dropped: {REPLIES_QUEUED} unacknowledged",
            )

    def _on_connected(self, event: str) -> None:
        if not event.endswith("Success"):
            log.error("broker refused the connection: %s", event.split(":", 1)[1])
            return
        self._client.subscribe(self._requests_filter, qos=1)
        self.counts["connects"] += 1

    def _on_subscribed(self, event: str, ready: threading.Event | None) -> None:
        """Online only once the broker has granted the subscription: before its SUBACK, a device's
        request finds nobody in the group and is lost, so nobody may be told this copy serves."""
        if event != "subscribed:granted":
            self.counts["refused_subscriptions"] += 1
            log.error(
                "the broker refused %s: this identity may not join the pricing group (deploy/mosquitto/acl"
                " and the share_guard plugin's pricing identities)",
                self._requests_filter,
            )
            return
        self._serving = True
        self._publish(self.status_topic, json.dumps(self._online()).encode(), retain=True)
        log.info("connected; serving %s", self._requests_filter)
        if ready is not None:
            ready.set()

    @property
    def _requests_filter(self) -> str:
        cfg = self.config
        return f"$share/{cfg.share_group}/{cfg.topic_prefix}/+/objects"

    def _online(self) -> dict[str, Any]:
        return {
            "state": "online",
            "instance": self.config.instance,
            "items": self.catalogs.items,
            "catalogs": self.catalogs.describe(),
        }

    def _publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        self._client.publish(topic, payload, qos=qos, retain=retain)

    def stats(self) -> dict[str, Any]:
        return {
            "instance": self.config.instance,
            "items": self.catalogs.items,
            "catalogs": self.catalogs.describe(),
            "index": self.catalogs.index_kind,
            "counts": {
                **self.counts,
                **self._requests.dropped,
                "refused_packets": self._client.refused_packets,
                "duplicates": self.dedupe.duplicates,
                "epoch_changes": self.dedupe.resets,
                "forgotten": self.dedupe.forgotten,
            },
            "queue": self._requests.qsize(),
            "queue_senders": self._requests.senders(),
            "latency_ms": {"p50": _r(self.latency_ms.get(50)), "p99": _r(self.latency_ms.get(99))},
        }


def _log_rarely(count: int, text: str) -> None:
    log_rarely(log, logging.WARNING, count, text)


def _epoch(user_properties: object) -> str:
    """The sequence epoch among the user properties; anything but 16 lowercase hex digits (the form the
    device draws, docs/wire.md) counts as none."""
    if not isinstance(user_properties, list):
        return ""
    for key, value in user_properties:
        if key == EPOCH_PROPERTY:
            return value if isinstance(value, str) and _EPOCH.fullmatch(value) else ""
    return ""


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
