"""Runs the manifest's models over a dataset: loads each through the interpreter factory (verified,
placed, warmed up, as the daemon loads them), builds its adapter and evaluates it."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from device.config import Config
from device.errors import UsageError
from device.modeleval.dataset import CocoDataset, RetrievalSet
from device.modeleval.detection import DetectionResult, eval_config, evaluate_detector
from device.modeleval.retrieval import RetrievalResult, evaluate_embedder
from device.vision.embedder import Embedder
from device.vision.manifest import Manifest, ModelEntry
from device.vision.models import make_detector
from device.vision.runtime import InterpreterFactory

log = logging.getLogger(__name__)

# Fewer images than this and the figures are a smoke test of the chain, not a measurement; the output
# and the report say so (COCO val2017 has 5000).
SMOKE_IMAGES = 500
VAL2017_HINT = "the real table needs COCO val2017 (docs/models.md gives the download and the command)"


@dataclass(frozen=True)
class Evaluated:
    result: DetectionResult | RetrievalResult
    ran_as: str  # the model that ran: differs from the result's id when a CPU twin stood in
    accelerator: str


def select(manifest: Manifest, ids: Sequence[str] | None, kind: str, dataset: str) -> list[ModelEntry]:
    """The entries to evaluate: `ids` (each must be of `kind`), or every model of that kind."""
    if not ids:
        return [e for e in manifest.entries if e.kind == kind]
    chosen = [manifest.get(i) for i in ids]
    wrong = [e.id for e in chosen if e.kind != kind]
    if wrong:
        raise UsageError(
            f"{', '.join(wrong)} not a {kind}: {dataset} evaluates {kind}s (a COCO folder evaluates "
            "detectors, a folder of class/image files evaluates embedders)"
        )
    return chosen


def run_detectors(
    config: Config,
    manifest: Manifest,
    factory: InterpreterFactory,
    entries: list[ModelEntry],
    data: CocoDataset,
) -> list[Evaluated]:
    done = []
    for entry in entries:
        loaded = factory.load(manifest, entry.id)
        detector = make_detector(loaded, eval_config(config.detector))
        log.info("evaluating %s on %d images", entry.id, len(data.images))
        result = evaluate_detector(detector, data, entry.id)
        done.append(Evaluated(result, loaded.entry.id, loaded.placement.accelerator))
    return done


def run_embedders(
    config: Config,
    manifest: Manifest,
    factory: InterpreterFactory,
    entries: list[ModelEntry],
    data: RetrievalSet,
) -> list[Evaluated]:
    done = []
    for entry in entries:
        loaded = factory.load(manifest, entry.id)
        result = evaluate_embedder(Embedder(loaded, config.embedder), data, entry.id)
        done.append(Evaluated(result, loaded.entry.id, loaded.placement.accelerator))
    return done


def as_dict(evaluated: Evaluated) -> dict[str, Any]:
    return {**evaluated.result.to_dict(), "ran_as": evaluated.ran_as, "accelerator": evaluated.accelerator}


def smoke_note(images: int) -> str | None:
    if images >= SMOKE_IMAGES:
        return None
    return f"{images} images: a smoke test of the chain, not a benchmark; {VAL2017_HINT}"
