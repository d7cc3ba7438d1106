"""The model benchmark a device runs for `cmd/bench`: each model's invoke latency and its frame rate,
on the device's own runtime and accelerator, with the thread count asked for.

The same work as `appliance bench models` (device/commands/bench_models.py), which firmware modules may
not import: each model through its own adapter on a real photo, because the SSD's post-processing op
runs inside the invoke and its cost depends on what the picture holds; zeros would flatter it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from device.config import Config
from device.errors import InputError
from device.fleetbench.hardware import accelerator, backend
from device.fleetbench.request import BenchRequest
from device.images import read_image
from device.vision.detector import StageTimes
from device.vision.embedder import Embedder
from device.vision.geometry import Box
from device.vision.manifest import Manifest
from device.vision.models import make_detector
from device.vision.preprocess import Image
from device.vision.runtime import InterpreterFactory, LoadedModel

# The demo's photo (shipped in the image beside the models), at a typical camera stream's size.
SAMPLE = Path(__file__).resolve().parents[2] / "demo" / "astronaut.png"
FRAME_SIZE = (640, 480)
# Caches, the allocator and XNNPack's weight packing settle in the first few calls.
WARMUP_RUNS = 3


class StoppedError(Exception):
    """The daemon is stopping: the benchmark ends without a result."""


def sample_frame(path: Path = SAMPLE) -> Image:
    try:
        image = read_image(path)
    except InputError as exc:
        raise InputError(f"the bench frame is missing: {exc}; reinstall the firmware's demo/") from None
    return np.asarray(cv2.resize(image, FRAME_SIZE, interpolation=cv2.INTER_LINEAR), dtype=np.uint8)


def measure_models(
    config: Config,
    manifests: dict[str, Manifest],
    request: BenchRequest,
    frame: Image,
    stop: threading.Event,
) -> list[dict[str, Any]]:
    """One entry per requested model, in the order asked, each loaded from the manifest that lists it
    (the bundled one, or an OTA slot's). StoppedError if `stop` is set meanwhile."""
    runtime = config.runtime.model_copy(update={"num_threads": request.threads, "warmup_runs": 0})
    factory = InterpreterFactory(runtime)
    results = []
    for model_id in request.models:
        loaded = factory.load(manifests[model_id], model_id)
        run = _runner(config, loaded, frame)
        results.append({**_identity(config, model_id, loaded), **_time(run, request.runs, stop)})
    return results


def _identity(config: Config, model_id: str, loaded: LoadedModel) -> dict[str, Any]:
    placement = loaded.placement
    return {
        "id": model_id,
        # Differs from `id` when an Edge TPU model's CPU twin stood in (no TPU in use).
        "ran": loaded.entry.id,
        "version": loaded.entry.version,
        "accelerator": accelerator(placement, config.governor.sysfs_root),
        "backend": backend(placement),
        "cpu_fallback": placement.cpu_fallback,
    }


def _runner(config: Config, loaded: LoadedModel, frame: Image) -> Callable[[], StageTimes]:
    if loaded.entry.kind == "embedder":
        embedder = Embedder(loaded, config.embedder)
        box = Box(200, 60, 440, 420)  # a person-sized crop, so the crop and resize are real work

        def embed() -> StageTimes:
            embedder.embed(frame, box)
            return embedder.times

        return embed
    detector = make_detector(loaded, config.detector)

    def detect() -> StageTimes:
        detector.detect(frame)
        return detector.times

    return detect


def _time(run: Callable[[], StageTimes], runs: int, stop: threading.Event) -> dict[str, Any]:
    """Invoke p50/p90 in ms, and fps: runs per second of the whole call (preprocess, invoke, decode),
    what a frame loop running only this model would reach."""
    for _ in range(WARMUP_RUNS):
        run()
    invoke = np.empty(runs)
    started = time.perf_counter()
    for i in range(runs):
        if stop.is_set():
            raise StoppedError
        invoke[i] = run().invoke_ms
    elapsed = time.perf_counter() - started
    return {
        "invoke_ms": {
            "p50": round(float(np.percentile(invoke, 50)), 3),
            "p90": round(float(np.percentile(invoke, 90)), 3),
        },
        "fps": round(runs / elapsed, 2) if elapsed > 0 else 0.0,
    }
