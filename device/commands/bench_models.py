"""`appliance bench models`: per-model invoke latency with 1 and 2 threads, and the host-side work
(preprocess, decode) timed separately, all measured side by side in one run on the same frame.

The frame is astronaut.png scaled to 640x480, the size of a typical camera stream, so the resize cost
is what the pipeline will really pay.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from device.commands.bench_support import machine
from device.commands.context import Context
from device.images import read_image
from device.vision.detector import StageTimes
from device.vision.embedder import Embedder
from device.vision.geometry import Box
from device.vision.models import make_detector
from device.vision.runtime import InterpreterFactory
from rigs.report import LoadSpan, load_line

# The demo photo (demo/ ships on the device; tests/ does not).
SAMPLE = Path(__file__).resolve().parents[2] / "demo" / "astronaut.png"
THREADS = (1, 2)
# Issue budget: the SSD int8 model's host-side work must cost at most 15% of its invoke time.
SSD_OVERHEAD_BUDGET = 0.15


def bench_models(ctx: Context, iterations: int, as_json: bool, models: list[str] | None = None) -> int:
    """Every model in the manifest, or only `models` (ids; an unknown one is a ModelError naming the
    known ones, before anything is measured)."""
    load = LoadSpan()
    entries = [ctx.manifest.get(m) for m in models] if models else list(ctx.manifest.entries)
    frame = cv2.resize(read_image(SAMPLE), (640, 480), interpolation=cv2.INTER_LINEAR)
    rows = []
    for threads in THREADS:
        runtime = ctx.config.runtime.model_copy(update={"num_threads": threads})
        factory = InterpreterFactory(runtime)
        for entry in entries:
            run = _runner(ctx, factory, entry.id, frame)
            rows.append({"model": entry.id, "threads": threads, **_measure(run, iterations)})
    checks = _checks(rows)
    report = {
        "machine": machine(),
        "frame": "astronaut.png at 640x480",
        "iterations": iterations,
        "results": rows,
        "machine_load": load.report(),
        "checks": checks,
    }
    print(json.dumps(report, indent=2) if as_json else _text(report))
    return 0 if all(c["ok"] for c in checks) else 1


def _runner(ctx: Context, factory: InterpreterFactory, model_id: str, frame: Any) -> Callable[[], StageTimes]:
    loaded = factory.load(ctx.manifest, model_id)
    if loaded.entry.kind == "embedder":
        embedder = Embedder(loaded, ctx.config.embedder)
        box = Box(200, 60, 440, 420)  # a person-sized crop, so the crop and resize are real work

        def embed() -> StageTimes:
            embedder.embed(frame, box)
            return embedder.times

        return embed
    detector = make_detector(loaded, ctx.config.detector)

    def detect() -> StageTimes:
        detector.detect(frame)
        return detector.times

    return detect


def _measure(run: Callable[[], StageTimes], iterations: int) -> dict[str, Any]:
    for _ in range(5):  # caches, allocator and XNNPack packing settle in the first few calls
        run()
    samples = np.array(
        [[t.preprocess_ms, t.invoke_ms, t.decode_ms] for t in (run() for _ in range(iterations))]
    )
    stats = {
        name: {"median": round(float(np.median(col)), 4), "p90": round(float(np.percentile(col, 90)), 4)}
        for name, col in zip(("preprocess_ms", "invoke_ms", "decode_ms"), samples.T, strict=True)
    }
    host = stats["preprocess_ms"]["median"] + stats["decode_ms"]["median"]
    return {**stats, "host_to_invoke_ratio": round(host / stats["invoke_ms"]["median"], 4)}


def _checks(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "check": f"ssdlite-person-int8 (preprocess + decode) / invoke, {r['threads']} thread(s)",
            "value": r["host_to_invoke_ratio"],
            "budget": SSD_OVERHEAD_BUDGET,
            "ok": r["host_to_invoke_ratio"] <= SSD_OVERHEAD_BUDGET,
        }
        for r in rows
        if r["model"] == "ssdlite-person-int8"
    ]


def _text(report: dict[str, Any]) -> str:
    lines = [load_line(report["machine_load"])]
    lines.append(f"{'model':<30} thr  invoke p50/p90 ms   pre p50  decode p50  host/invoke")
    for r in report["results"]:
        invoke = f"{r['invoke_ms']['median']:>7.2f}/{r['invoke_ms']['p90']:<7.2f}"
        host = f"{r['preprocess_ms']['median']:>8.3f}  {r['decode_ms']['median']:>9.3f}"
        lines.append(
            f"{r['model']:<30} {r['threads']:>3}  {invoke}  {host}  {r['host_to_invoke_ratio']:>10.3f}"
        )
    lines += [
        f"{'OK ' if c['ok'] else 'FAIL'} {c['check']}: {c['value']} (budget {c['budget']})"
        for c in report["checks"]
    ]
    return "\n".join(lines)
