"""The FrameSource port: what the pipeline needs from a camera, whatever the camera is."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

Image = npt.NDArray[np.uint8]


@dataclass(frozen=True, eq=False)
class Frame:
    image: Image  # RGB, the full-resolution stream that crops for the embedder come from
    captured: float  # wall-clock capture time, seconds since the epoch
    index: int  # the source's own frame counter; gaps mean the source dropped frames
    # A small stream at the detector's input size, from the same sensor readout (picamera2's lores).
    # When present, the detector reads it instead of resizing `image` itself.
    lores: Image | None = None

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @property
    def height(self) -> int:
        return int(self.image.shape[0])


class FrameSource(Protocol):
    name: str

    def open(self) -> None:
        """Acquire the device or file. Raises CameraError with what to do when it cannot."""

    def read(self) -> Frame:
        """Block until the next frame. Raises CameraError on failure, EndOfStreamError at the end."""

    def close(self) -> None:
        """Release the device. Safe to call twice, and after a failed open."""
