"""Validation vectors: sample inputs, and a summary of what a model must output for them.

The release tool runs the model on a few photos and records a summary; the device runs the downloaded
model on the same photos (a TUF target, so they are verified too) and compares within tolerances. This
catches what signatures cannot: a model that was built, quantised or compiled wrongly, or that runs
differently on this device's runtime. The summary is small enough to live in the signed metadata:
- embedder: the int8 vector of each whole photo; passes at cosine >= `min_cosine`;
- detector: the top detections of each photo (label, score, normalised box); each must be found again
  with the same label, IoU >= `min_iou` and a score within `score`; the count may differ by `count`.
"""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np

from device.errors import UpdateError
from device.vision.detector import Detector
from device.vision.embedder import Embedder, Embedding, cosine
from device.vision.geometry import Box
from device.vision.preprocess import Image

EMBEDDER_TOLERANCE = {"min_cosine": 0.98}
DETECTOR_TOLERANCE = {"min_iou": 0.7, "score": 0.1, "count": 1.0}
TOP_DETECTIONS = 5


def pack_inputs(images: list[Image]) -> bytes:
    buffer = io.BytesIO()
    arrays: dict[str, Any] = {f"image{i}": image for i, image in enumerate(images)}
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def unpack_inputs(data: bytes) -> list[Image]:
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            images = [archive[f"image{i}"] for i in range(len(archive.files))]
    except (OSError, ValueError, KeyError) as exc:
        raise UpdateError(f"validation inputs are unreadable: {exc}") from None
    for image in images:
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise UpdateError(f"validation input of shape {image.shape} {image.dtype} is not RGB uint8")
    return images


def summarise(model: Detector | Embedder, images: list[Image]) -> list[dict[str, Any]]:
    if isinstance(model, Embedder):
        return [_embedding_summary(model.embed(image)) for image in images]
    return [{"detections": _detections(model, image)} for image in images]


def compare(
    model: Detector | Embedder,
    images: list[Image],
    expected: tuple[dict[str, Any], ...],
    tolerance: dict[str, float],
) -> None:
    """UpdateError saying which input failed and by how much."""
    if len(expected) != len(images) or not images:
        raise UpdateError(f"validation has {len(images)} inputs but {len(expected)} expected outputs")
    for i, (image, want) in enumerate(zip(images, expected, strict=True)):
        if isinstance(model, Embedder):
            _compare_embedding(i, model.embed(image), want, tolerance)
        else:
            _compare_detections(i, _detections(model, image), want, tolerance)


def _embedding_summary(embedding: Embedding) -> dict[str, Any]:
    return {
        "vector": base64.b64encode(embedding.values.tobytes()).decode(),
        "scale": embedding.scale,
        "zero_point": embedding.zero_point,
    }


def _compare_embedding(i: int, got: Embedding, want: dict[str, Any], tolerance: dict[str, float]) -> None:
    try:
        values = np.frombuffer(base64.b64decode(want["vector"]), dtype=np.int8)
        expected = Embedding.from_quantised(values, float(want["scale"]), int(want["zero_point"]))
    except (KeyError, ValueError, TypeError) as exc:
        raise UpdateError(f"validation output {i} is malformed: {exc}") from None
    if expected.dim != got.dim:
        raise UpdateError(f"input {i}: the model outputs {got.dim} values, validation expects {expected.dim}")
    similarity = cosine(expected, got)
    if similarity < tolerance.get("min_cosine", EMBEDDER_TOLERANCE["min_cosine"]):
        raise UpdateError(
            f"input {i}: embedding differs from the expected one (cosine {similarity:.3f}, "
            f"needs >= {tolerance.get('min_cosine', EMBEDDER_TOLERANCE['min_cosine'])})"
        )


def _detections(detector: Detector, image: Image) -> list[dict[str, Any]]:
    h, w = image.shape[:2]
    found = sorted(detector.detect(image), key=lambda d: -d.score)[:TOP_DETECTIONS]
    return [
        {
            "label": d.label,
            "score": round(d.score, 3),
            "box": [
                round(d.box.x1 / w, 4),
                round(d.box.y1 / h, 4),
                round(d.box.x2 / w, 4),
                round(d.box.y2 / h, 4),
            ],
        }
        for d in found
    ]


def _compare_detections(
    i: int, got: list[dict[str, Any]], want: dict[str, Any], tolerance: dict[str, float]
) -> None:
    limits = {**DETECTOR_TOLERANCE, **tolerance}
    expected = want.get("detections", [])
    if abs(len(got) - len(expected)) > limits["count"]:
        raise UpdateError(f"input {i}: {len(got)} detections, validation expects {len(expected)}")
    for one in expected:
        box = Box(*one["box"])
        if not any(
            g["label"] == one["label"]
            and Box(*g["box"]).iou(box) >= limits["min_iou"]
            and abs(g["score"] - one["score"]) <= limits["score"]
            for g in got
        ):
            raise UpdateError(
                f"input {i}: expected {one['label']} (score {one['score']}) at {one['box']} was not "
                f"detected within tolerance (IoU >= {limits['min_iou']}, score +-{limits['score']})"
            )
