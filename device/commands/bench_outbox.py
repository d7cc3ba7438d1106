"""`appliance bench outbox`: the durable path against plain paho, side by side, on one local broker.

- plain: paho QoS 1 publishes of the same payloads, same in-flight window, waiting for every PUBACK.
- durable: every message committed to the SQLite outbox first, sent by the drainer, deleted on PUBACK.
- backlog: 100k messages stored while offline, then drained at full speed.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from device.clock import SystemClock
from device.commands.bench_support import machine, scratch_outbox
from device.config import MqttConfig, OutboxConfig
from device.link.drain import Drainer
from device.link.mqtt import Link
from device.link.outbox import Outbox
from device.link.topics import Topics
from device.wire import ObjectMessage, encode
from rigs.broker import local_broker
from rigs.report import LoadSpan, check, report_out

# A message of the daemon's shape: the embedder's 1280 int8 values, a label, a box. Built here rather
# than read from tests/data/wire (the device image carries no test data): 1,370 bytes encoded, beside
# the pipeline's own 1,373 (docs/benchmarks.md).
TEMPLATE = ObjectMessage(
    seq=1,
    captured_us=1_795_000_001_000_000,
    track_id=7,
    class_id=47,
    label="cup",
    score=0.59,
    box=(0.28, 0.04, 0.69, 0.66),
    model_id="efficientnet-lite0-int8",
    model_version="1.0.0",
    scale=0.0235,
    zero_point=-128,
    vector=bytes(range(256)) * 5,
)
# The demo's message rate, measured by `appliance bench pipeline`'s untimed pass: over the demo sequence
# (240 frames, four photos of 4 s each at 15 fps, i.e. 16 s) the pipeline published 4 object messages
# (the person, the cat, two cups; nothing on the rocket photo), and the sequence then repeats.
DEMO_OBJECTS_PER_S = 4 / (240 / 15)
DEFAULT_RATE_BACKLOG = 2000  # drained at the default drain_rate_per_s: about 4 s at 500/s
OBJECTS_PER_FRAME = 3  # a frame with a few objects (the demo's photos hold one to two each)
SIDE_BY_SIDE_FRAMES = 1500  # frames timed per phase (fewer when --messages asks for a smaller run)


def bench_outbox(messages: int, backlog: int, as_json: bool) -> int:
    load = LoadSpan()
    template = TEMPLATE
    config = OutboxConfig(max_bytes=2**31, drain_rate_per_s=1e9)
    with local_broker() as port:
        plain = _plain(port, template, messages, config.max_inflight)
        durable = _durable(port, template, messages, config, "NORMAL")
        durable_full = _durable(port, template, messages // 4, config, "FULL")
        drained = _backlog(port, template, backlog, config)
        # A smaller run (the tests' --messages 200) shrinks these too; the default run is the full size.
        default_backlog = min(DEFAULT_RATE_BACKLOG, backlog)
        at_default = _backlog(port, template, default_backlog, OutboxConfig(max_bytes=2**31))
        contended = _enqueue_side_by_side(port, template, config, min(SIDE_BY_SIDE_FRAMES, messages))
    report = {
        "machine": machine(),
        "payload_bytes": len(encode(TEMPLATE)),
        "plain_paho_qos1": plain,
        "durable_normal": durable,
        "durable_full": durable_full,
        "durable_over_plain": round(durable["msg_per_s"] / plain["msg_per_s"], 3),
        "backlog": drained,
        "backlog_at_default_rate": {**at_default, **_default_rate_figures(backlog)},
        "enqueue_side_by_side": contended,
        "machine_load": load.report(),
    }
    report["checks"] = outbox_checks(report)
    return report_out(report, as_json)


def outbox_checks(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The outbox's goals, judged on a report (pure, so a test can feed it a bad measurement)."""
    side = report["enqueue_side_by_side"]
    return [
        check("durable / plain paho QoS 1 throughput", report["durable_over_plain"], ">=", 0.5),
        check("backlog drain at full speed, msg/s", report["backlog"]["msg_per_s"], ">=", 2000),
        check(
            "enqueue p99 on the frame thread with the drainer flat out, ms",
            side["draining"]["frame_ms_p99"],
            "<=",
            0.3,
        ),
    ]


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
    with scratch_outbox(config, "bench-outbox-") as outbox:
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
    return {
        "synchronous": sync,
        "messages": count,
        "seconds": round(seconds, 3),
        "msg_per_s": round(count / seconds, 1),
        "enqueue_ms_p50": round(p50 or 0, 4),
        "enqueue_ms_p99": round(p99 or 0, 4),
    }


def _backlog(port: int, template: ObjectMessage, count: int, config: OutboxConfig) -> dict[str, Any]:
    with scratch_outbox(config, "bench-backlog-") as outbox:
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
    return {
        "messages": count,
        "fill_seconds": round(fill_seconds, 2),
        "drain_seconds": round(seconds, 2),
        "msg_per_s": round((count - left) / seconds, 1),
        "left": left,
    }


def _default_rate_figures(backlog: int) -> dict[str, Any]:
    """What the default drain rate means: the large backlog's floor, and a one-hour outage on the demo."""
    rate = OutboxConfig().drain_rate_per_s
    outage = DEMO_OBJECTS_PER_S * 3600
    return {
        "drain_rate_per_s": rate,
        f"backlog_{backlog}_min_seconds": round(backlog / rate, 1),
        "demo_objects_per_s": round(DEMO_OBJECTS_PER_S, 3),
        "one_hour_outage_messages": round(outage),
        "one_hour_outage_drain_seconds": round(outage / rate, 1),
    }


def _frames(outbox: Outbox, template: ObjectMessage, count: int, batched: bool) -> list[float]:
    """Hand `count` frames of OBJECTS_PER_FRAME objects to the outbox as the pipeline does; the time of
    each hand-off, in ms. A 1 ms sleep between frames stands in for inference, which frees the GIL."""
    times = []
    for _ in range(count):
        start = time.perf_counter()
        if batched:
            outbox.add_many([template] * OBJECTS_PER_FRAME)
        else:
            for _ in range(OBJECTS_PER_FRAME):
                outbox.add(template)
        times.append((time.perf_counter() - start) * 1e3)
        time.sleep(0.001)
    return times


def _phase(outbox: Outbox, template: ObjectMessage, batched: bool, frames: int) -> dict[str, float]:
    times = np.array(_frames(outbox, template, frames, batched))
    return {
        "frame_ms_p50": round(float(np.percentile(times, 50)), 4),
        "frame_ms_p99": round(float(np.percentile(times, 99)), 4),
    }


def _enqueue_side_by_side(
    port: int, template: ObjectMessage, config: OutboxConfig, frames: int
) -> dict[str, Any]:
    """The frame thread's hand-off (one add_many per frame) in one run: alone, then while the drainer
    sends a backlog as fast as it can (drain_rate_per_s = 1e9) on the same process and GIL."""
    with scratch_outbox(config, "bench-side-") as outbox:
        alone = _phase(outbox, template, batched=True, frames=frames)
        # Enough backlog that the drainer is still busy when the timed frames end (about 17k msg/s here):
        # 100,000 messages for 1500 frames a phase.
        for _ in range(max(1, 10_000 * frames // SIDE_BY_SIDE_FRAMES)):
            outbox.add_many([template] * 10)
        link = _link(port, outbox, config)
        link.start()
        _wait_connected(link)
        acked = link.drainer.stats.acked
        draining = _phase(outbox, template, batched=True, frames=frames)
        # `add` per object, as the pipeline hands off
        one_by_one = _phase(outbox, template, batched=False, frames=frames)
        busy = outbox.stats().depth > 0  # the drainer never ran out of work while the frames were timed
        sent = link.drainer.stats.acked - acked
        link.stop()
    return {
        "objects_per_frame": OBJECTS_PER_FRAME,
        "frames": frames,
        "alone": alone,
        "draining": {**draining, "drainer_acked_meanwhile": sent, "drainer_busy_throughout": busy},
        "draining_one_add_per_object": one_by_one,
    }
