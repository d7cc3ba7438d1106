"""`pricing-service bench fuzz`: one hostile device against the real service, through a real broker.

The service runs as its own process (so its memory is its own) on a 10,000-item catalog. An honest
device measures its quote round trip, one request at a time, before the attack and during it. The
attacker then sends the seeded corpus of pricing/fuzz.py (every kind of bad message) followed by valid
messages with scattered sequence numbers, as fast as its client can. Reported: the attack's rate, what
the service made of every message, its RSS before and after, and the honest device's p99 during the
attack over its p99 before, measured side by side in the one run.
"""

from __future__ import annotations

import json
import multiprocessing
import queue
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
import psutil
from paho.mqtt.enums import CallbackAPIVersion

from device.commands.bench_broker import local_broker
from device.commands.bench_support import check, machine, report_out
from device.link.tcp import disable_nagle
from device.wire import ObjectMessage, encode
from pricing.bench import queries_near, synthetic
from pricing.catalog import CatalogInfo, Item, write_catalog
from pricing.fuzz import Attack, corpus, properties, template

INFO = CatalogInfo("efficientnet-lite0-int8", "1.0.0", 1280, synthetic=True)
ROOT = Path(__file__).resolve().parents[1]


def _catalog(path: Path) -> ObjectMessage:
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


class _Client:
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


def _round_trips(
    honest: _Client, message: ObjectMessage, first_seq: int, stop: Callable[[int], bool]
) -> list[float]:
    """Quote round trips in ms, one request at a time, until `stop(samples so far)`."""
    times: list[float] = []
    seq = first_seq
    while not stop(len(times)):
        request = Attack("honest", encode(message.with_seq(seq)), response_topic="appliance/shop-1/quotes")
        start = time.perf_counter()
        honest.send(request)
        while json.loads(honest.received.get(timeout=30).payload)["seq"] != seq:
            pass
        times.append((time.perf_counter() - start) * 1e3)
        seq += 1
        time.sleep(0.01)  # a few objects per second, as a device sends them
    return times


def _attacker(port: int, sizes: tuple[int, int], sync: tuple[Any, Any, Any]) -> None:
    """The attacking device, in its own process: in the bench's process it would compete with the
    honest device's client for one interpreter lock and slow the measurement, not the service."""
    started, done, took = sync
    evil = _Client(port, "evil")
    messages = _attacks(*sizes)
    started.set()
    start = time.perf_counter()
    last = None
    for attack in messages:
        last = evil.send(attack)
    if last is not None:
        last.wait_for_publish(120)
    took.value = time.perf_counter() - start
    evil.close()
    done.set()


def _attacks(attacks: int, sparse: int) -> list[Attack]:
    """The seeded corpus, then valid messages with scattered sequence numbers."""
    base = template(INFO.model_id, INFO.model_version, INFO.dim)
    rng = np.random.default_rng(9)
    scattered = rng.integers(1, 2**63, sparse)
    return [
        *corpus(attacks, seed=11, base=base, device="evil"),
        *(Attack("sparse_seq", encode(base.with_seq(int(s)))) for s in scattered),
    ]


def _service_stats(watch: _Client, expected: int, timeout: float = 120) -> dict[str, Any]:
    """The service's stats once it has accounted for `expected` messages and its queue is empty."""
    deadline = time.monotonic() + timeout
    stats: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            stats = json.loads(watch.received.get(timeout=1).payload)
        except queue.Empty:
            continue
        if stats["queue"] == 0 and _accounted(stats["counts"]) >= expected:
            return stats
    return stats


def _accounted(counts: dict[str, int]) -> int:
    """Every message the service saw: handled, refused as unparsable, or dropped from a full line."""
    keys = ("received", "refused_packets", "device_backlog", "overloaded")
    return sum(counts.get(k, 0) for k in keys)


def fuzz_checks(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's goals; tests/test_bench.py feeds these a bad measurement to show each can fail."""
    return [
        check("RSS growth MB after the attack", result["rss_growth_mb"], "<=", 10.0),
        check("honest p99 during / before the attack", result["p99_ratio"], "<=", 2.0),
        check("service reconnects during the attack", result["reconnects"], "<=", 0),
        check("attack messages the service did not account for", result["unaccounted"], "<=", 0),
    ]


def bench_fuzz(attacks: int, sparse: int, as_json: bool) -> int:
    result = run_fuzz(attacks, sparse)
    report = {"machine": machine(), "fuzz": result, "checks": fuzz_checks(result)}
    return report_out(report, as_json)


def run_fuzz(attacks: int, sparse: int) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="bench-fuzz-"))
    honest_message = _catalog(workdir / "catalog.sqlite")
    with local_broker() as port:
        service = _start_service(workdir / "catalog.sqlite", port)
        try:
            return _measure(port, service, honest_message, attacks, sparse)
        finally:
            service.terminate()
            service.wait(10)


def _start_service(catalog: Path, port: int) -> subprocess.Popen[bytes]:
    args = [
        "run",
        "--catalog",
        str(catalog),
        "--port",
        str(port),
        "--index",
        "hnsw",
        "--stats-interval-s",
        "0.5",
    ]
    return subprocess.Popen(
        [sys.executable, "-m", "pricing", *args],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _measure(
    port: int, service: subprocess.Popen[bytes], honest_message: ObjectMessage, attacks: int, sparse: int
) -> dict[str, Any]:
    watch = _Client(port, "bench-watch", "pricing/pricing-1/stats")
    watch.received.get(timeout=60)  # the service is up and publishing
    honest = _Client(port, "shop-1", "appliance/shop-1/quotes")
    process = psutil.Process(service.pid)
    before = _round_trips(honest, honest_message, 1, lambda n: n >= 300)
    rss_before = process.memory_info().rss
    spawn = multiprocessing.get_context("spawn")
    started, done, took = spawn.Event(), spawn.Event(), spawn.Value("d", 0.0)
    attacker = spawn.Process(target=_attacker, args=(port, (attacks, sparse), (started, done, took)))
    attacker.start()
    if not started.wait(120):
        raise RuntimeError("the attacker did not start")
    during = _round_trips(honest, honest_message, 1000, lambda _n: done.is_set())
    attacker.join(60)
    sent = attacks + sparse
    stats = _service_stats(watch, sent + len(before) + len(during))
    rss_after = process.memory_info().rss
    for client in (watch, honest):
        client.close()
    p99_before, p99_during = (float(np.percentile(t, 99)) for t in (before, during))
    counts = stats.get("counts", {})
    return {
        "attack_messages": sent,
        "attack_s": round(took.value, 2),
        "attack_messages_per_s": round(sent / took.value),
        "service_counts": counts,
        "honest_samples": {"before": len(before), "during": len(during)},
        "honest_p50_ms": {"before": _ms(np.median(before)), "during": _ms(np.median(during))},
        "honest_p99_ms": {"before": _ms(p99_before), "during": _ms(p99_during)},
        "p99_ratio": round(p99_during / p99_before, 3),
        "rss_mb": {"before": round(rss_before / 2**20, 1), "after": round(rss_after / 2**20, 1)},
        "rss_growth_mb": round((rss_after - rss_before) / 2**20, 1),
        "reconnects": counts.get("connects", 0) - 1,
        "unaccounted": sent + len(before) + len(during) - _accounted(counts),
    }


def _ms(value: float) -> float:
    return round(float(value), 3)
