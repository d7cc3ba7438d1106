"""The Embedder: a crop of each detection in, an int8 feature vector out.

The vector stays int8 with its scale and zero point, because that is what goes on the wire (1280 bytes
instead of 5120) and what the pricing catalogue stores. `Embedding.vector` is the dequantised,
L2-normalised float view for cosine similarity.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from device.config import EmbedderConfig
from device.vision.detector import StageTimes
from device.vision.geometry import Box
from device.vision.preprocess import Image, check_frame, dequantise, resize_fit, set_input
from device.vision.runtime import LoadedModel
from device.vision.tensors import by_name, mismatch, single_image_input

Int8Array = npt.NDArray[np.int8]
FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True, eq=False)
class Embedding:
    values: Int8Array  # the quantised vector, as sent on the wire
    scale: float
    zero_point: int
    vector: FloatArray = field(repr=False)  # dequantised and L2-normalised

    @classmethod
    def from_quantised(cls, values: Int8Array, scale: float, zero_point: int) -> Embedding:
        real = (values.astype(np.float32) - zero_point) * scale
        return cls(values, scale, zero_point, l2_normalise(real))

    @property
    def dim(self) -> int:
        return int(self.values.shape[0])


def l2_normalise(vector: FloatArray) -> FloatArray:
    norm = float(np.linalg.norm(vector))
    return (vector / norm).astype(np.float32) if norm > 0 else vector.astype(np.float32)


def cosine(a: Embedding | FloatArray, b: Embedding | FloatArray) -> float:
    """Cosine similarity of two embeddings (or float vectors), in [-1, 1]."""
    va = a.vector if isinstance(a, Embedding) else l2_normalise(np.asarray(a, dtype=np.float32))
    vb = b.vector if isinstance(b, Embedding) else l2_normalise(np.asarray(b, dtype=np.float32))
    return float(np.dot(va, vb))


def context_crop(frame: Image, box: Box, margin: float) -> Image:
    """A square crop around the box, grown by `margin` of its size on each side, clipped to the frame.

    Square keeps the object's aspect ratio when the crop is resized to the square model input, so a
    tall bottle and a wide one do not get stretched into the same shape.
    """
    check_frame(frame)
    height, width = frame.shape[:2]
    side = max(box.width, box.height) * (1.0 + 2.0 * margin)
    cx, cy = (box.x1 + box.x2) / 2.0, (box.y1 + box.y2) / 2.0
    crop = Box(cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2).clip(width, height)
    x1, y1 = int(crop.x1), int(crop.y1)
    x2, y2 = max(x1 + 2, round(crop.x2)), max(y1 + 2, round(crop.y2))
    return frame[y1 : min(y2, height), x1 : min(x2, width)]


class Embedder:
    adapter = "embedder"

    def __init__(self, model: LoadedModel, config: EmbedderConfig) -> None:
        self.model = model
        self.config = config
        self.input_detail, self.input_width, self.input_height = single_image_input(model, self.adapter)
        self.output_detail = self._find_output()
        self.times = StageTimes()

    def _find_output(self) -> dict[str, Any]:
        outputs = self.model.interpreter.get_output_details()
        detail = by_name(self.model, "embedding") or (outputs[0] if len(outputs) == 1 else None)
        shape = list(detail["shape"]) if detail is not None else []
        if detail is None or len(shape) != 2 or shape[0] != 1 or shape[1] < 8:
            raise mismatch(self.model, self.adapter, "one output [1, D] (the feature vector)", outputs)
        return detail

    @property
    def dim(self) -> int:
        return int(self.output_detail["shape"][1])

    def embed(self, frame: Image, box: Box | None = None) -> Embedding:
        """Embed the crop of `box` (with context margin), or the whole frame when box is None."""
        start = time.perf_counter()
        pixels = frame if box is None else context_crop(frame, box, self.config.context_margin)
        resized, transform = resize_fit(pixels, self.input_width, self.input_height, self.model.entry.resize)
        set_input(self.model.interpreter, self.input_detail, self.model.entry.input, resized, transform)
        invoked = time.perf_counter()
        self.model.interpreter.invoke()
        decoded = time.perf_counter()
        embedding = self._read_output()
        done = time.perf_counter()
        self.times = StageTimes((invoked - start) * 1e3, (decoded - invoked) * 1e3, (done - decoded) * 1e3)
        return embedding

    def _read_output(self) -> Embedding:
        raw = self.model.interpreter.get_tensor(self.output_detail["index"])[0]
        dtype = np.dtype(self.output_detail["dtype"])
        if dtype == np.int8:
            scale, zero_point = self.output_detail["quantization"]
            return Embedding.from_quantised(raw.copy(), float(scale), int(zero_point))
        if dtype == np.uint8:
            # uint8 q with zero point z equals int8 (q - 128) with zero point z - 128.
            scale, zero_point = self.output_detail["quantization"]
            shifted = (raw.astype(np.int16) - 128).astype(np.int8)
            return Embedding.from_quantised(shifted, float(scale), int(zero_point) - 128)
        return quantise_float(dequantise(raw, self.output_detail))


def quantise_float(vector: FloatArray) -> Embedding:
    """A float model's output, quantised symmetrically to int8 so the wire format is the same."""
    peak = float(np.max(np.abs(vector))) if vector.size else 0.0
    scale = peak / 127.0 if peak > 0 else 1.0
    values = np.clip(np.rint(vector / scale), -127, 127).astype(np.int8)
    return Embedding.from_quantised(values, scale, 0)
