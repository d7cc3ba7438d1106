"""The MQTT v5 link: one paho client, driven by our own network thread.

- paho callbacks only put events on a queue; the network thread and the app act on them. Nothing is
  ever published from inside a callback.
- Reconnects use our Backoff (exponential with jitter), not paho's built-in delay, which has no jitter
  and would bring a whole fleet back in lock-step after a broker restart. Each step logs one line.
- The retained status topic doubles as the last will, so a device that dies reads "offline".
- Home Assistant's discovery configs (device/link/homeassistant.py) go out with the status: all of them
  on every connect (a broker that lost its retained messages gets them again), then those that changed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from device.backoff import Backoff
from device.config import MqttConfig
from device.link.client import Security, Will, make_client
from device.link.drain import Drainer
from device.link.guarded import GuardedClient
from device.link.outbox import Pending
from device.link.properties import ObjectProperties
from device.link.topics import Topics
from device.ratelog import log_rarely
from device.supervise import supervised
from device.wire import CONTENT_TYPE

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Incoming:
    topic: str
    payload: bytes
    correlation: bytes | None = None


@dataclass
class LinkStats:
    connected: bool = False
    connects: int = 0
    disconnects: int = 0
    published: int = 0
    publish_failed: int = 0
    received: int = 0
    crashes: int = 0  # the network thread failed unexpectedly and was restarted (device/supervise.py)
    last_crash: str = ""
    # Commands and quotes that arrived while the app's queue was full (a stuck consumer).
    incoming_dropped: int = 0


# Retained messages that go out with the status: (topic, payload) for a status (Discovery.messages).
Announce = Callable[[dict[str, Any]], list[tuple[str, bytes]]]


class Link:
    def __init__(
        self,
        config: MqttConfig,
        topics: Topics,
        status: Callable[[], dict[str, Any]],
        drainer: Drainer,
        backoff: Backoff | None = None,
        *,
        announce: Announce | None = None,
    ) -> None:
        self.config = config
        self.topics = topics
        self._status = status  # builds the status payload when (re)connected
        self._announce = announce
        self._announced: dict[str, bytes] = {}  # topic -> payload published since connecting
        self.drainer = drainer  # object messages come from the outbox, through the drainer
        self._object_props = ObjectProperties(CONTENT_TYPE, topics.quotes, drainer.outbox.floor.epoch)
        self.backoff = backoff or Backoff(
            config.reconnect_min_s, config.reconnect_max_s, config.reconnect_jitter
        )
        self.incoming: queue.Queue[Incoming] = queue.Queue(maxsize=1000)
        self.stats = LinkStats()
        # paho runs the callbacks on our network thread (we call loop() there); a deque is the cheapest
        # thread-safe hand-off, and this one carries a PUBACK per object message.
        self._events: deque[tuple[str, Any]] = deque()
        self._stop = threading.Event()
        self._client = self._make_client()
        run = supervised("mqtt", self._run, self._stop, self._crashed)
        self._thread = threading.Thread(target=run, name="mqtt", daemon=True)

    # -- setup -------------------------------------------------------------------------------------
    def _make_client(self) -> GuardedClient:
        # Guarded: a quote or command with a property paho cannot parse costs that message, not the link.
        cfg = self.config
        security = Security(
            cfg.username, cfg.password_file, cfg.tls, cfg.ca_file, cfg.cert_file, cfg.key_file
        )
        will = json.dumps({"state": "offline", "reason": "lost"}).encode()
        client = make_client(
            f"appliance-{self.topics.device_id}", security, Will(self.topics.status, will, _json_props())
        )
        client.connect_timeout = 3.0  # bounds how long a black-holed broker can hold up shutdown
        # The drainer bounds object messages in flight; paho's own window must not be the smaller one, or
        # messages would wait in paho's memory instead of on disk. +4 leaves room for status and stats.
        client.max_inflight_messages_set(self.drainer.config.max_inflight + 4)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        return client

    # -- paho callbacks: trivial, they only enqueue ------------------------------------------------
    def _on_connect(self, _c: mqtt.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Any) -> None:
        self._events.append(("connack", reason))

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Any) -> None:
        self._events.append(("disconnected", reason))

    def _on_publish(self, _c: mqtt.Client, _u: Any, mid: int, reason: ReasonCode, _p: Any) -> None:
        self._events.append(("puback", (mid, reason)))

    def _on_message(self, _c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        self.stats.received += 1
        correlation = getattr(message.properties, "CorrelationData", None)
        # If the consumer is stuck, dropping commands/quotes beats blocking the network thread.
        try:
            self.incoming.put_nowait(Incoming(message.topic, bytes(message.payload), correlation))
        except queue.Full:
            self.stats.incoming_dropped += 1
            log_rarely(
                log, logging.WARNING, self.stats.incoming_dropped, f"{message.topic}: queue full, dropped"
            )

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 1.5) -> None:
        """Let the live messages already stored go out (a third of `timeout` at most), publish a clean
        offline status, disconnect, and end the network thread. The backlog stays in the outbox."""
        deadline = time.monotonic() + timeout / 3
        while self.stats.connected and not self.drainer.settled() and time.monotonic() < deadline:
            time.sleep(0.005)
        if self.stats.connected:
            info = self._client.publish(
                self.topics.status,
                json.dumps({"state": "offline", "reason": "stopped"}),
                qos=1,
                retain=True,
                properties=_json_props(),
            )
            self._stop.set()
            # If the connection went down meanwhile, the will says offline instead.
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(timeout / 2)
        self._stop.set()
        self._client.disconnect()
        self._thread.join(timeout / 2)

    def _run(self) -> None:
        while not self._stop.is_set():
            if self._connect():
                self._serve()
            if not self._stop.is_set():
                delay = self.backoff.next_delay()
                log.warning(
                    "mqtt %s:%d unavailable; retrying in %.1f s", self.config.host, self.config.port, delay
                )
                self._stop.wait(delay)

    def _connect(self) -> bool:
        try:
            self._client.connect(self.config.host, self.config.port, self.config.keepalive_s)
        except (OSError, ValueError) as exc:
            log.debug("mqtt connect failed: %s", exc)
            return False
        return True

    def _serve(self) -> None:
        """Run the network loop until the connection drops or stop() is called."""
        while not self._stop.is_set():
            # A short loop timeout keeps the drain responsive: a new message waits at most this long.
            rc = self._client.loop(timeout=0.01)
            if not self._handle_events() or rc != mqtt.MQTT_ERR_SUCCESS:
                break
            if self.stats.connected:
                self.drainer.pump(self._publish_pending)
        self._connection_lost()

    def _crashed(self, reason: str) -> None:
        """The network thread raised: drop the connection cleanly; the supervisor starts it again."""
        self.stats.crashes += 1
        self.stats.last_crash = reason
        with contextlib.suppress(Exception):
            self._client.disconnect()
        self._connection_lost()

    def _connection_lost(self) -> None:
        # Whatever was on the wire is sent again from the outbox after reconnecting; paho must not
        # resend its own copies as well.
        self._client.drop_out_messages()
        self.drainer.disconnected()
        if self.stats.connected:
            self.stats.connected = False
            self.stats.disconnects += 1
            level = logging.INFO if self._stop.is_set() else logging.WARNING
            log.log(level, "mqtt disconnected from %s:%d", self.config.host, self.config.port)

    def _handle_events(self) -> bool:
        while True:
            try:
                kind, reason = self._events.popleft()
            except IndexError:
                return True
            if kind == "puback":
                mid, code = reason
                self.drainer.acked(mid, code.is_failure, str(code))
                continue
            if kind == "disconnected":
                return False
            if reason.is_failure:
                log.error("mqtt broker refused the connection: %s", reason)
                return False
            self._on_connected()

    def _on_connected(self) -> None:
        self.stats.connected = True
        self.stats.connects += 1
        self.backoff.reset()
        self._announced.clear()
        log.info("mqtt connected to %s:%d", self.config.host, self.config.port)
        self._client.subscribe(
            [(self.topics.commands, 1), (self.topics.quotes, 1), (self.topics.fleet_release, 1)]
        )
        self.publish_status()
        self.drainer.connected()

    # -- publishing (thread-safe: paho guards its queues with locks) -------------------------------
    def publish_status(self) -> None:
        status = self._status()
        for topic, retained in self._announce(status) if self._announce else []:
            if self._announced.get(topic) != retained and self._publish(topic, retained, qos=1, retain=True):
                self._announced[topic] = retained
        payload = json.dumps({"state": "online", **status})
        self._publish(self.topics.status, payload.encode(), qos=1, retain=True, properties=_json_props())

    def _publish_pending(self, item: Pending) -> int | None:
        """Put one outbox message on the wire (link thread only); its MQTT mid, or None if paho refused."""
        props = self._object_props.for_seq(item.seq)
        info = self._client.publish(self.topics.objects, item.payload, qos=1, properties=props)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            return None
        self.stats.published += 1
        return info.mid

    def publish_stats(self, stats: dict[str, Any]) -> bool:
        return self._publish(self.topics.stats, json.dumps(stats).encode(), qos=0, properties=_json_props())

    def publish_bench(self, result: dict[str, Any]) -> bool:
        """A `cmd/bench` reply: QoS 1, so a reply sent while disconnected goes out on reconnecting."""
        payload = json.dumps(result).encode()
        return self._publish(self.topics.bench, payload, qos=1, properties=_json_props())

    def _publish(
        self, topic: str, payload: bytes, qos: int, retain: bool = False, properties: Properties | None = None
    ) -> bool:
        info = self._client.publish(topic, payload, qos=qos, retain=retain, properties=properties)
        # NO_CONN with QoS 1 still queues the message in paho's memory, to go out after reconnecting.
        ok = (
            info.rc in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN)
            if qos
            else info.rc == mqtt.MQTT_ERR_SUCCESS
        )
        if ok:
            self.stats.published += 1
        else:
            self.stats.publish_failed += 1
        return ok


def _publish_props() -> Properties:
    return Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]  # paho leaves it untyped


def _json_props() -> Properties:
    props = _publish_props()
    props.ContentType = "application/json"
    return props
