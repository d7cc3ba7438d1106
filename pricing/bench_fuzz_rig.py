"""The parts of `pricing-service bench fuzz`: a catalog, MQTT clients, the honest device, the attacker.

The attacker runs in its own process. In the bench's process it would compete with the honest device's
client for one interpreter lock, which slows the measurement instead of the service; and where the
machine has two CPUs or more, it and the bench's clients stay off the CPU the service runs on, as an
attacker's own CPU is never the pricing server's.
"""

from __future__ import annotations

import json
import os
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from device.link.tcp import disable_nagle
from device.wire import ObjectMessage, encode
from pricing.bench import queries_near, synthetic
from pricing.catalog import CatalogInfo, Item, write_catalog
from pricing.fuzz import Attack, corpus, properties, template

INFO = CatalogInfo("efficientnet-lite0-int8", "1.0.0", 1280, synthetic=True)
# paho numbers messages 1..65535: waiting for the oldest past this many outstanding keeps the numbers of
# unacknowledged messages from wrapping into each other.
MAX_OUTSTANDING = 30_000


def write_bench_catalog(path: Path) -> ObjectMessage:
    """A 10,000-item catalog at `path`; returns an honest message whose vector is near its items."""
    rng = np.random.default_rng(5)
    vectors = synthetic(10_000, INFO.dim, rng)
    items = (
        Item(f"i{i}", v.tobytes(), 1 / 127, 0, 100.0 + i % 50, "JPY", "sold" if i % 3 else "listed")
        for i, v in enumerate(vectors)
    )
    write_catalog(path, INFO, items)
    return replace(
        template(INFO.model_id, INFO.model_version, INFO.dim),
        scale=1 / 127,
        vector=queries_near(vectors, 1, rng)[0].tobytes(),
    )


def pin(pid: int, service_side: bool) -> None:
    """CPU 0 for the service, the others for everything else (no-op on a one-CPU machine)."""
    cpus = sorted(os.sched_getaffinity(0) if pid == 0 else os.sched_getaffinity(pid))
    if len(cpus) > 1:
        os.sched_setaffinity(pid, {cpus[0]} if service_side else set(cpus[1:]))


class Client:
    def __init__(self, port: int, device_id: str, subscribe: str | None = None) -> None:
        self.device_id = device_id
        self.received: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=device_id, protocol=mqtt.MQTTv5)
        self.client.max_inflight_messages_set(1000)  # the attacker sends as fast as the broker acks
        self.client.on_socket_open = disable_nagle
        self.client.on_message = lambda _c, _u, m: self.received.put(m)
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        if subscribe:
            self.client.subscribe(subscribe, qos=1)
            if not subscribed.wait(10):
                raise RuntimeError("the broker did not acknowledge a subscription")

    def send(self, attack: Attack) -> mqtt.MQTTMessageInfo:
        topic = f"appliance/{self.device_id}/objects"
        return self.client.publish(topic, attack.payload, qos=1, properties=properties(attack))

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


class Honest:
    """A device sending a few objects per second, one at a time, timing each quote's round trip."""

    def __init__(self, port: int, message: ObjectMessage) -> None:
        self.client = Client(port, "shop-1", "appliance/shop-1/quotes")
        self.message = message
        self.seq = 0
        self.sent = 0

    def until(self, deadline: float) -> list[tuple[float, float]]:
        """(sent at, round trip ms) for each request sent before `deadline` (perf_counter)."""
        samples = []
        while time.perf_counter() < deadline:
            self.seq += 1
            payload = encode(self.message.with_seq(self.seq))
            start = time.perf_counter()
            self.client.send(Attack("honest", payload, response_topic="appliance/shop-1/quotes"))
            self.sent += 1
            while json.loads(self.client.received.get(timeout=30).payload)["seq"] != self.seq:
                pass
            samples.append((start, (time.perf_counter() - start) * 1e3))
            time.sleep(0.01)  # a few objects per second, as a device sends them
        return samples


@dataclass(frozen=True)
class AttackPlan:
    attacks: int  # messages of the pricing/fuzz.py corpus
    sparse: int  # then valid messages with scattered sequence numbers
    rate: float  # messages per second while `go` is set; 0 = as fast as the client can
    seed: int
    cycle: bool  # start the list again when it runs out (until `stop`)


def attacker(port: int, plan: AttackPlan, sync: tuple[Any, ...]) -> None:
    """The attacking device's process. It sends while `go` is set, until `stop` or the end of its list,
    then records its sending time and count and sets `done`."""
    started, go, stop, done, took, sent = sync
    pin(0, service_side=False)
    evil = Client(port, "evil")
    messages = attack_list(plan)
    outstanding: deque[mqtt.MQTTMessageInfo] = deque()
    started.set()
    sending = 0.0
    try:
        n = 0
        while not stop.is_set() and (plan.cycle or n < len(messages)):
            if not go.wait(0.1):
                continue
            begun, burst = time.perf_counter(), 0
            while go.is_set() and not stop.is_set() and (plan.cycle or n < len(messages)):
                outstanding.append(evil.send(messages[n % len(messages)]))
                n, burst = n + 1, burst + 1
                if len(outstanding) > MAX_OUTSTANDING:
                    outstanding.popleft().wait_for_publish(60)
                if plan.rate and burst % 10 == 0:  # paced in steps of ten messages
                    time.sleep(max(0.0, begun + burst / plan.rate - time.perf_counter()))
            sending += time.perf_counter() - begun
        if outstanding:
            outstanding[-1].wait_for_publish(120)
        took.value, sent.value = sending, n
    finally:
        evil.close()
        done.set()


def attack_list(plan: AttackPlan) -> list[Attack]:
    base = template(INFO.model_id, INFO.model_version, INFO.dim)
    scattered = np.random.default_rng(plan.seed).integers(1, 2**63, plan.sparse)
    return [
        *corpus(plan.attacks, seed=plan.seed, base=base, device="evil"),
        *(Attack("sparse_seq", encode(base.with_seq(int(s)))) for s in scattered),
    ]
