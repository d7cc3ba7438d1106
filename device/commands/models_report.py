"""`appliance models report --dataset DIR [--retrieval DIR] [--bench-db FILE] --out DIR`: the page an ML
engineer reads before `appliance-release add`: size, accuracy and latency of every manifest model.

Accuracy comes from `models eval` on the datasets given. Latency comes from the fleet bench results
(`--bench-db`, default <state_dir>/bench.sqlite when it exists); without them, from the `bench models`
measurement run here, in the same run, and the page says so.
"""

from __future__ import annotations

import logging
import shlex
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from device.commands.bench_models import SAMPLE, _measure
from device.commands.context import Context
from device.commands.models_eval import evaluate
from device.errors import DatasetError, UsageError
from device.fleetbench.hardware import accelerator, backend, device_kind
from device.images import read_image
from device.modeleval.dataset import dataset_kind, load_retrieval
from device.modeleval.latency import Column, Latency, LatencyTable, from_bench_db
from device.modeleval.report import Meta, make_row, write_report
from device.vision.detector import Detector, StageTimes
from device.vision.embedder import Embedder
from device.vision.geometry import Box
from device.vision.manifest import ModelEntry
from device.vision.models import make_adapter
from device.vision.preprocess import Image

log = logging.getLogger(__name__)

# Invokes per model for the local latency figures (after bench_models' 5 warm-up calls): enough for a
# stable median on an idle machine, a few seconds for all the models here.
LOCAL_ITERATIONS = 50
BENCH_DB = "bench.sqlite"


def models_report(
    ctx: Context,
    *,
    dataset: Path,
    retrieval: Path | None,
    bench_db: Path | None,
    out: Path,
    model_ids: Sequence[str] | None,
) -> int:
    entries = [ctx.manifest.get(i) for i in model_ids] if model_ids else list(ctx.manifest.entries)
    if dataset_kind(dataset) != "coco":
        raise DatasetError(f"--dataset {dataset} must be a COCO folder (images/ and annotations.json)")
    if retrieval is not None:
        load_retrieval(retrieval)  # checked before the detectors' run, not after it
    db = _bench_db(ctx, bench_db)
    latency = from_bench_db(db) if db is not None else {}  # read first: a bad file fails before the run
    detectors = [e.id for e in entries if e.kind == "detector"]
    embedders = [e.id for e in entries if e.kind == "embedder"]
    coco = evaluate(ctx, dataset, detectors) if detectors else None
    recall = evaluate(ctx, retrieval, embedders) if retrieval is not None and embedders else None
    evaluated = {r["model"]: r for report in (coco, recall) if report for r in report["results"]}

    local = not latency
    if local:
        latency = _local_latency(ctx, entries)
    rows = [make_row(e, evaluated.get(e.id), latency) for e in entries]
    notes = _notes(coco, db, local)
    meta = Meta(
        "Model report: size, accuracy and latency", str(dataset), notes, _commands(dataset, retrieval, db)
    )
    page = write_report(out, rows, sorted(latency), meta)
    print(page)
    return 0


def _notes(coco: dict[str, Any] | None, db: Path | None, local: bool) -> list[str]:
    """What the page must say about its figures: a smoke set, where the latency comes from."""
    notes = []
    if coco and coco["note"]:
        notes.append(f"Accuracy: {coco['note']}.")
    if local:
        why = f"{db} holds no results" if db is not None else "no fleet bench database"
        notes.append(
            f"Latency: {why}, so the models were timed on this machine in this run (the `appliance bench "
            f"models` measurement: astronaut.png at 640x480, {LOCAL_ITERATIONS} invokes after 5 warm-up "
            "calls). Pass --bench-db for the fleet's figures per device kind."
        )
    else:
        notes.append(f"Latency: the newest `appliance fleet bench` run per device kind, from {db}.")
    if coco:
        settings = coco["settings"]
        notes.append(
            f"Detectors ran at score >= {settings['score_threshold']} with up to "
            f"{settings['max_detections']} boxes per image (evaluation settings); metrics by "
            f"{settings['evaluator']}."
        )
    return notes


def _bench_db(ctx: Context, explicit: Path | None) -> Path | None:
    if explicit is not None:
        if not explicit.is_file():
            raise UsageError(
                f"--bench-db {explicit} does not exist; run `appliance fleet bench` first, or leave "
                "--bench-db out to time the models on this machine"
            )
        return explicit
    default = ctx.config.state_dir / BENCH_DB
    return default if default.is_file() else None


def _local_latency(ctx: Context, entries: list[ModelEntry]) -> LatencyTable:
    frame = np.asarray(cv2.resize(read_image(SAMPLE), (640, 480), interpolation=cv2.INTER_LINEAR), np.uint8)
    table: LatencyTable = {}
    for entry in entries:
        loaded = ctx.factory.load(ctx.manifest, entry.id)
        run = _runner(make_adapter(entry.kind, loaded, ctx.config.detector, ctx.config.embedder), frame)
        stats = _measure(run, LOCAL_ITERATIONS)
        # Named as `appliance fleet bench` names a device's figures, so the columns read alike.
        column = Column(
            device_kind(),
            accelerator(loaded.placement, ctx.config.governor.sysfs_root),
            backend(loaded.placement),
            ctx.config.runtime.num_threads,
            local=True,
        )
        table.setdefault(column, {})[entry.id] = Latency(
            stats["invoke_ms"]["median"], stats["invoke_ms"]["p90"], 1
        )
    return table


def _runner(adapter: Detector | Embedder, frame: Image) -> Callable[[], StageTimes]:
    """One call as `bench models` times it: the detector on the frame, the embedder on a person crop."""
    if isinstance(adapter, Detector):
        detector = adapter

        def detect() -> StageTimes:
            detector.detect(frame)
            return detector.times

        return detect
    embedder = adapter
    box = Box(200, 60, 440, 420)  # the crop `bench models` embeds

    def embed() -> StageTimes:
        embedder.embed(frame, box)
        return embedder.times

    return embed


def _commands(dataset: Path, retrieval: Path | None, db: Path | None) -> list[str]:
    report = ["appliance", "models", "report", "--dataset", str(dataset)]
    report += ["--retrieval", str(retrieval)] if retrieval else []
    report += ["--bench-db", str(db)] if db else []
    return [
        shlex.join(["appliance", "models", "eval", "--dataset", str(dataset)]),
        shlex.join([*report, "--out", "report/"]),
        "# the real table: COCO val2017, see docs/models.md",
    ]
