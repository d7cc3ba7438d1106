"""What the exporter knows of the fleet: each device's latest status and stats, as parsed JSON.

Messages are only parsed and stored here; metrics are built from a snapshot when Prometheus scrapes
(fleet/collector.py). So a stats message costs one JSON parse and a dictionary store, whatever the
number of series, and a scrape sees each device's latest report, never a half-updated one: records are
replaced whole, under a lock, and a snapshot is a shallow copy of the table.

Every device is assumed hostile: a topic with a bad id, a payload that is not a JSON object, NaN or
Infinity, a payload larger than `max_message_bytes`, and a new id beyond `max_devices` are refused and
counted by reason; nothing a device sends can change another device's record.
"""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any

from device.clock import Clock

DEVICE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
KINDS = ("status", "stats")


@dataclass(frozen=True)
class DeviceRecord:
    status: dict[str, Any] | None = None
    stats: dict[str, Any] | None = None
    stats_at: float | None = None  # the exporter's wall clock when the last stats arrived
    seen_at: float = 0.0  # monotonic, last message of either kind


class FleetState:
    def __init__(
        self, prefix: str, clock: Clock, drop_after_s: float, max_devices: int, max_bytes: int
    ) -> None:
        self.prefix = prefix
        self.clock = clock
        self.drop_after_s = drop_after_s
        self.max_devices = max_devices
        self.max_bytes = max_bytes
        self.counts: Counter[str] = Counter()  # "status", "stats", "refused:<reason>", "dropped_devices"
        self.pricing: dict[str, tuple[dict[str, Any], float]] = {}  # instance -> (stats, seen_at)
        self._devices: dict[str, DeviceRecord] = {}
        self._lock = threading.Lock()

    def ingest(self, topic: str, payload: bytes | bytearray) -> str:
        """Store one message; returns what it was ("status", "stats", "pricing") or "refused:<why>"."""
        outcome = self._ingest(topic, payload)
        with self._lock:
            self.counts[outcome] += 1
        return outcome

    def _ingest(self, topic: str, payload: bytes | bytearray) -> str:
        parts = topic.rsplit("/", 2)
        refusal = _refusal(parts, payload, self.max_bytes)
        if refusal is not None:
            return refusal
        base, device_id, kind = parts
        body = _parse(payload)
        if body is None:
            return "refused:not_json_object"
        if base == "pricing":
            return self._pricing(device_id, kind, body)
        return self._store(device_id, kind, body) if base == self.prefix else "refused:topic"

    def _store(self, device_id: str, kind: str, body: dict[str, Any]) -> str:
        now = self.clock.monotonic()
        with self._lock:
            old = self._devices.get(device_id)
            if old is None and len(self._devices) >= self.max_devices:
                return "refused:too_many_devices"
            old = old or DeviceRecord()
            if kind == "status":
                self._devices[device_id] = DeviceRecord(body, old.stats, old.stats_at, now)
            else:
                self._devices[device_id] = DeviceRecord(old.status, body, self.clock.time(), now)
        return kind

    def _pricing(self, instance: str, kind: str, body: dict[str, Any]) -> str:
        if kind != "stats":
            return "refused:topic"
        with self._lock:
            self.pricing[instance] = (body, self.clock.monotonic())
        return "pricing"

    def snapshot(self) -> dict[str, DeviceRecord]:
        """The devices heard from within `drop_after_s`; older ones are forgotten here, for good."""
        cutoff = self.clock.monotonic() - self.drop_after_s
        with self._lock:
            stale = [d for d, r in self._devices.items() if r.seen_at < cutoff]
            for device_id in stale:
                del self._devices[device_id]
            self.counts["dropped_devices"] += len(stale)
            for instance in [i for i, (_, seen) in self.pricing.items() if seen < cutoff]:
                del self.pricing[instance]
            return dict(self._devices)

    def tally(self) -> dict[str, int]:
        with self._lock:
            return dict(self.counts)


def _refusal(parts: list[str], payload: bytes | bytearray, max_bytes: int) -> str | None:
    if len(parts) != 3 or parts[2] not in KINDS:
        return "refused:topic"
    if len(payload) > max_bytes:
        return "refused:too_large"
    return None if DEVICE_ID.match(parts[1]) else "refused:device_id"


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def _parse(payload: bytes | bytearray) -> dict[str, Any] | None:
    try:
        body = json.loads(payload, parse_constant=_refuse_constant)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    return body if isinstance(body, dict) else None
