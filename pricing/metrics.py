"""The pricing service's /metrics (Prometheus, the official prometheus_client), off unless
`metrics_port` is set (deploy/pricing.toml sets 9311; tests start many services on one machine).

Counters and gauges are read from the service's own stats at scrape time (a custom collector: nothing is
counted twice); the quote latency is a real histogram, observed as each reply goes out, so Prometheus
can aggregate it across replicas, which a p99 cannot be.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

# From 1 ms (a quote on a warm index) to 1 s (the talk's cloud round trip, what this is meant to beat).
LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
# What counts as an error, by kind: refusals of the message, of the quote, and drops at the queue.
ERROR_KINDS = {
    "refused": "refused_quote",
    "internal_errors": "internal",
    "refused_packets": "malformed_packet",
    "device_backlog": "device_backlog",
    "overloaded": "overloaded",
}


class PricingMetrics:
    def __init__(self, instance: str, stats: Callable[[], dict[str, Any]]) -> None:
        self.registry = CollectorRegistry()
        self.quote_seconds = Histogram(
            "pricing_quote_latency_seconds",
            "from the object message's arrival to its quote going out",
            ["instance"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        ).labels(instance)
        self.registry.register(_StatsCollector(instance, stats))


class _StatsCollector(Collector):
    def __init__(self, instance: str, stats: Callable[[], dict[str, Any]]) -> None:
        self.instance = instance
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        stats = self.stats()
        counts: dict[str, int] = stats["counts"]
        me = [self.instance]
        errors = CounterMetricFamily(
            "pricing_errors", "object messages that got no quote, by why", labels=["instance", "kind"]
        )
        for key, value in sorted(counts.items()):
            kind = ERROR_KINDS.get(key) or (key[9:] if key.startswith("rejected_") else None)
            if kind is not None:
                errors.add_metric([*me, kind], value)
        arrived = counts.get("received", 0) + sum(
            counts.get(k, 0) for k in ("device_backlog", "overloaded", "refused_packets")
        )
        requests = CounterMetricFamily(
            "pricing_requests", "object messages that reached the service", labels=["instance"]
        )
        requests.add_metric(me, arrived)
        quotes = CounterMetricFamily(
            "pricing_quotes", "answers sent, by status", labels=["instance", "status"]
        )
        for status in ("ok", "insufficient_data", "refused"):
            quotes.add_metric([*me, status], counts.get(status, 0))
        duplicates = CounterMetricFamily(
            "pricing_duplicates", "repeated messages answered from memory", labels=["instance"]
        )
        duplicates.add_metric(me, counts.get("duplicates", 0))
        items = GaugeMetricFamily("pricing_index_items", "catalog items searchable", labels=["instance"])
        items.add_metric(me, stats["items"])
        queue = GaugeMetricFamily("pricing_queue_depth", "object messages waiting", labels=["instance"])
        queue.add_metric(me, stats["queue"])
        catalogs = InfoMetricFamily(
            "pricing_catalog", "a loaded catalog: the embedder it is for", labels=["instance"]
        )
        for catalog in stats["catalogs"]:
            model, version = catalog["model"]
            catalogs.add_metric(
                me, {"model": str(model), "version": str(version), "items": str(catalog["items"])}
            )
        index = InfoMetricFamily("pricing_index", "the search index", labels=["instance"])
        index.add_metric(me, {"kind": str(stats["index"])})
        return iter([errors, requests, quotes, duplicates, items, queue, catalogs, index])
