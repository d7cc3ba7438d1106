"""A detector on a COCO folder: its detections in COCO's result format, scored by faster-coco-eval.

The metrics are COCO's own (faster-coco-eval's C++ port of pycocotools, bbox): mAP@[.5:.95], mAP@.5 and
AR@100. Nothing here computes them by hand; `matches` (the best box per ground truth) only explains them.

Class mapping is by name: the model's label map (models/*labels.txt) against the dataset's category
names. The metrics cover the dataset's categories the model has a label for, and the result says which,
so the person detector is scored on person alone and says so instead of scoring zero on cups.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from device.config import DetectorConfig
from device.errors import EX_UNAVAILABLE, ApplianceError, DatasetError, InputError
from device.images import read_image
from device.modeleval.dataset import CocoDataset
from device.vision.detector import Detector

log = logging.getLogger(__name__)

# Detectors run with a low threshold for evaluation: mAP integrates precision over every recall level,
# and a box dropped at the serving threshold (0.4) is recall the metric can never see. 0.01 and 100
# boxes per image (AR@100) are the usual COCO evaluation settings.
EVAL_SCORE_THRESHOLD = 0.01
EVAL_MAX_DETECTIONS = 100
# COCOeval's summary: [0] AP@[.5:.95], [1] AP@.5, [8] AR@100 (all areas), with its default parameters.
_MAP, _MAP50, _AR100 = 0, 1, 8


class ExtraMissingError(ApplianceError):
    """The evaluator or the plotting library (the optional `models` extra) is not installed."""

    exit_code = EX_UNAVAILABLE


def eval_config(base: DetectorConfig) -> DetectorConfig:
    """The serving detector settings with the evaluation threshold and box budget, and every class."""
    return base.model_copy(
        update={"score_threshold": EVAL_SCORE_THRESHOLD, "max_detections": EVAL_MAX_DETECTIONS, "classes": ()}
    )


@dataclass(frozen=True)
class ClassMap:
    to_category: dict[int, int]  # model class id -> dataset category id
    evaluated: tuple[int, ...]  # dataset category ids the metrics cover
    not_known: tuple[str, ...]  # dataset category names the model has no label for


def class_map(labels: tuple[str, ...], categories: dict[int, str]) -> ClassMap:
    by_name = {name.strip().lower(): ident for ident, name in categories.items()}
    to_category = {i: by_name[label.lower()] for i, label in enumerate(labels) if label.lower() in by_name}
    evaluated = tuple(sorted(set(to_category.values())))
    not_known = tuple(name for ident, name in sorted(categories.items()) if ident not in evaluated)
    return ClassMap(to_category, evaluated, not_known)


@dataclass(frozen=True)
class Match:
    """The best detection (by IoU) of a ground-truth box's category on its image."""

    image: str
    category: str
    truth: list[float]  # x, y, width, height
    box: list[float] | None
    score: float | None
    iou: float


@dataclass
class DetectionResult:
    model: str
    images: int
    annotations: int  # ground-truth boxes in the evaluated categories
    categories: list[str]  # the dataset categories the metrics cover
    not_known: list[str]  # dataset categories the model has no label for (left out of the metrics)
    detections: int
    map: float | None  # None: nothing the model knows is in the dataset
    map50: float | None
    ar100: float | None
    matches: list[Match] = field(default_factory=list)

    @property
    def restricted(self) -> bool:
        return bool(self.not_known)

    def scope(self) -> str:
        """What the figures cover, in words, for the text output and the report."""
        if not self.categories:
            return "the model knows none of the dataset's categories: not evaluated"
        if self.restricted:
            return (
                f"restricted to the model's classes: {', '.join(self.categories)} "
                f"({len(self.not_known)} dataset categories left out: {', '.join(self.not_known)})"
            )
        return f"all {len(self.categories)} dataset categories"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "restricted": self.restricted, "scope": self.scope()}


def evaluate_detector(detector: Detector, dataset: CocoDataset, model_id: str) -> DetectionResult:
    """Run `detector` (built with eval_config) on every image and score it against the dataset."""
    mapping = class_map(detector.labels, dataset.categories)
    results = detect_all(detector, dataset, mapping)
    truth = [a for a in dataset.coco["annotations"] if a["category_id"] in mapping.evaluated]
    metrics = coco_metrics(dataset, results, mapping.evaluated) if mapping.evaluated else None
    return DetectionResult(
        model=model_id,
        images=len(dataset.images),
        annotations=len(truth),
        categories=[dataset.categories[c] for c in mapping.evaluated],
        not_known=list(mapping.not_known),
        detections=len(results),
        map=metrics[0] if metrics else None,
        map50=metrics[1] if metrics else None,
        ar100=metrics[2] if metrics else None,
        matches=_matches(dataset, truth, results),
    )


def detect_all(detector: Detector, dataset: CocoDataset, mapping: ClassMap) -> list[dict[str, Any]]:
    """Every detection of a mapped class, as COCO results: image_id, category_id, bbox (xywh), score."""
    results: list[dict[str, Any]] = []
    for image in dataset.images:
        try:
            frame = read_image(image.path)
        except InputError as exc:
            raise DatasetError(f"{exc}: replace the file or remove it from the annotations") from None
        if frame.shape[:2] != (image.height, image.width):
            raise DatasetError(
                f"image {image.path} is {frame.shape[1]}x{frame.shape[0]}, but the annotations say "
                f"{image.width}x{image.height}: its boxes would not fit; fix width and height"
            )
        for found in detector.detect(frame):
            category = mapping.to_category.get(found.class_id)
            if category is None:
                continue  # a class the dataset does not label: neither right nor wrong here
            x1, y1, x2, y2 = found.box
            results.append(
                {
                    "image_id": image.id,
                    "category_id": category,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "score": found.score,
                }
            )
    return results


def coco_metrics(
    dataset: CocoDataset, results: list[dict[str, Any]], categories: tuple[int, ...]
) -> tuple[float | None, float | None, float | None]:
    """mAP@[.5:.95], mAP@.5 and AR@100 by faster-coco-eval, over `categories` only; None where COCOeval
    has nothing to average (it reports -1: no ground truth in those categories)."""
    coco_api, coco_eval = _evaluator()
    quiet = log.debug  # COCOeval prints its summary table; the command prints its own
    truth = coco_api(copy.deepcopy(dataset.coco), print_function=quiet)
    found = truth.loadRes(copy.deepcopy(results))
    evaluation = coco_eval(truth, found, iouType="bbox", print_function=quiet)
    evaluation.params.catIds = list(categories)
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
    stats = [float(v) for v in evaluation.stats]
    return tuple(  # type: ignore[return-value]
        None if stats[i] < 0 else round(stats[i], 4) for i in (_MAP, _MAP50, _AR100)
    )


def _evaluator() -> tuple[Any, Any]:
    try:
        from faster_coco_eval import COCO, COCOeval_faster  # noqa: PLC0415 - the optional `models` extra
    except ImportError:
        raise ExtraMissingError(
            "faster-coco-eval is not installed: `pip install -e '.[models]'` (make install does); "
            "model evaluation needs it, the device does not"
        ) from None
    return COCO, COCOeval_faster


def iou_xywh(a: list[float], b: list[float]) -> float:
    ax2, ay2, bx2, by2 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    w = max(0.0, min(ax2, bx2) - max(a[0], b[0]))
    h = max(0.0, min(ay2, by2) - max(a[1], b[1]))
    inter = w * h
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def _matches(dataset: CocoDataset, truth: list[dict[str, Any]], results: list[dict[str, Any]]) -> list[Match]:
    names = {i.id: i.path.name for i in dataset.images}
    matches = []
    for gt in truth:
        same = [
            r for r in results if r["image_id"] == gt["image_id"] and r["category_id"] == gt["category_id"]
        ]
        ious = [iou_xywh(gt["bbox"], r["bbox"]) for r in same]
        best = int(np.argmax(ious)) if ious else -1
        chosen = same[best] if best >= 0 else None
        matches.append(
            Match(
                image=names[gt["image_id"]],
                category=dataset.categories[gt["category_id"]],
                truth=[round(v, 1) for v in gt["bbox"]],
                box=[round(v, 1) for v in chosen["bbox"]] if chosen else None,
                score=round(chosen["score"], 4) if chosen else None,
                iou=round(ious[best], 4) if chosen else 0.0,
            )
        )
    return matches
