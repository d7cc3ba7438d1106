"""Builds the FrameSource a spec string names (see spec.py for the grammar)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from device.camera.image_folder import ImageFolderSource
from device.camera.opencv_source import OpenCVSource
from device.camera.picamera2_source import Picamera2Source
from device.camera.source import FrameSource
from device.camera.spec import parse_source
from device.clock import Clock, SystemClock
from device.config import CameraConfig


def make_source(
    config: CameraConfig,
    lores_size: tuple[int, int] | None = None,
    clock: Clock | None = None,
    camera_class: Any = None,
) -> FrameSource:
    spec = parse_source(config.source)
    clock = clock or SystemClock()
    size = {"width": config.width, "height": config.height}
    if spec.kind == "picamera2":
        number = int(spec.target) if spec.target.isdigit() else 0
        return Picamera2Source(number, **size, lores_size=lores_size, camera_class=camera_class, clock=clock)
    if spec.kind == "images":
        return ImageFolderSource(
            Path(spec.target),
            **size,
            fps=spec.number("fps", 15.0),
            seconds=spec.number("seconds", 4.0),
            loop=spec.number("loop", 1.0) != 0,
            clock=clock,
            max_pixels=config.max_image_pixels,
        )
    return OpenCVSource(spec.kind, spec.target, **size, loop=spec.number("loop", 0.0) != 0, clock=clock)
