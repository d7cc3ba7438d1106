"""The steady-run memory check: the pipeline on the paced demo source, RSS sampled as it goes."""

from __future__ import annotations

import os
import time
from typing import Any

import psutil

from device.camera.image_folder import ImageFolderSource
from device.clock import SystemClock
from device.commands.bench_support import DEMO
from device.commands.context import Context
from device.pace import PaceController
from device.pipeline import Pipeline
from device.vision.detector import Detector
from device.vision.embedder import Embedder
from device.vision.tracker import Tracker
from device.wire import ObjectMessage, encode

# RSS is taken after this long, once caches, allocator pools and XNNPack's packed weights have settled.
WARMUP_S = 30.0


def _encode_only(message: ObjectMessage) -> None:
    encode(message)


def soak(ctx: Context, detector: Detector, embedder: Embedder, seconds: float) -> dict[str, Any]:
    clock = SystemClock()
    config = ctx.config.pipeline
    pipeline = Pipeline(
        detector,
        embedder,
        Tracker(ctx.config.tracker),
        PaceController(config, clock),
        _encode_only,
        iter(range(1, 10**9)).__next__,
        config,
        clock,
    )
    source = ImageFolderSource(DEMO, width=ctx.config.camera.width, height=ctx.config.camera.height, fps=15)
    source.open()
    process = psutil.Process(os.getpid())
    start = time.monotonic()
    samples: list[tuple[float, float]] = []
    next_sample = start
    while time.monotonic() - start < seconds:
        pipeline.process(source.read())
        now = time.monotonic()
        if now >= next_sample:
            samples.append((now - start, process.memory_info().rss / 2**20))
            next_sample = now + 5.0
    settled = [rss for t, rss in samples if t >= min(WARMUP_S, seconds / 2)]
    return {
        "seconds": round(seconds),
        "frames": pipeline.counters.frames,
        "embeddings": pipeline.counters.embeddings,
        "rss_mb_after_warmup": round(settled[0], 1),
        "rss_mb_end": round(settled[-1], 1),
        "rss_mb_max": round(max(settled), 1),
        "growth_mb": round(settled[-1] - settled[0], 1),
    }
