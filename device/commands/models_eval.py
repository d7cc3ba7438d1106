"""`appliance models eval --dataset DIR [--models ...] [--json]`: each model's accuracy on a dataset.

A COCO folder evaluates the detectors (mAP@[.5:.95], mAP@.5, AR@100 by faster-coco-eval); a folder of
class/image files evaluates the embedders (leave-one-out recall@1/5). The dataset is checked before any
model loads; a bad one exits 65 (EX_DATAERR) with a message that names what to fix.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from device.commands.context import Context
from device.modeleval.dataset import dataset_kind, load_coco, load_retrieval
from device.modeleval.detection import EVAL_MAX_DETECTIONS, EVAL_SCORE_THRESHOLD
from device.modeleval.runner import as_dict, run_detectors, run_embedders, select, smoke_note


def models_eval(ctx: Context, dataset: Path, model_ids: Sequence[str] | None, as_json: bool) -> int:
    report = evaluate(ctx, dataset, model_ids)
    print(json.dumps(report, indent=2) if as_json else text(report))
    return 0


def evaluate(ctx: Context, dataset: Path, model_ids: Sequence[str] | None) -> dict[str, Any]:
    """The whole evaluation as one JSON-ready dict (the report command uses it too)."""
    if dataset_kind(dataset) == "coco":
        coco = load_coco(dataset)
        entries = select(ctx.manifest, model_ids, "detector", f"COCO folder {dataset}")
        done = run_detectors(ctx.config, ctx.manifest, ctx.factory, entries, coco)
        return {
            "kind": "coco",
            "dataset": {
                "path": str(dataset),
                "images": len(coco.images),
                "annotations": coco.annotation_count,
                "categories": len(coco.categories),
            },
            "note": smoke_note(len(coco.images)),
            "settings": {
                "score_threshold": EVAL_SCORE_THRESHOLD,
                "max_detections": EVAL_MAX_DETECTIONS,
                "evaluator": "faster-coco-eval (COCOeval, bbox)",
            },
            "results": [as_dict(d) for d in done],
        }
    retrieval = load_retrieval(dataset)
    entries = select(ctx.manifest, model_ids, "embedder", f"retrieval folder {dataset}")
    done = run_embedders(ctx.config, ctx.manifest, ctx.factory, entries, retrieval)
    return {
        "kind": "retrieval",
        "dataset": {"path": str(dataset), "images": len(retrieval.items), "classes": len(retrieval.classes)},
        "note": "views of one photo per class find each other: near-duplicate retrieval, not product "
        "retrieval"
        if len(retrieval.items) < SMOKE_RETRIEVAL
        else None,
        "settings": {"measure": "cosine, leave-one-out, whole image"},
        "results": [as_dict(d) for d in done],
    }


# A retrieval set this small is a smoke test too (the committed one has 12 images).
SMOKE_RETRIEVAL = 100


def text(report: dict[str, Any]) -> str:
    data = report["dataset"]
    if report["kind"] == "coco":
        lines = [
            f"dataset {data['path']}: {data['images']} images, {data['annotations']} boxes, "
            f"{data['categories']} categories; detectors at score >= "
            f"{report['settings']['score_threshold']}, up to {report['settings']['max_detections']} "
            "boxes per image (evaluation settings)",
            f"{'model':<30} {'mAP':>6} {'mAP@.5':>7} {'AR@100':>7} {'boxes':>6}  scope",
        ]
        for r in report["results"]:
            lines.append(
                f"{r['model']:<30} {_num(r['map']):>6} {_num(r['map50']):>7} {_num(r['ar100']):>7} "
                f"{r['detections']:>6}  {r['scope']}{_twin(r)}"
            )
            lines += [
                f"    {m['image']} {m['category']}: "
                + (f"best IoU {m['iou']:.2f} at score {m['score']:.2f}" if m["box"] else "no box")
                for m in r["matches"]
            ]
    else:
        lines = [
            f"dataset {data['path']}: {data['images']} images in {data['classes']} classes "
            f"({report['settings']['measure']})",
            f"{'model':<30} {'R@1':>6} {'R@5':>6}",
        ]
        for r in report["results"]:
            recall = r["recall"]
            lines.append(f"{r['model']:<30} {_num(recall['@1']):>6} {_num(recall['@5']):>6}{_twin(r)}")
            lines += [f"    miss: {m['query']} -> {m['nearest']}" for m in r["misses"]]
    if report["note"]:
        lines.append(f"NOTE {report['note']}")
    return "\n".join(lines)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _twin(result: dict[str, Any]) -> str:
    return f" (ran as its CPU twin {result['ran_as']})" if result["ran_as"] != result["model"] else ""
