"""`appliance bench pipeline`: the pipeline against the bare interpreters, side by side in one run.

Every figure is a ratio or a difference between runs made here, on the same frames, models and thread
count, so the result says something on any machine: how much the pipeline costs on top of inference,
and what tracking with the detector every 3rd frame buys.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from device.camera.source import Frame
from device.clock import SystemClock
from device.commands.bench_soak import soak
from device.commands.bench_support import check, handoff_us, machine, render_frames, scratch_outbox
from device.commands.context import Context
from device.pace import PaceController
from device.pipeline import Pipeline
from device.vision.detector import Detector
from device.vision.embedder import Embedder, context_crop
from device.vision.geometry import Box
from device.vision.models import make_detector
from device.vision.preprocess import resize_into, to_tensor
from device.vision.tracker import Tracker
from device.wire import ObjectMessage, encode

ROUNDS = 3  # alternate pipeline and raw runs, so drift in machine speed hits both alike


@dataclass
class Run:
    seconds: float = 0.0
    frames: int = 0
    embeddings: int = 0
    host_ms: list[float] = field(default_factory=list)  # per frame, outside interpreter invokes
    latency_ms: list[float] = field(default_factory=list)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds else 0.0


def bench_pipeline(ctx: Context, frame_count: int, soak_s: float, as_json: bool) -> int:
    frames = render_frames(frame_count, ctx.config.camera.width, ctx.config.camera.height)
    detector = make_detector(ctx.factory.load(ctx.manifest, ctx.config.models.detector), ctx.config.detector)
    embedder = Embedder(ctx.factory.load(ctx.manifest, ctx.config.models.embedder), ctx.config.embedder)
    every, third, raw = Run(), Run(), Run()
    for _ in range(ROUNDS):
        embeddings = _pipeline_run(ctx, detector, embedder, frames, detect_every=1, into=every)
        _raw_run(detector, embedder, frames, embeddings, raw)
        _pipeline_run(ctx, detector, embedder, frames, detect_every=3, into=third)
    message = _sample_message(embedder, frames[0])
    report = _report(ctx, (every, third, raw), message, frames[0])
    if soak_s > 0:
        report["soak"] = soak(soak_s)
        growth = report["soak"]["growth_mb"]
        report["checks"].append(
            check("daemon RSS after warm-up, MB", report["soak"]["rss_mb_end"], "<=", 250)
        )
        report["checks"].append(check("daemon RSS growth over the run, MB", growth, "<=", 10))
    print(json.dumps(report, indent=2) if as_json else _text(report))
    return 0 if all(c["ok"] for c in report["checks"]) else 1


def _pipeline_run(
    ctx: Context, detector: Detector, embedder: Embedder, frames: list[Frame], *, detect_every: int, into: Run
) -> int:
    """One pass over the frames; returns how many objects it embedded."""
    config = ctx.config.pipeline.model_copy(update={"detect_every": detect_every})
    clock = SystemClock()
    outbox = scratch_outbox(ctx.config.outbox)  # the real SQLite enqueue is part of the per-frame cost
    pipeline = Pipeline(
        detector,
        embedder,
        Tracker(ctx.config.tracker),
        PaceController(config, clock),
        outbox.add,
        config,
        clock,
    )
    start = time.perf_counter()
    for frame in frames:
        began = time.perf_counter()
        pipeline.process(Frame(frame.image, time.time(), frame.index))
        into.host_ms.append((time.perf_counter() - began) * 1e3 - pipeline.last_invoke_ms)
    into.seconds += time.perf_counter() - start
    into.frames += len(frames)
    stored = outbox.newest_seq()
    outbox.close()
    into.embeddings += stored
    into.latency_ms.extend(pipeline.latency_ms.samples())
    return stored


def _raw_run(detector: Detector, embedder: Embedder, frames: list[Frame], embeddings: int, into: Run) -> None:
    """The same invokes on the same frames: what the interpreters alone allow."""
    det_in = detector.input_detail
    tensors = [
        to_tensor(
            resize_into(f.image, detector.input_width, detector.input_height, detector.model.entry.resize)[0],
            det_in,
            detector.model.entry.input,
        )
        for f in frames
    ]
    emb_in = embedder.input_detail
    crop = resize_into(frames[0].image, embedder.input_width, embedder.input_height, "stretch")[0]
    emb_tensor = to_tensor(crop, emb_in, embedder.model.entry.input)
    # Spread the pipeline's embedder invokes evenly over the frames.
    every = max(1, len(frames) // embeddings) if embeddings else 0
    det_i, emb_i = detector.model.interpreter, embedder.model.interpreter
    emb_i.set_tensor(emb_in["index"], emb_tensor)
    # Only the invokes are timed: inputs are set outside the clock, so the baseline is the interpreters
    # alone and every copy or conversion counts against the pipeline.
    for i, tensor in enumerate(tensors):
        det_i.set_tensor(det_in["index"], tensor)
        start = time.perf_counter()
        det_i.invoke()
        if every and i % every == 0:
            emb_i.invoke()
        into.seconds += time.perf_counter() - start
    into.frames += len(frames)


def _person_box(frame: Frame) -> Box:
    """Where the astronaut stands in the first demo frame."""
    return Box(frame.width * 0.3, frame.height * 0.2, frame.width * 0.7, frame.height * 0.9)


def _sample_message(embedder: Embedder, frame: Frame) -> ObjectMessage:
    emb = embedder.embed(frame.image, _person_box(frame))
    return ObjectMessage(
        1,
        0,
        1,
        0,
        "person",
        0.9,
        (0.3, 0.2, 0.7, 0.9),
        embedder.model.entry.id,
        embedder.model.entry.version,
        emb.scale,
        emb.zero_point,
        emb.values.tobytes(),
    )


def _report(ctx: Context, runs: tuple[Run, Run, Run], message: ObjectMessage, frame: Frame) -> dict[str, Any]:
    every, third, raw = runs
    size = len(encode(message))
    crop = context_crop(frame.image, _person_box(frame), ctx.config.embedder.context_margin)
    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(crop, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
    handoff = handoff_us()
    host_median = statistics.median(every.host_ms) + handoff / 1000
    lat = np.array(every.latency_ms)
    checks = [
        check("processed fps / raw-interpreter fps, detector every frame", every.fps / raw.fps, ">=", 0.95),
        check("fps with detect_every=3 / fps with detect_every=1", third.fps / every.fps, ">=", 2.5),
        check("non-inference ms per frame, median", host_median, "<=", 1.0),
        check("object message bytes, 1280-d", size, "<=", 1400),
    ]
    return {
        "machine": machine(),
        "threads": ctx.config.runtime.num_threads,
        "models": {"detector": ctx.config.models.detector, "embedder": ctx.config.models.embedder},
        "frames_per_run": len(every.host_ms) // ROUNDS,
        "rounds": ROUNDS,
        "fps": {
            "pipeline_every_frame": round(every.fps, 2),
            "raw_interpreters": round(raw.fps, 2),
            "pipeline_detect_every_3": round(third.fps, 2),
        },
        "embeddings_per_frame": round(every.embeddings / max(1, every.frames), 4),
        "non_inference_ms": {
            "median": round(host_median, 4),
            "p90": round(float(np.percentile(every.host_ms, 90)), 4),
            "handoff_us": round(handoff, 2),
        },
        "frame_to_publish_ms": {
            "p50": round(float(np.percentile(lat, 50)), 3) if lat.size else None,
            "p99": round(float(np.percentile(lat, 99)), 3) if lat.size else None,
        },
        "message": {
            "bytes": size,
            "jpeg_q90_crop_bytes": int(jpeg.size) if ok else None,
            "jpeg_over_message": round(jpeg.size / size, 1) if ok else None,
        },
        "checks": checks,
    }


def _text(report: dict[str, Any]) -> str:
    lines = [
        json.dumps({k: report[k] for k in ("fps", "non_inference_ms", "frame_to_publish_ms", "message")})
    ]
    lines += [
        f"{'OK ' if c['ok'] else 'FAIL'} {c['check']}: {c['value']} ({c['budget']})" for c in report["checks"]
    ]
    return "\n".join(lines)
