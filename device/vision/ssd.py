"""SSD with TFLite_Detection_PostProcess, in the layout Coral's Edge TPU detectors use.

Four outputs: boxes [1, N, 4] (ymin, xmin, ymax, xmax, normalised to the model input), classes [1, N],
scores [1, N] and count [1]. get_output_details() does not return them in that order (it differs between
converters), so tensors are picked by the names the manifest gives or, failing that, by shape and the
post-process op's output suffix; never by index.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from device.vision.detector import Detector, RawDetections
from device.vision.tensors import by_name, mismatch, name_order

_ROLES = ("boxes", "classes", "scores", "count")
_EXPECTED = "boxes [1, N, 4], classes [1, N], scores [1, N] and count [1] (TFLite_Detection_PostProcess)"


class SsdDetector(Detector):
    adapter = "ssd"
    has_nms = True  # TFLite_Detection_PostProcess runs NMS inside the graph

    def _check_outputs(self) -> None:
        named = {role: by_name(self.model, role) for role in _ROLES}
        found = named if all(named.values()) else self._infer_roles()
        if found is None or not _shapes_fit(found):
            raise mismatch(self.model, self.adapter, _EXPECTED, self.model.interpreter.get_output_details())
        self._tensors: dict[str, dict[str, Any]] = {k: v for k, v in found.items() if v is not None}

    def _infer_roles(self) -> dict[str, dict[str, Any] | None] | None:
        outputs = self.model.interpreter.get_output_details()
        if len(outputs) != 4:
            return None
        boxes = [d for d in outputs if len(d["shape"]) == 3 and d["shape"][-1] == 4]
        count = [d for d in outputs if list(d["shape"]) == [1]]
        pairs = sorted((d for d in outputs if len(d["shape"]) == 2), key=name_order)
        if len(boxes) != 1 or len(count) != 1 or len(pairs) != 2:
            return None
        # The post-process op emits classes before scores (outputs :1 and :2).
        return {"boxes": boxes[0], "classes": pairs[0], "scores": pairs[1], "count": count[0]}

    def _decode(self) -> RawDetections:
        count = int(self.output(self._tensors["count"]).reshape(-1)[0])
        boxes = self.output(self._tensors["boxes"])[0, :count].astype(np.float32)
        scores = self.output(self._tensors["scores"])[0, :count].astype(np.float32)
        classes = self.output(self._tensors["classes"])[0, :count]
        # Normalised (ymin, xmin, ymax, xmax) to model-input pixels (x1, y1, x2, y2).
        scale = np.array([self.input_width, self.input_height] * 2, dtype=np.float32)
        xyxy = boxes[:, [1, 0, 3, 2]] * scale
        return RawDetections(xyxy, scores, np.rint(classes).astype(np.int64))


def _shapes_fit(found: dict[str, dict[str, Any] | None]) -> bool:
    shapes = {role: list(d["shape"]) if d is not None else [] for role, d in found.items()}
    n = shapes["boxes"][1] if len(shapes["boxes"]) == 3 else -1
    return (
        shapes["boxes"] == [1, n, 4]
        and shapes["classes"] == [1, n]
        and shapes["scores"] == [1, n]
        and shapes["count"] == [1]
    )
