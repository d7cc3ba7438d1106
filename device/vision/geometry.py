"""Boxes and the mapping between source-frame pixels and a model's input pixels."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple


class Box(NamedTuple):
    """An axis-aligned box in pixels: (x1, y1) top-left, (x2, y2) bottom-right."""

    x1: float
    y1: float
    x2: float
    y2: float

    @property
    def width(self) -> float:
        return max(0.0, self.x2 - self.x1)

    @property
    def height(self) -> float:
        return max(0.0, self.y2 - self.y1)

    @property
    def area(self) -> float:
        return self.width * self.height

    def iou(self, other: Box) -> float:
        ix = max(0.0, min(self.x2, other.x2) - max(self.x1, other.x1))
        iy = max(0.0, min(self.y2, other.y2) - max(self.y1, other.y1))
        inter = ix * iy
        union = self.area + other.area - inter
        return inter / union if union > 0 else 0.0

    def clip(self, width: int, height: int) -> Box:
        return Box(
            min(max(self.x1, 0.0), float(width)),
            min(max(self.y1, 0.0), float(height)),
            min(max(self.x2, 0.0), float(width)),
            min(max(self.y2, 0.0), float(height)),
        )


@dataclass(frozen=True)
class Transform:
    """How a frame was fitted into a model input: model = frame * scale + pad, per axis.

    `stretch` resizes each axis on its own (pad 0, different scales); `letterbox` keeps the aspect ratio
    with one scale and centres the image between padding bars.
    """

    scale_x: float
    scale_y: float
    pad_x: float = 0.0
    pad_y: float = 0.0

    def to_frame(self, box: Box) -> Box:
        return Box(
            (box.x1 - self.pad_x) / self.scale_x,
            (box.y1 - self.pad_y) / self.scale_y,
            (box.x2 - self.pad_x) / self.scale_x,
            (box.y2 - self.pad_y) / self.scale_y,
        )


def fit(frame_w: int, frame_h: int, model_w: int, model_h: int, mode: str) -> tuple[Transform, int, int]:
    """The transform for `mode` and the size (w, h) the frame is resized to before padding."""
    if mode == "stretch":
        return Transform(model_w / frame_w, model_h / frame_h), model_w, model_h
    scale = min(model_w / frame_w, model_h / frame_h)
    new_w = max(1, min(model_w, round(frame_w * scale)))
    new_h = max(1, min(model_h, round(frame_h * scale)))
    pad_x, pad_y = (model_w - new_w) // 2, (model_h - new_h) // 2
    # Use the scale actually applied per axis, after rounding to whole pixels.
    return Transform(new_w / frame_w, new_h / frame_h, pad_x, pad_y), new_w, new_h
