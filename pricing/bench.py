"""`pricing-service bench`: index build, memory, query latency and recall at a million items of the
dimension the devices send, and the quote round trip from a device's store to its receipt over that
index, through a loopback broker.

The catalogs are synthetic: clustered vectors (10,000 clusters, like many items of a few thousand kinds),
generated in seconds instead of embedding a million images.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from pricing.catalog import load_catalog
from pricing.errors import CatalogError
from pricing.index import ExactIndex, NeighbourIndex, make_index
from pricing.sign_index import SignHnswIndex
from rigs.report import LoadSpan, check, machine_basics, report_out

CLUSTERS = 10_000
CHUNK = 100_000
K = 20
DEVICE_DIM = 1280  # efficientnet-lite0-int8's vector, what the fleet sends (models/manifest.toml)
MIN_SIMILARITY = 0.5  # the service's default: neighbours below it do not count in a quote
WARM_UP = 20
# (candidates re-ranked, expansion_search) for `--scan`: around the default (128, 256).
SCAN = ((64, 128), (128, 128), (128, 256), (256, 256), (512, 512))
Truth = tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]  # exact top-K ids and cosines
QUERY_KINDS = (("typical", 0.6), ("hard", 1.2))


def machine() -> dict[str, Any]:
    from usearch import __version__ as usearch_version  # noqa: PLC0415 - only the benches need it

    return {**machine_basics(), "usearch": usearch_version}


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
    return perturbed(vectors[rng.integers(0, len(vectors), count)], noise, rng)


def perturbed(vectors: npt.NDArray[np.int8], noise: float, rng: np.random.Generator) -> npt.NDArray[np.int8]:
    """Each vector plus random noise of norm `noise`, back to unit length and int8."""
    base = vectors.astype(np.float32) / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-6)
    x = base + noise * rng.normal(size=base.shape).astype(np.float32) / np.sqrt(base.shape[1])
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    quantised: npt.NDArray[np.int8] = np.clip(np.rint(x * 127), -127, 127).astype(np.int8)
    return quantised


def catalog_workload(
    path: Path, queries: int, rng: np.random.Generator
) -> tuple[npt.NDArray[np.int8], dict[str, npt.NDArray[np.int8]]]:
    """A real catalog: `queries` items (a tenth at most) held out as the queries, the rest searched.
    *typical* queries are the held-out items themselves (new photos of catalogued kinds of items);
    *hard* ones are the same with noise of norm 0.6 added."""
    vectors = load_catalog(path).vectors
    count = min(queries, len(vectors) // 10)
    if count < 1:
        raise CatalogError(f"{path}: {len(vectors)} items are too few to hold some out as queries (10+)")
    held = rng.choice(len(vectors), size=count, replace=False)
    rest = np.delete(vectors, held, axis=0)
    return rest, {"typical": vectors[held], "hard": perturbed(vectors[held], 0.6, rng)}


def _latencies(index: Any, queries: npt.NDArray[np.int8]) -> tuple[list[float], list[set[int]]]:
    times, found = [], []
    for q in queries:
        start = time.perf_counter()
        ids, _ = index.search(q, K)
        times.append((time.perf_counter() - start) * 1e3)
        found.append(set(ids.tolist()))
    return times, found


def _spread(ms: list[float]) -> dict[str, float]:
    return {f"p{p}": round(float(np.percentile(ms, p)), 3) for p in (10, 50, 90, 99)}


def _judge(
    index: NeighbourIndex, qs: npt.NDArray[np.int8], truth: Any, truth_sims: Any, exact_p50: float
) -> dict[str, Any]:
    """Recall against the exact top K of the same queries, over all K and over the neighbours that
    count in a quote (similarity >= MIN_SIMILARITY); single-threaded latency."""
    approx_ms, found = _latencies(index, qs)
    recall = statistics.fmean(len(f & set(t.tolist())) / K for f, t in zip(found, truth, strict=True))
    counting = [set(t[s >= MIN_SIMILARITY].tolist()) for t, s in zip(truth, truth_sims, strict=True)]
    hit = sum(len(f & c) for f, c in zip(found, counting, strict=True))
    p50 = float(np.percentile(approx_ms, 50))
    return {
        "nearest_similarity_p50": round(float(np.median(truth_sims[:, 0])), 3),
        "counting_neighbours_p50": int(np.median([len(c) for c in counting])),
        "query_ms": _spread(approx_ms),
        "qps_one_thread": round(1000 / statistics.fmean(approx_ms), 1),
        "speedup_vs_exact": round(exact_p50 / p50, 1),
        f"recall_at_{K}": round(recall, 4),
        "recall_of_counting_neighbours": round(hit / max(1, sum(len(c) for c in counting)), 4),
    }


def _scan(index: SignHnswIndex, sets: dict[str, Any], truths: dict[str, Truth]) -> list[dict[str, Any]]:
    """The sign index's recall and latency at other search widths, on the same graph and queries."""
    rows, before = [], index.search_settings
    for candidates, width in SCAN:
        index.set_search(candidates, width)
        row: dict[str, Any] = {"candidates": candidates, "expansion_search": width}
        for name, qs in sets.items():
            judged = _judge(index, qs, *truths[name], 1.0)
            row[name] = {k: judged[k] for k in (f"recall_at_{K}", "query_ms")}
        rows.append(row)
    index.set_search(*before)
    return rows


def bench_size(
    items: int,
    dim: int,
    *,
    queries: int,
    exact_queries: int,
    kinds: list[str],
    scan: bool = False,
    catalog: Path | None = None,
) -> tuple[dict[str, Any], npt.NDArray[np.int8], NeighbourIndex]:
    """The figures for one catalog (synthetic, items x dim, or a real one), the catalog's vectors, and
    its first index (for the round trip)."""
    rng = np.random.default_rng(dim)
    started = time.perf_counter()
    if catalog is None:
        vectors = synthetic(items, dim, rng)
        sets = {name: queries_near(vectors, queries, rng, noise) for name, noise in QUERY_KINDS}
    else:
        vectors, sets = catalog_workload(catalog, queries, rng)
    result: dict[str, Any] = {
        "catalog": str(catalog) if catalog else "synthetic",
        "items": len(vectors),
        "dim": int(vectors.shape[1]),
        "generate_s": round(time.perf_counter() - started, 1),
        "vectors_mb": round(vectors.nbytes / 2**20, 1),
    }
    exact = ExactIndex(vectors)
    exact_ms, _ = _latencies(exact, queries_near(vectors, exact_queries, rng))
    result["exact_query_ms"] = {"queries": exact_queries, **_spread(exact_ms)}
    truths = {name: exact.search_many(qs, K) for name, qs in sets.items()}
    result["indexes"], first = {}, None
    for kind in kinds:
        started = time.perf_counter()
        index = make_index(kind, vectors)
        figures: dict[str, Any] = {"build_s": round(time.perf_counter() - started, 1)}
        figures["index_mb"] = round(getattr(index, "memory_bytes", 0) / 2**20, 1)
        # A service answers from a warm index: untimed queries of their own first fault its pages in.
        _latencies(index, queries_near(vectors, WARM_UP, rng))
        for name, qs in sets.items():
            figures[name] = _judge(index, qs, *truths[name], statistics.median(exact_ms))
        if scan and isinstance(index, SignHnswIndex):
            figures["scan"] = _scan(index, sets, truths)
        result["indexes"][kind] = figures
        first = first or index
    assert first is not None
    return result, vectors, first


def pricing_checks(sizes: list[dict[str, Any]], trip: dict[str, Any]) -> list[dict[str, Any]]:
    """The search budgets, judged on the default index ("hnsw") at every measured size."""
    checks = []
    for s in sizes:
        at = f"{s['items']}x{s['dim']}"
        checks.append(
            check(f"exact searches in the baseline at {at}", s["exact_query_ms"]["queries"], ">=", 50)
        )
        typical = s["indexes"].get("hnsw", {}).get("typical")
        if typical is None:
            continue
        checks += [
            check(f"p99 query ms at {at}", typical["query_ms"]["p99"], "<=", 2.0),
            check(f"recall@{K} at {at}", typical[f"recall_at_{K}"], ">=", 0.95),
            check(f"speed-up over exact at {at}", typical["speedup_vs_exact"], ">=", 50),
        ]
    at = f"{trip['catalog_items']}x{trip['dim']}"
    checks.append(check(f"store -> quote p50 ms at {at} (no inference)", trip["p50_ms"], "<=", 5.0))
    return checks


def bench(
    items: int,
    dims: list[int],
    *,
    queries: int,
    exact_queries: int,
    kinds: list[str],
    as_json: bool,
    scan: bool = False,
    catalog: Path | None = None,
) -> int:
    from pricing.bench_round_trip import quote_round_trip  # noqa: PLC0415 - needs the device's link

    load = LoadSpan()
    sizes, trip = [], None
    for dim in dims[:1] if catalog else dims:  # a real catalog has its own dimension
        figures, vectors, index = bench_size(
            items, dim, queries=queries, exact_queries=exact_queries, kinds=kinds, scan=scan, catalog=catalog
        )
        sizes.append(figures)
        if trip is None:  # over the first size's index: the devices' dimension by default
            trip = quote_round_trip(vectors, index, queries_near(vectors, 50, np.random.default_rng(7)))
        del vectors, index
    assert trip is not None
    report = {
        "machine": machine(),
        "sizes": sizes,
        "quote_round_trip": trip,
        "machine_load": load.report(),
        "checks": pricing_checks(sizes, trip),
    }
    return report_out(report, as_json)
