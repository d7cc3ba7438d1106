"""`pricing-service bench`: index build, memory, query latency and recall at a million items, and the
quote round trip from a device's publish to its receipt, through a loopback broker.

The catalogs are synthetic: clustered vectors (10,000 clusters, like many items of a few thousand kinds),
generated in seconds instead of embedding a million images.
"""

from __future__ import annotations

import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from device.commands.bench_support import LoadSpan, check, machine, report_out
from pricing.index import ExactIndex, HnswIndex

CLUSTERS = 10_000
CHUNK = 100_000
K = 20


def synthetic(items: int, dim: int, rng: np.random.Generator) -> npt.NDArray[np.int8]:
    """Unit vectors around CLUSTERS centres, quantised to int8 x127, built in chunks to bound memory."""
    centres = rng.normal(size=(CLUSTERS, dim)).astype(np.float32)
    out = np.empty((items, dim), dtype=np.int8)
    for start in range(0, items, CHUNK):
        n = min(CHUNK, items - start)
        x = centres[rng.integers(0, CLUSTERS, n)] + 0.5 * rng.normal(size=(n, dim)).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        out[start : start + n] = np.clip(np.rint(x * 127), -127, 127).astype(np.int8)
    return out


def queries_near(
    vectors: npt.NDArray[np.int8], count: int, rng: np.random.Generator, noise: float = 0.6
) -> npt.NDArray[np.int8]:
    """New photos of catalogued kinds of items: catalog vectors plus noise of norm `noise`. 0.6 gives a
    nearest neighbour at cosine 0.86 (a camera crop of a catalogued kind of item: the demo's are at
    0.96-0.999); 1.2 gives 0.64, a hard query with many near-ties among its neighbours."""
    base = vectors[rng.integers(0, len(vectors), count)].astype(np.float32) / 127
    x = base + noise * rng.normal(size=base.shape).astype(np.float32) / np.sqrt(base.shape[1])
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    quantised: npt.NDArray[np.int8] = np.clip(np.rint(x * 127), -127, 127).astype(np.int8)
    return quantised


def _latencies(index: Any, queries: npt.NDArray[np.int8]) -> tuple[list[float], list[set[int]]]:
    times, found = [], []
    for q in queries:
        start = time.perf_counter()
        ids, _ = index.search(q, K)
        times.append((time.perf_counter() - start) * 1e3)
        found.append(set(ids.tolist()))
    return times, found


def bench_size(items: int, dim: int, queries: int) -> dict[str, Any]:
    rng = np.random.default_rng(dim)
    started = time.perf_counter()
    vectors = synthetic(items, dim, rng)
    generated = time.perf_counter() - started
    started = time.perf_counter()
    hnsw = HnswIndex(vectors)
    built = time.perf_counter() - started
    exact = ExactIndex(vectors)
    exact_ms, _ = _latencies(exact, queries_near(vectors, 5, rng))  # a few: each one reads every vector
    result: dict[str, Any] = {
        "items": items,
        "dim": dim,
        "generate_s": round(generated, 1),
        "hnsw_build_s": round(built, 1),
        "vectors_mb": round(vectors.nbytes / 2**20, 1),
        "hnsw_mb": round(hnsw.memory_bytes / 2**20, 1),
        "exact_query_ms_p50": round(statistics.median(exact_ms), 1),
    }
    for name, noise in (("typical", 0.6), ("hard", 1.2)):
        qs = queries_near(vectors, queries, rng, noise)
        truth, truth_sims = exact.search_many(qs, K)
        approx_ms, found = _latencies(hnsw, qs)
        recall = statistics.fmean(len(f & set(t.tolist())) / K for f, t in zip(found, truth, strict=True))
        p50 = float(np.percentile(approx_ms, 50))
        result[name] = {
            "nearest_similarity_p50": round(float(np.median(truth_sims[:, 0])), 3),
            "query_ms": {"p50": round(p50, 3), "p99": round(float(np.percentile(approx_ms, 99)), 3)},
            "qps_one_thread": round(1000 / statistics.fmean(approx_ms), 1),
            "speedup_vs_exact": round(statistics.median(exact_ms) / p50, 1),
            f"recall_at_{K}": round(recall, 4),
        }
    return result


def quote_round_trip(samples: int = 200) -> dict[str, Any]:
    """From the device storing an object message (outbox) to its quote arriving back at the device:
    the real Outbox, Drainer and Link on one side, the real PricingService on the other."""
    from device.clock import SystemClock  # noqa: PLC0415 - only this part needs the device's link
    from device.commands.bench_broker import local_broker  # noqa: PLC0415
    from device.config import MqttConfig, OutboxConfig  # noqa: PLC0415
    from device.link.drain import Drainer  # noqa: PLC0415
    from device.link.mqtt import Link  # noqa: PLC0415
    from device.link.outbox import Outbox  # noqa: PLC0415
    from device.link.topics import Topics  # noqa: PLC0415
    from device.wire import ObjectMessage  # noqa: PLC0415
    from pricing.catalog import CatalogInfo, Item, load_catalog, write_catalog  # noqa: PLC0415
    from pricing.config import ServiceConfig  # noqa: PLC0415
    from pricing.pricer import Pricer  # noqa: PLC0415
    from pricing.service import PricingService  # noqa: PLC0415

    rng = np.random.default_rng(5)
    vectors = synthetic(10_000, 1280, rng)
    path = Path(tempfile.mkdtemp(prefix="bench-catalog-")) / "catalog.sqlite"
    info = CatalogInfo("efficientnet-lite0-int8", "1.0.0", 1280, synthetic=True)
    write_catalog(
        path,
        info,
        (
            Item(f"i{i}", v.tobytes(), 1 / 127, 0, 100.0 + i % 50, "JPY", "sold" if i % 3 else "listed")
            for i, v in enumerate(vectors)
        ),
    )
    message = ObjectMessage(
        0,
        0,
        1,
        0,
        "cup",
        0.9,
        (0.1, 0.1, 0.5, 0.5),
        info.model_id,
        info.model_version,
        1 / 127,
        0,
        queries_near(vectors, 1, rng)[0].tobytes(),
    )
    with local_broker() as port:
        config = ServiceConfig(port=port, catalog=path, index="hnsw")
        service = PricingService(config, Pricer(load_catalog(path), config))
        stop, ready = threading.Event(), threading.Event()
        thread = threading.Thread(target=service.run, args=(stop, ready), daemon=True)
        thread.start()
        ready.wait(10)
        outbox_config = OutboxConfig()
        outbox = Outbox(path.with_name("outbox.sqlite"), outbox_config, SystemClock())
        link = Link(
            MqttConfig(port=port),
            Topics("appliance", "bench"),
            dict,
            Drainer(outbox, outbox_config, SystemClock()),
        )
        link.start()
        while not link.stats.connected:
            time.sleep(0.01)
        times = []
        for _ in range(samples):
            start = time.perf_counter()
            outbox.add(message)
            link.incoming.get(timeout=5)
            times.append((time.perf_counter() - start) * 1e3)
            time.sleep(0.02)  # objects arrive a few per second, not back to back
        link.stop()
        stop.set()
        thread.join(5)
    return {
        "samples": samples,
        "catalog_items": 10_000,
        "index": "hnsw",
        "p50_ms": round(float(np.percentile(times, 50)), 3),
        "p99_ms": round(float(np.percentile(times, 99)), 3),
    }


def bench(items: int, dims: list[int], queries: int, as_json: bool) -> int:
    load = LoadSpan()
    sizes = [bench_size(items, dim, queries) for dim in dims]
    trip = quote_round_trip()
    checks = []
    for s in sizes:
        if s["dim"] == 256:
            typical = s["typical"]
            checks += [
                check(f"p99 query ms at {items}x256", typical["query_ms"]["p99"], "<=", 2.0),
                check(f"recall@{K} at {items}x256", typical[f"recall_at_{K}"], ">=", 0.95),
                check(f"speed-up over exact at {items}x256", typical["speedup_vs_exact"], ">=", 50),
            ]
    checks.append(
        check("quote round trip p50 ms (publish to receipt, no inference)", trip["p50_ms"], "<=", 5.0)
    )
    report = {
        "machine": machine(),
        "sizes": sizes,
        "quote_round_trip": trip,
        "machine_load": load.report(),
        "checks": checks,
    }
    return report_out(report, as_json)
