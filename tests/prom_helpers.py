"""Reading Prometheus expositions in tests, with prometheus_client's own parser."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape_text(text: str) -> Samples:
    """Every sample of an exposition, parsed by prometheus_client's own parser (a malformed one raises)."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def sample(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def of_device(samples: Samples, device: str) -> set[str]:
    return {name for name, labels in samples if ("device", device) in labels}
