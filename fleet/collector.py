"""Prometheus metrics, built at scrape time from the fleet's latest reports (fleet/state.py).

A custom collector rather than labelled Gauges: a device that is dropped from the state is gone from the
next scrape with all its series, and a stats message never touches a metric object. Every series has the
label `device`. Figures a device did not report (or reported as "unknown", NaN, or not a number) are left
out, never shown as 0: an absent temperature must not look like a cold one.
Names follow Prometheus's conventions (base units, `_total` for counters, `_info` for text as labels);
docs/fleet.md lists them all.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from device.clock import Clock
from fleet.state import DeviceRecord, FleetState

MAX_LABEL = 120  # free-text labels (a pace reason, an error) are cut to this many characters
THROTTLE_FLAGS = (
    "under_voltage",
    "freq_capped",
    "throttled",
    "soft_temp_limit",
    "under_voltage_since_boot",
    "throttled_since_boot",
)


def number(value: object) -> float | None:
    """A finite number, or None: bools, strings ("unknown"), NaN and infinities are not figures."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def text(value: object) -> str:
    return str(value)[:MAX_LABEL] if value is not None else ""


def section(body: dict[str, Any] | None, key: str) -> dict[str, Any]:
    value = (body or {}).get(key)
    return value if isinstance(value, dict) else {}


class Families:
    """The metric families of one scrape, created on first use."""

    def __init__(self) -> None:
        self._families: dict[str, Metric] = {}

    def gauge(self, name: str, doc: str, labels: dict[str, str], value: object) -> None:
        figure = number(value)
        if figure is not None:
            family = self._families.get(name)
            if family is None:
                family = self._families[name] = GaugeMetricFamily(name, doc, labels=list(labels))
            family.add_metric(list(labels.values()), figure)  # type: ignore[attr-defined]

    def counter(self, name: str, doc: str, labels: dict[str, str], value: object) -> None:
        figure = number(value)
        if figure is not None and figure >= 0:
            family = self._families.get(name + "_total")
            if family is None:
                family = self._families[name + "_total"] = CounterMetricFamily(name, doc, labels=list(labels))
            family.add_metric(list(labels.values()), figure)  # type: ignore[attr-defined]

    def info(self, name: str, doc: str, labels: dict[str, str], values: dict[str, str]) -> None:
        family = self._families.get(name)
        if family is None:
            family = self._families[name] = InfoMetricFamily(name, doc, labels=list(labels))
        family.add_metric(list(labels.values()), values)  # type: ignore[attr-defined]

    def all(self) -> Iterator[Metric]:
        return iter(self._families.values())


class FleetCollector(Collector):
    def __init__(self, state: FleetState, clock: Clock) -> None:
        self.state = state
        self.clock = clock

    def collect(self) -> Iterator[Metric]:
        out = Families()
        now = self.clock.time()
        devices = self.state.snapshot()
        for device_id, record in sorted(devices.items()):
            device_metrics(out, device_id, record, now)
        pricing_metrics(out, self.state)
        exporter_metrics(out, self.state, len(devices))
        return out.all()


def device_metrics(out: Families, device_id: str, record: DeviceRecord, now: float) -> None:
    d = {"device": device_id}
    status = record.status or {}
    out.gauge("appliance_online", "1 if the device's retained status says online", d, status_online(status))
    if record.stats is None:
        return
    stats = record.stats
    out.gauge(
        "appliance_last_stats_age_seconds", "seconds since its last stats", d, now - (record.stats_at or now)
    )
    out.gauge("appliance_uptime_seconds", "the daemon's uptime", d, stats.get("uptime_s"))
    out.info("appliance_build", "firmware version", d, {"version": text(stats.get("version"))})
    for kind, value in section(stats, "fps").items():
        out.gauge("appliance_fps", "frames (or objects) per second by kind", {**d, "kind": kind}, value)
    for kind, value in section(stats, "totals").items():
        out.counter(
            "appliance_frames", "frames (or objects) since start, by kind", {**d, "kind": kind}, value
        )
    for stage, value in section(stats, "stage_ms").items():
        out.gauge("appliance_stage_seconds", "moving average per stage", {**d, "stage": stage}, ms(value))
    for q, key in (("0.5", "p50"), ("0.99", "p99")):
        latency = section(stats, "latency_ms").get(key)
        out.gauge(
            "appliance_frame_latency_seconds", "capture to published", {**d, "quantile": q}, ms(latency)
        )
    pace_metrics(out, d, section(stats, "pace"))
    sensor_metrics(out, d, section(stats, "temperatures"))
    link_metrics(out, d, stats)
    model_metrics(out, d, section(stats, "models") or section(status, "models"))
    ota_metrics(out, d, section(stats, "ota"))


def status_online(status: dict[str, Any]) -> float | None:
    state = status.get("state")
    return {"online": 1.0, "offline": 0.0}.get(state) if isinstance(state, str) else None


def ms(value: object) -> float | None:
    figure = number(value)
    return None if figure is None else figure / 1000.0


def pace_metrics(out: Families, d: dict[str, str], pace: dict[str, Any]) -> None:
    if not pace:
        return
    out.gauge(
        "appliance_pace_detect_every", "the detector runs on every Nth frame", d, pace.get("detect_every")
    )
    out.gauge("appliance_pace_paused", "1 while the pipeline is paused", d, float(pace.get("paused") is True))
    out.info("appliance_pace", "the pace's rung and why", d, {"reason": text(pace.get("reason"))})


def sensor_metrics(out: Families, d: dict[str, str], t: dict[str, Any]) -> None:
    out.gauge("appliance_cpu_temperature_celsius", "CPU temperature", d, t.get("cpu_c"))
    for tpu, value in section(t, "tpu_c").items():
        out.gauge("appliance_tpu_temperature_celsius", "Edge TPU temperature", {**d, "tpu": text(tpu)}, value)
    failed = t.get("tpu_failed")
    if isinstance(failed, list):
        out.gauge("appliance_tpu_dead", "Edge TPUs whose sensor reads as failed", d, float(len(failed)))
    throttle = section(t, "throttle")
    for flag in THROTTLE_FLAGS:
        if isinstance(throttle.get(flag), bool):
            out.gauge("appliance_throttle", "Pi firmware flags", {**d, "flag": flag}, float(throttle[flag]))
    out.gauge("appliance_battery_percent", "battery charge", d, t.get("battery_percent"))
    on_battery = t.get("on_battery")
    if isinstance(on_battery, bool):
        out.gauge("appliance_on_battery", "1 when running on battery", d, float(on_battery))


def link_metrics(out: Families, d: dict[str, str], stats: dict[str, Any]) -> None:
    outbox, link = section(stats, "outbox"), section(stats, "link")
    out.gauge("appliance_outbox_depth", "messages waiting in the outbox", d, outbox.get("depth"))
    out.gauge(
        "appliance_outbox_oldest_age_seconds",
        "age of the oldest waiting message",
        d,
        outbox.get("oldest_age_s"),
    )
    for reason, value in section(outbox, "drops").items():
        out.counter(
            "appliance_outbox_dropped", "messages the outbox dropped", {**d, "reason": text(reason)}, value
        )
    out.gauge(
        "appliance_link_connected", "1 while connected to the broker", d, float(link.get("connected") is True)
    )
    connects = number(link.get("connects"))
    if connects is not None:
        out.counter("appliance_link_reconnects", "connections after the first", d, max(connects - 1, 0.0))
    out.counter(
        "appliance_link_incoming_dropped",
        "commands and quotes dropped at a full queue",
        d,
        link.get("incoming_dropped"),
    )
    out.counter("appliance_objects_not_stored", "objects the outbox refused", d, stats.get("not_stored"))


def model_metrics(out: Families, d: dict[str, str], models: dict[str, Any]) -> None:
    for kind, model in models.items():
        if not isinstance(model, dict):
            continue
        labels = {**d, "kind": text(kind)}
        fallback = model.get("cpu_fallback") is True
        out.gauge(
            "appliance_model_cpu_fallback",
            "1 if the model runs on the CPU for want of a TPU",
            labels,
            float(fallback),
        )
        values = {k: text(model.get(k)) for k in ("id", "version", "accelerator")}
        out.info(
            "appliance_model",
            "the model that runs",
            labels,
            {**values, "cpu_fallback": str(fallback).lower()},
        )


def ota_metrics(out: Families, d: dict[str, str], ota: dict[str, Any]) -> None:
    if not ota:
        return
    out.info(
        "appliance_ota",
        "the updater's state",
        d,
        {"state": text(ota.get("state") or "idle"), "step": text(ota.get("step"))},
    )
    last = section(ota, "last")
    if last:
        labels = {
            **d,
            "outcome": text(last.get("outcome")),
            "kind": text(last.get("kind")),
            "version": text(last.get("version")),
        }
        out.gauge("appliance_ota_last_outcome", "1 for the newest update outcome, by its labels", labels, 1.0)
        out.gauge(
            "appliance_ota_last_outcome_timestamp_seconds",
            "when the newest outcome happened",
            d,
            last.get("at"),
        )


def pricing_metrics(out: Families, state: FleetState) -> None:
    for instance, (stats, _) in sorted(state.pricing.copy().items()):
        labels = {"instance": instance}
        latency = section(stats, "latency_ms")
        for q, key in (("0.5", "p50"), ("0.99", "p99")):
            out.gauge(
                "appliance_quote_latency_seconds",
                "the pricing service's receive-to-reply time",
                {**labels, "quantile": q},
                ms(latency.get(key)),
            )


def exporter_metrics(out: Families, state: FleetState, devices: int) -> None:
    counts = state.tally()
    out.gauge("fleet_exporter_devices", "devices with series", {}, float(devices))
    for key, value in sorted(counts.items()):
        if key.startswith("refused:"):
            out.counter("fleet_exporter_refused", "messages refused, by reason", {"reason": key[8:]}, value)
        elif key == "dropped_devices":
            out.counter("fleet_exporter_dropped_devices", "devices forgotten after drop_after_s", {}, value)
        else:
            out.counter("fleet_exporter_messages", "messages taken, by kind", {"kind": key}, value)
