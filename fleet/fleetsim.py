"""Simulated devices' messages for the exporter's benchmark and tests: a stats message shaped like the
daemon's (docs/topics.md, device/telemetry.py), with figures that differ per device and per report."""

from __future__ import annotations

import json
import random
from typing import Any

MODEL = {"version": "1.0.0", "accelerator": "edgetpu", "cpu_fallback": False, "reason": ""}


def stats_message(device: int, report: int, rng: random.Random) -> dict[str, Any]:
    fps = round(rng.uniform(10, 30), 2)
    return {
        "device_id": device_id(device),
        "version": "0.1.0",
        "time": 1_796_000_000.0 + report * 10,
        "uptime_s": report * 10.0,
        "fps": {"camera": fps, "processed": fps, "detected": fps / 3, "skipped": 0.0, "embedded": 0.4},
        "totals": {k: report * 300 for k in ("camera", "processed", "detected", "skipped", "embedded")},
        "stage_ms": {"detect": rng.uniform(8, 12), "track": 0.1, "embed": 2.7, "publish": 1.1},
        "latency_ms": {"p50": rng.uniform(30, 40), "p99": rng.uniform(40, 60)},
        "pace": {
            "detect_every": 1,
            "max_fps": 0.0,
            "embed_budget_per_s": 0.0,
            "paused": False,
            "reason": "config",
        },
        "models": {
            "detector": {"id": "ssdlite-mobiledet-int8", **MODEL},
            "embedder": {"id": "efficientnet-lite0-int8", **MODEL},
        },
        "camera": {
            "state": "running",
            "frames": report * 300,
            "skipped": 0,
            "reopens": 0,
            "crashes": 0,
            "last_error": "",
        },
        "link": {
            "connected": True,
            "connects": 1,
            "disconnects": 0,
            "published": report * 5,
            "publish_failed": 0,
            "received": report * 4,
            "crashes": 0,
            "last_crash": "",
            "incoming_dropped": 0,
        },
        "embeds_deferred": 0,
        "not_stored": 0,
        "outbox": {
            "depth": rng.randrange(3),
            "bytes": 0,
            "oldest_age_s": 0.0,
            "drops": {"expired": 0},
            "enqueue_p99_ms": 1.2,
            "quarantined": [],
            "last_error": "",
            "inflight": 0,
            "sent": report,
            "acked": report,
            "resends": 0,
            "rejected": 0,
            "drain_rate_per_s": 0.0,
        },
        "temperatures": {
            "cpu_c": round(rng.uniform(45, 70), 1),
            "tpu_c": {"apex_0": round(rng.uniform(40, 60), 1)},
            "tpu_failed": [],
            "throttle": {
                "under_voltage": False,
                "freq_capped": False,
                "throttled": False,
                "soft_temp_limit": False,
                "under_voltage_since_boot": False,
                "throttled_since_boot": False,
            },
            "battery_percent": "unknown",
            "on_battery": "unknown",
        },
        "ota": {"state": "idle", "step": None, "health_windows": {}, "pins": {}, "refused": [], "last": None},
    }


def status_message(device: int) -> dict[str, Any]:
    return {
        "state": "online",
        "version": "0.1.0",
        "camera": "running",
        "models": stats_message(device, 0, random.Random(device))["models"],
    }


def device_id(device: int) -> str:
    return f"shop-{device:05d}"


def encode(body: dict[str, Any]) -> bytes:
    return json.dumps(body).encode()
