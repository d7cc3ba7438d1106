"""The Detector: one frame in, frozen Detections (boxes in source-frame pixels) out.

Adapters (ssd.py, centernet.py) only decode their model's raw outputs into boxes in model-input pixels.
Everything shared lives here: preprocessing, timing, threshold, class allow-list, NMS for models that
have none, max detections, and the mapping back to the source frame.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from device.config import DetectorConfig
from device.errors import ConfigError
from device.vision.geometry import Box, Transform
from device.vision.preprocess import Image, resize_fit, set_input
from device.vision.runtime import LoadedModel
from device.vision.tensors import single_image_input

FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Detection:
    class_id: int
    label: str
    score: float
    box: Box  # source-frame pixels (x1, y1, x2, y2)


@dataclass(frozen=True)
class RawDetections:
    """Decoded outputs before filtering: boxes [N, 4] (x1, y1, x2, y2) in model-input pixels."""

    boxes: FloatArray
    scores: FloatArray
    class_ids: npt.NDArray[np.int64]


@dataclass
class StageTimes:
    """Milliseconds spent in each part of the last call, for stats and `appliance bench`."""

    preprocess_ms: float = 0.0
    invoke_ms: float = 0.0
    decode_ms: float = 0.0


class Detector(ABC):
    adapter = "detector"
    has_nms = False  # True when the model's own graph already suppresses overlapping boxes

    def __init__(self, model: LoadedModel, config: DetectorConfig) -> None:
        self.model = model
        self.config = config
        self.labels = model.labels
        self.input_detail, self.input_width, self.input_height = single_image_input(model, self.adapter)
        self.allowed = _resolve_classes(config.classes, model)
        self.times = StageTimes()
        self._check_outputs()

    @abstractmethod
    def _check_outputs(self) -> None:
        """Find the output tensors this adapter needs, or raise ModelMismatchError."""

    @abstractmethod
    def _decode(self) -> RawDetections:
        """Read the output tensors of the last invoke."""

    def detect(self, frame: Image) -> list[Detection]:
        start = time.perf_counter()
        resized, transform = resize_fit(frame, self.input_width, self.input_height, self.model.entry.resize)
        interpreter = self.model.interpreter
        set_input(interpreter, self.input_detail, self.model.entry.input, resized, transform)
        invoked = time.perf_counter()
        interpreter.invoke()
        decoded = time.perf_counter()
        detections = self._postprocess(self._decode(), transform, frame.shape[1], frame.shape[0])
        done = time.perf_counter()
        self.times = StageTimes((invoked - start) * 1e3, (decoded - invoked) * 1e3, (done - decoded) * 1e3)
        return detections

    def _postprocess(
        self, raw: RawDetections, transform: Transform, width: int, height: int
    ) -> list[Detection]:
        keep = raw.scores >= self.config.score_threshold
        if self.allowed is not None:
            keep &= np.isin(raw.class_ids, list(self.allowed))
        boxes, scores, class_ids = raw.boxes[keep], raw.scores[keep], raw.class_ids[keep]
        order = np.argsort(-scores, kind="stable")
        if not self.has_nms and len(order) > 1:
            order = order[_nms(boxes[order], scores[order], class_ids[order], self.config.nms_iou)]
        detections = []
        for i in order[: self.config.max_detections]:
            box = transform.to_frame(Box(*(float(v) for v in boxes[i]))).clip(width, height)
            if box.area > 0:
                class_id = int(class_ids[i])
                label = self.model.entry.label_for(class_id, self.labels)
                # A dequantised score can land a hair above 1; a score is a probability (docs/wire.md).
                detections.append(Detection(class_id, label, min(float(scores[i]), 1.0), box))
        return detections

    def output(self, detail: dict[str, Any]) -> npt.NDArray[Any]:
        return self.model.interpreter.get_tensor(detail["index"])


def _nms(
    boxes: FloatArray, scores: FloatArray, class_ids: npt.NDArray[np.int64], iou: float
) -> npt.NDArray[np.intp]:
    """Per-class non-maximum suppression via OpenCV; returns kept positions in score order."""
    xywh = [[float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])] for b in boxes]
    kept = cv2.dnn.NMSBoxesBatched(xywh, scores.tolist(), class_ids.astype(np.int32).tolist(), 0.0, iou)
    return np.sort(np.asarray(kept, dtype=np.intp).reshape(-1))


def _resolve_classes(classes: tuple[str, ...], model: LoadedModel) -> frozenset[int] | None:
    if not classes:
        return None
    labels = {label: i for i, label in enumerate(model.labels)}
    resolved = set()
    for name in classes:
        if name in labels:
            resolved.add(labels[name])
        elif name.isdigit():
            resolved.add(int(name))
        else:
            raise ConfigError(
                f"detector.classes: {name!r} is not a label of model {model.entry.id} "
                f"(its labels: {', '.join(model.labels[:12])}{'...' if len(model.labels) > 12 else ''})"
            )
    return frozenset(resolved)
