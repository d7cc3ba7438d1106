"""What the benchmarks share: the machine description, demo frames, the hand-off micro-benchmark."""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from device.backoff import Backoff
from device.camera.grabber import FrameGrabber
from device.camera.image_folder import ImageFolderSource
from device.camera.source import Frame
from device.clock import SystemClock
from device.config import OutboxConfig
from device.link.outbox import Outbox
from device.vision.litert import import_litert
from rigs.report import machine_basics

DEMO = Path(__file__).resolve().parents[2] / "demo"


@contextmanager
def scratch_outbox(config: OutboxConfig, prefix: str = "appliance-bench-") -> Iterator[Outbox]:
    """A real outbox in a throw-away directory (on the same disk as /tmp), closed and removed after:
    a benchmark run on a device must not leave its databases behind in /tmp."""
    with tempfile.TemporaryDirectory(prefix=prefix) as folder:
        outbox = Outbox(Path(folder) / "outbox.sqlite", config, SystemClock())
        try:
            yield outbox
        finally:
            outbox.close()


def machine() -> dict[str, Any]:
    return {**machine_basics(), "runtime": import_litert().name, "opencv": cv2.__version__}


def render_frames(count: int, width: int, height: int) -> list[Frame]:
    """`count` frames of the demo sequence, rendered ahead so the benchmark times only the pipeline."""
    seconds = max(1.0, count / 4 / 15)  # the four demo photos, evenly
    source = ImageFolderSource(DEMO, width=width, height=height, fps=0, seconds=seconds)
    source.open()
    return [source.read() for _ in range(count)]


class _OneFrame:
    name = "bench"

    def __init__(self, frame: Frame) -> None:
        self.frame = frame

    def open(self) -> None: ...

    def read(self) -> Frame:
        return self.frame

    def close(self) -> None: ...


def handoff_us(samples: int = 2000) -> float:
    """Median microseconds for one frame through the grabber's latest-frame slot (put, then take)."""
    frame = Frame(np.zeros((480, 640, 3), np.uint8), 0.0, 0)
    grabber = FrameGrabber(_OneFrame(frame), Backoff(1.0, 1.0))  # not started: we drive the slot
    times = []
    for _ in range(samples):
        start = time.perf_counter()
        grabber._put(frame)
        grabber.take(0.0)
        times.append((time.perf_counter() - start) * 1e6)
    return statistics.median(times)
