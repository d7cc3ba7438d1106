"""Test-side MQTT: a real paho subscriber that records what the broker delivers, and the daemon process."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties


def wait_until(condition: Callable[[], object], timeout: float = 5.0) -> bool:
    """True once `condition()` holds, False at the deadline. For states kept by other threads and files
    (messages received, a log line) that offer no event to wait on."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    retain: bool
    content_type: str | None
    correlation: bytes | None
    at: float

    def json(self) -> Any:
        return json.loads(self.payload)


class Collector:
    """Subscribes to `topic` and keeps every message, in arrival order."""

    def __init__(self, port: int, topic: str = "appliance/#", session: str | None = None) -> None:
        """With `session` (a client id), the broker keeps the subscription and queues messages for this
        subscriber while it is away, across a broker restart too if the broker is persistent."""
        self.messages: list[Received] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=session or "", protocol=mqtt.MQTTv5)
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
        self.client.reconnect_delay_set(1, 2)
        props = None
        if session:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = 3600
        self.client.connect("127.0.0.1", port, clean_start=session is None, properties=props)
        self.client.loop_start()
        assert self._subscribed.wait(5), "subscription not acknowledged"

    def _on_message(self, _c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        props = message.properties
        received = Received(
            message.topic,
            bytes(message.payload),
            bool(message.retain),
            getattr(props, "ContentType", None),
            getattr(props, "CorrelationData", None),
            time.monotonic(),
        )
        with self._lock:
            self.messages.append(received)

    def on(self, suffix: str) -> list[Received]:
        with self._lock:
            return [m for m in self.messages if m.topic.endswith(suffix)]

    def wait_for(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        if not wait_until(predicate, timeout):
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")

    def publish(self, topic: str, payload: bytes | str, qos: int = 1) -> None:
        self.client.publish(topic, payload, qos=qos).wait_for_publish(5)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


TEST_DETECTOR = "ssdlite-person-int8"
DEFAULT_DETECTOR = "centernet-coco-float"  # the product's default (device/config.py)


def daemon_env(port: int, state: Path, device_id: str = "test-dev", **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    env.update(
        {
            "APPLIANCE_DEVICE_ID": device_id,
            "APPLIANCE_STATE_DIR": str(state),
            "APPLIANCE_RUNTIME__DEVICE": "cpu",
            "APPLIANCE_MQTT__PORT": str(port),
            "APPLIANCE_MQTT__RECONNECT_MIN_S": "0.2",
            "APPLIANCE_MQTT__RECONNECT_MAX_S": "1.0",
            "APPLIANCE_MQTT__STATS_INTERVAL_S": "1",
            "APPLIANCE_MQTT__KEEPALIVE_S": "5",
            # 5 fps: the suite runs some 60 daemons on two cores, and what these tests judge (messages,
            # commands, state) comes at any frame rate. Tests of the frame rate or the live view set
            # their own source.
            "APPLIANCE_CAMERA__SOURCE": "images:demo?fps=5&seconds=3",
            # The light person detector: what these tests judge is the daemon, not the detector, and
            # at 15 fps it takes 0.17 of a core here against 0.77 for the default CenterNet float (and
            # half the start-up). Tests of the default model or of COCO's other classes set
            # APPLIANCE_MODELS__DETECTOR themselves (DEFAULT_DETECTOR).
            "APPLIANCE_MODELS__DETECTOR": TEST_DETECTOR,
            # The live view's default port is one for the whole machine: tests that need it
            # (tests/test_live_*.py) turn it on, each on a free port.
            "APPLIANCE_HTTP__ENABLED": "false",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra)
    return env
