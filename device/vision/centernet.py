"""CenterNet decoders: the model's own `detections` tensor, or its raw heatmap head.

- `centernet`: one output [1, K, 6] of (x1, y1, x2, y2, score, class) in model-input pixels.
- `centernet-heatmap`: a class heatmap [1, H, W, C] (sigmoid) and box distances [1, H, W, 4] (left, top,
  right, bottom, in input pixels) at stride input/H. A peak is a cell that equals the 3x3 max around it
  (the max-pool trick that replaces NMS in CenterNet); its centre is (x * stride, y * stride).

CenterNet has no NMS in its graph and its peaks can still overlap across neighbouring cells, so the
shared per-class NMS in detector.py runs after both decoders.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from device.vision.detector import Detector, RawDetections
from device.vision.tensors import by_name, mismatch

# How many heatmap peaks to decode before thresholding: more than any frame holds, few enough to keep
# the decode well under a millisecond.
TOP_K = 100


class CenterNetDetector(Detector):
    adapter = "centernet"

    def _check_outputs(self) -> None:
        outputs = self.model.interpreter.get_output_details()
        detail = by_name(self.model, "detections")
        if detail is None and len(outputs) == 1:
            detail = outputs[0]
        shape = list(detail["shape"]) if detail is not None else []
        if detail is None or len(shape) != 3 or shape[0] != 1 or shape[2] != 6:
            raise mismatch(
                self.model, self.adapter, "one output [1, K, 6] (x1, y1, x2, y2, score, class)", outputs
            )
        self._detections = detail

    def _decode(self) -> RawDetections:
        rows = self.output(self._detections)[0].astype(np.float32)
        return RawDetections(rows[:, :4], rows[:, 4], np.rint(rows[:, 5]).astype(np.int64))


class CenterNetHeatmapDetector(Detector):
    adapter = "centernet-heatmap"

    def _check_outputs(self) -> None:
        outputs = self.model.interpreter.get_output_details()
        heat, dist = by_name(self.model, "heatmap"), by_name(self.model, "distances")
        if (heat is None or dist is None) and len(outputs) == 2:
            dist, heat = sorted(outputs, key=lambda d: int(d["shape"][-1]) != 4)
        if heat is None or dist is None or not _fits(heat["shape"], dist["shape"]):
            raise mismatch(
                self.model, self.adapter, "heatmap [1, H, W, C] and distances [1, H, W, 4]", outputs
            )
        self._heat: dict[str, Any] = heat
        self._dist: dict[str, Any] = dist
        self._stride = self.input_height / int(heat["shape"][1])

    def _decode(self) -> RawDetections:
        heat = self.output(self._heat)[0]
        dist = self.output(self._dist)[0]
        # 3x3 max-pool: a cell is a peak when dilation leaves it unchanged.
        pooled = cv2.dilate(heat, np.ones((3, 3), np.uint8))
        candidates = np.flatnonzero((heat == pooled) & (heat >= self.config.score_threshold))
        flat = heat.reshape(-1)
        top = candidates[np.argsort(-flat[candidates], kind="stable")[:TOP_K]]
        ys, xs, classes = np.unravel_index(top, heat.shape)
        centre_x, centre_y = xs * self._stride, ys * self._stride
        d = dist[ys, xs]
        boxes = np.stack(
            [centre_x - d[:, 0], centre_y - d[:, 1], centre_x + d[:, 2], centre_y + d[:, 3]], axis=1
        ).astype(np.float32)
        return RawDetections(boxes.reshape(-1, 4), flat[top].astype(np.float32), classes.astype(np.int64))


def _fits(heat: Any, dist: Any) -> bool:
    return len(heat) == 4 and len(dist) == 4 and list(heat[:3]) == list(dist[:3]) and dist[3] == 4
