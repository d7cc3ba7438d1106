"""`appliance bench outbox`: the durable path against plain paho, side by side, on one local broker.

- plain: paho QoS 1 publishes of the same payloads, same in-flight window, waiting for every PUBACK.
- durable: every message committed to the SQLite outbox first, sent by the drainer, deleted on PUBACK.
- backlog: 100k messages stored while offline, then drained at full speed.
"""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from device.clock import SystemClock
from device.commands.bench_broker import local_broker
from device.commands.bench_support import LoadSpan, check, machine, report_out
from device.config import MqttConfig, OutboxConfig
from device.link.drain import Drainer
from device.link.mqtt import Link
from device.link.outbox import Outbox
from device.link.topics import Topics
from device.wire import ObjectMessage, decode, encode

SAMPLE = Path(__file__).resolve().parents[2] / "tests" / "data" / "wire" / "full_1280.bin"


def bench_outbox(messages: int, backlog: int, as_json: bool) -> int:
    load = LoadSpan()
    template = decode(SAMPLE.read_bytes())
    config = OutboxConfig(max_bytes=2**31, drain_rate_per_s=1e9)
    with local_broker() as port:
        plain = _plain(port, template, messages, config.max_inflight)
        durable = _durable(port, template, messages, config, "NORMAL")
        durable_full = _durable(port, template, messages // 4, config, "FULL")
        drained = _backlog(port, template, backlog, config)
    checks = [
        check("durable / plain paho QoS 1 throughput", durable["msg_per_s"] / plain["msg_per_s"], ">=", 0.5),
        check("backlog drain, msg/s", drained["msg_per_s"], ">=", 2000),
    ]
    report = {
        "machine": machine(),
        "payload_bytes": len(SAMPLE.read_bytes()),
        "plain_paho_qos1": plain,
        "durable_normal": durable,
        "durable_full": durable_full,
        "backlog": drained,
        "machine_load": load.report(),
        "checks": checks,
    }
    return report_out(report, as_json)


def _plain(port: int, template: ObjectMessage, count: int, inflight: int) -> dict[str, Any]:
    payload = encode(template)
    acked = threading.Semaphore(0)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.max_inflight_messages_set(inflight)
    client.on_publish = lambda *_: acked.release()
    client.connect("127.0.0.1", port)
    client.loop_start()
    start = time.perf_counter()
    for _ in range(count):
        client.publish("bench/plain", payload, qos=1)
    for _ in range(count):
        acked.acquire()
    seconds = time.perf_counter() - start
    client.loop_stop()
    client.disconnect()
    return {"messages": count, "seconds": round(seconds, 3), "msg_per_s": round(count / seconds, 1)}


def _link(port: int, outbox: Outbox, config: OutboxConfig) -> Link:
    drainer = Drainer(outbox, config, SystemClock())
    return Link(MqttConfig(port=port, stats_interval_s=3600), Topics("bench", "durable"), dict, drainer)


def _wait_connected(link: Link) -> None:
    deadline = time.monotonic() + 10
    while not link.stats.connected and time.monotonic() < deadline:
        time.sleep(0.01)


def _wait_drained(outbox: Outbox, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while outbox.stats().depth and time.monotonic() < deadline:
        time.sleep(0.002)


def _durable(
    port: int, template: ObjectMessage, count: int, config: OutboxConfig, sync: str
) -> dict[str, Any]:
    config = config.model_copy(update={"synchronous": sync})
    outbox = Outbox(Path(tempfile.mkdtemp(prefix="bench-outbox-")) / "outbox.sqlite", config, SystemClock())
    link = _link(port, outbox, config)
    link.start()
    _wait_connected(link)
    start = time.perf_counter()
    for _ in range(count):
        outbox.add(template)
    _wait_drained(outbox, 300)
    seconds = time.perf_counter() - start
    p50, p99 = outbox.enqueue_ms.get(50), outbox.enqueue_ms.get(99)
    link.stop()
    outbox.close()
    return {
        "synchronous": sync,
        "messages": count,
        "seconds": round(seconds, 3),
        "msg_per_s": round(count / seconds, 1),
        "enqueue_ms_p50": round(p50 or 0, 4),
        "enqueue_ms_p99": round(p99 or 0, 4),
    }


def _backlog(port: int, template: ObjectMessage, count: int, config: OutboxConfig) -> dict[str, Any]:
    outbox = Outbox(Path(tempfile.mkdtemp(prefix="bench-backlog-")) / "outbox.sqlite", config, SystemClock())
    filled = time.perf_counter()
    for _ in range(count):
        outbox.add(template)
    fill_seconds = time.perf_counter() - filled
    link = _link(port, outbox, config)
    start = time.perf_counter()
    link.start()
    _wait_drained(outbox, 600)
    seconds = time.perf_counter() - start
    left = outbox.stats().depth
    link.stop()
    outbox.close()
    return {
        "messages": count,
        "fill_seconds": round(fill_seconds, 2),
        "drain_seconds": round(seconds, 2),
        "msg_per_s": round((count - left) / seconds, 1),
        "left": left,
    }
