"""`fleet-exporter bench`: can one core take a fleet's stats, and what does a device cost in memory?

The load: `--devices` devices (10,000) each reporting every `--interval-s` (10 s), so 1,000 stats
messages a second, and Prometheus scraping every 15 s. Measured in one run, on this machine:
- CPU per message through the whole exporter (paho's parsing, the callback, the store), with the
  devices publishing through a real local broker from another process: the exporter process's own CPU
  time (getrusage) over the messages it took;
- CPU per scrape of /metrics at that fleet size (over HTTP, as Prometheus asks);
- headroom: the messages one core can take per second, over the fleet's rate (goal: at least 5);
- the scrape's share of a core at the shipped 15 s scrape interval (budget: half), and the headroom
  with intake and scrapes together;
- memory per device: Python heap (tracemalloc) held by the table after every device's status and stats.
"""

from __future__ import annotations

import random
import resource
import subprocess
import sys
import threading
import time
import tracemalloc
import urllib.request
from typing import Any

from device.clock import SystemClock
from fleet.config import ExporterConfig
from fleet.exporter import Exporter
from fleet.fleetsim import device_id, encode, stats_message, status_message
from fleet.state import FleetState
from rigs.broker import free_port, local_broker
from rigs.report import LoadSpan, check, machine_basics, report_out

# What the text report shows above its budget lines.
FIGURES = (
    "devices",
    "memory",
    "taken",
    "missed",
    "cpu_us_per_message",
    "scrape",
    "message_headroom",
    "scrape_core_share",
    "headroom_with_scrapes",
)
SCRAPE_INTERVAL_S = 15.0  # deploy/prometheus/prometheus.yml
HEADROOM_GOAL = 5.0
MEMORY_BUDGET_KB = 20.0  # 10,000 devices in 200 MB


def bench(devices: int, interval_s: float, as_json: bool) -> int:
    load = LoadSpan()
    results: dict[str, Any] = {"devices": devices, "interval_s": interval_s, "memory": memory(devices)}
    results.update(through_broker(devices))
    intake = devices / interval_s * results["cpu_us_per_message"] / 1e6  # core-seconds per second
    scrapes = results["scrape"]["cpu_s"] / SCRAPE_INTERVAL_S
    results["message_headroom"] = round(1.0 / intake, 2) if intake > 0 else None
    results["scrape_core_share"] = round(scrapes, 3)
    results["headroom_with_scrapes"] = round(1.0 / (intake + scrapes), 2) if intake + scrapes > 0 else None
    report = {
        "machine": machine_basics(),
        **results,
        "checks": exporter_checks(results),
        "machine_load": load.report(),
    }
    return report_out(report, as_json, FIGURES)


def exporter_checks(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The budgets; tests/test_fleet_exporter.py feeds these a bad measurement to show each can fail."""
    return [
        check(
            "stats messages one core takes per second / the fleet's rate",
            results["message_headroom"] or 0.0,
            ">=",
            HEADROOM_GOAL,
        ),
        check(
            "share of a core the scrapes take, at the shipped interval",
            results["scrape_core_share"],
            "<=",
            0.5,
        ),
        check("messages the exporter missed", results["missed"], "<=", 0),
        check("memory per device, KB", results["memory"]["kb_per_device"], "<=", MEMORY_BUDGET_KB),
    ]


def memory(devices: int) -> dict[str, Any]:
    rng = random.Random(3)
    messages = [
        (f"appliance/{device_id(d)}/{kind}", encode(body))
        for d in range(devices)
        for kind, body in (("status", status_message(d)), ("stats", stats_message(d, 1, rng)))
    ]
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    state = FleetState("appliance", SystemClock(), 3600.0, devices + 1, 65536)
    for topic, payload in messages:
        state.ingest(topic, payload)
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return {"kb_per_device": round(held / devices / 1024, 2), "mb_total": round(held / 2**20, 1)}


def through_broker(devices: int) -> dict[str, Any]:
    listen = free_port()
    with local_broker() as port:
        exporter = Exporter(ExporterConfig(port=port, listen_port=listen, max_devices=devices + 1))
        stop = threading.Event()
        runner = threading.Thread(target=exporter.run, args=(stop,), daemon=True)
        runner.start()
        try:
            if not exporter.connected.wait(10):
                raise RuntimeError("the exporter did not connect to the benchmark's broker")
            taken, cpu_s, seconds = _publish_and_take(exporter, port, devices)
            scrape = _scrape(listen)
        finally:
            stop.set()
            runner.join(5)
    return {
        "messages": 2 * devices,
        "taken": taken,
        "missed": 2 * devices - taken,
        "cpu_us_per_message": round(cpu_s / max(taken, 1) * 1e6, 2),
        "messages_per_s_offered": round(taken / seconds, 1),
        "scrape": scrape,
    }


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _publish_and_take(exporter: Exporter, port: int, devices: int) -> tuple[int, float, float]:
    def taken() -> int:
        tally = exporter.state.tally()
        return tally.get("status", 0) + tally.get("stats", 0)

    start, cpu = time.monotonic(), _cpu()
    publisher = subprocess.run(
        [sys.executable, "-m", "fleet.bench_publish", str(port), str(devices)],
        capture_output=True,
        timeout=300,
        check=False,
    )
    if publisher.returncode != 0:
        raise RuntimeError(f"the benchmark's publisher failed: {publisher.stderr.decode()[-500:]}")
    deadline, seen = time.monotonic() + 30, -1
    while taken() < 2 * devices and time.monotonic() < deadline and taken() != seen:
        seen = taken()
        time.sleep(0.5)  # a quiet half second after the publisher exited: nothing more is coming
    return taken(), _cpu() - cpu, time.monotonic() - start


def _scrape(port: int) -> dict[str, Any]:
    cpu, start = _cpu(), time.monotonic()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=60) as response:
        body = response.read()
    lines = [line for line in body.decode().splitlines() if line and not line.startswith("#")]
    return {
        "cpu_s": round(_cpu() - cpu, 3),
        "seconds": round(time.monotonic() - start, 3),
        "bytes": len(body),
        "series": len(lines),
    }
