"""`appliance bench pipeline`: the pipeline against the bare interpreters, side by side in one run.

Every figure is a ratio or a difference between runs made here, on the same frames, models and thread
count, so the result says something on any machine: how much the pipeline costs on top of inference,
and what tracking with the detector every 3rd frame buys.

The sides (the pipeline with the detector on every frame, the bare interpreters, the pipeline with
the detector on every 3rd frame, and the first again with one and with ten live-view viewers watching)
take turns in blocks of BLOCK frames, in a rotating order, so that a machine that slows down or speeds
up (another process taking a core, the CPU's clock) hits all of them alike. Timing whole runs one after
another let that drift decide the ratio: on a shared machine the pipeline came out up to 22% faster
than the bare invokes it contains.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from device.camera.source import Frame
from device.clock import SystemClock
from device.commands.bench_live import LiveRig, live_checks, quote_to_tag_ms
from device.commands.bench_soak import soak, soak_checks
from device.commands.bench_support import handoff_us, machine, render_frames, scratch_outbox
from device.commands.context import Context
from device.link.outbox import Outbox
from device.pace import PaceController
from device.pipeline import Pipeline
from device.vision.detector import Detector
from device.vision.embedder import Embedder, context_crop
from device.vision.geometry import Box
from device.vision.models import make_detector
from device.vision.preprocess import Image, resize_into, to_tensor
from device.vision.tracker import Track, Tracker
from device.wire import ObjectMessage, encode
from rigs.report import LoadSpan, check, check_lines, load_line

ROUNDS = 5  # passes over the frames; the ratios are reported as median, min and max over them
BLOCK = 40  # frames per turn: short enough that the machine's speed barely moves within one
# The bare invokes are an upper bound for the pipeline, which runs the same invokes and more: a ratio
# above this says the method is broken (drift, a different workload), not that the pipeline is fast.
RATIO_CEILING = 1.02
RATIO_GOAL = 0.95
JPEG_QUALITY = 90
JPEG_GOAL = 20.0
SIDES = ("every", "raw", "third", "one", "ten")
VIEWERS = {"every": 0, "one": 1, "ten": 10}  # live-view viewers watching while a side runs


@dataclass
class Times:
    """Seconds per round for each side, and the pipeline's per-frame figures."""

    every: list[float] = field(default_factory=list)
    raw: list[float] = field(default_factory=list)
    third: list[float] = field(default_factory=list)
    one: list[float] = field(default_factory=list)
    ten: list[float] = field(default_factory=list)
    host_ms: list[float] = field(default_factory=list)  # per frame, outside interpreter invokes
    latency_ms: list[float] = field(default_factory=list)


def bench_pipeline(ctx: Context, frame_count: int, soak_s: float, as_json: bool) -> int:
    load = LoadSpan()
    frames = render_frames(frame_count, ctx.config.camera.width, ctx.config.camera.height)
    detector = make_detector(ctx.factory.load(ctx.manifest, ctx.config.models.detector), ctx.config.detector)
    embedder = Embedder(ctx.factory.load(ctx.manifest, ctx.config.models.embedder), ctx.config.embedder)
    # An untimed pass first: it warms the interpreters and caches, and records what the pipeline does
    # on these frames (which frames it embeds on, the messages it publishes).
    embeds, published, pairs = _reference_pass(ctx, detector, embedder, frames)
    rig = LiveRig()
    rig.server.slot.offer(*pairs[0])  # a viewer's first frame, before any side has run
    try:
        times = _timed_rounds(ctx, detector, embedder, frames, embeds, rig=rig)
        results = _results(ctx, times, len(frames), published)
        results["live"] = _live_results(times, rig, pairs)
    finally:
        rig.close()
    report: dict[str, Any] = {"machine": machine(), **results, "checks": pipeline_checks(results)}
    if soak_s > 0:
        report["soak"] = soak(soak_s)
        report["checks"] += soak_checks(report["soak"])
    report["machine_load"] = load.report()
    print(json.dumps(report, indent=2) if as_json else _text(report))
    return 0 if all(c["ok"] for c in report["checks"]) else 1


def pipeline_checks(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The budgets; tests/test_bench.py feeds these a bad measurement to show each can fail."""
    ratio = results["processed_over_raw"]["median"]
    return [
        check(
            "processed fps / raw-interpreter fps, detector every frame, median of rounds", ratio, ">=", 0.95
        ),
        check(
            "processed / raw, median of rounds: above this the baseline is no upper bound (broken method)",
            ratio,
            "<=",
            RATIO_CEILING,
        ),
        check(
            "fps with detect_every=3 / fps with detect_every=1, median of rounds",
            results["every3_over_every1"]["median"],
            ">=",
            2.5,
        ),
        check("non-inference ms per frame, median", results["non_inference_ms"]["median"], "<=", 1.0),
        *live_checks(results["live"]),
        check("object message bytes", results["message"]["bytes"], "<=", 1400),
        check(
            "q90 JPEG of each published box / its object message, median",
            results["message"]["jpeg_over_message"]["median"],
            ">=",
            JPEG_GOAL,
        ),
    ]


def _pipeline(
    ctx: Context,
    detector: Detector,
    embedder: Embedder,
    detect_every: int,
    outbox: Outbox,
    *,
    sink: Callable[[ObjectMessage], ObjectMessage | None] | None = None,
) -> Pipeline:
    config = ctx.config.pipeline.model_copy(update={"detect_every": detect_every})
    clock = SystemClock()
    # The real SQLite enqueue is part of the per-frame cost.
    return Pipeline(
        detector,
        embedder,
        Tracker(ctx.config.tracker),
        PaceController(config, clock),
        sink or outbox.add,
        config,
        clock,
    )


def _reference_pass(
    ctx: Context, detector: Detector, embedder: Embedder, frames: list[Frame]
) -> tuple[list[int], list[tuple[Image, ObjectMessage]], list[tuple[Frame, list[Track]]]]:
    """Embeddings per frame, each published message with the frame it came from, and each frame with
    its tracks (what the live page shows)."""
    with scratch_outbox(ctx.config.outbox) as outbox:
        sent: list[ObjectMessage] = []

        def sink(message: ObjectMessage) -> ObjectMessage | None:
            sent.append(message)
            return outbox.add(message)

        pipeline = _pipeline(ctx, detector, embedder, 1, outbox, sink=sink)
        embeds, published, pairs = [], [], []
        for frame in frames:
            before = len(sent)
            pairs.append((frame, pipeline.process(Frame(frame.image, time.time(), frame.index))))
            embeds.append(len(sent) - before)
            published += [(frame.image, message) for message in sent[before:]]
    return embeds, published, pairs


class _Side:
    """One pipeline kept across the blocks of a round, so its tracker sees the whole sequence."""

    def __init__(
        self,
        ctx: Context,
        detector: Detector,
        embedder: Embedder,
        detect_every: int,
        rig: LiveRig | None = None,
    ) -> None:
        self._scratch = contextlib.ExitStack()
        self.outbox = self._scratch.enter_context(scratch_outbox(ctx.config.outbox))
        self.pipeline = _pipeline(ctx, detector, embedder, detect_every, self.outbox)
        self.host_ms: list[float] = []
        self.rig = rig  # the frame path hands the live view each frame, as the daemon's does

    def run(self, block: list[Frame]) -> float:
        pipeline, host_ms = self.pipeline, self.host_ms
        slot = self.rig.server.slot if self.rig is not None else None
        start = time.perf_counter()
        for frame in block:
            began = time.perf_counter()
            fresh = Frame(frame.image, time.time(), frame.index)
            tracks = pipeline.process(fresh)
            if slot is not None:
                slot.offer(fresh, tracks)
            host_ms.append((time.perf_counter() - began) * 1e3 - pipeline.last_invoke_ms)
        return time.perf_counter() - start

    def close(self) -> list[float]:
        self._scratch.close()
        return self.pipeline.latency_ms.samples()


def _timed_rounds(
    ctx: Context,
    detector: Detector,
    embedder: Embedder,
    frames: list[Frame],
    embeds: list[int],
    *,
    rig: LiveRig,
) -> Times:
    times = Times()
    blocks = [range(i, min(i + BLOCK, len(frames))) for i in range(0, len(frames), BLOCK)]
    turn = 0
    for _ in range(ROUNDS):
        sides = {name: _Side(ctx, detector, embedder, 1, rig) for name in VIEWERS}
        sides["third"] = _Side(ctx, detector, embedder, 3)
        spent = dict.fromkeys(SIDES, 0.0)
        for block in blocks:
            chunk, counts = frames[block.start : block.stop], embeds[block.start : block.stop]
            turn += 1
            for name in SIDES[turn % len(SIDES) :] + SIDES[: turn % len(SIDES)]:  # each goes first in turn
                if name == "raw":
                    spent[name] += _raw_block(detector, embedder, chunk, counts)
                    continue
                viewers = VIEWERS.get(name, 0)
                if viewers:
                    rig.watch(viewers)  # connecting is outside the clock; watching is inside
                spent[name] += sides[name].run(chunk)
                if viewers:
                    rig.watch(0)
        for name in SIDES:
            getattr(times, name).append(spent[name])
        times.host_ms += sides["every"].host_ms
        times.latency_ms += sides["every"].close()
        for name in ("third", "one", "ten"):
            sides[name].close()
    return times


def _live_results(times: Times, rig: LiveRig, pairs: list[tuple[Frame, list[Track]]]) -> dict[str, Any]:
    frames = rig.server.figures()
    return {
        # Per round: same frames, so a ratio of times is a ratio of frame rates.
        "one_over_none": _spread([e / o for e, o in zip(times.every, times.one, strict=True)]),
        "ten_over_none": _spread([e / t for e, t in zip(times.every, times.ten, strict=True)]),
        "frames_encoded": frames["frames_encoded"],
        "encode_ms_last": frames["encode_ms"],
        "quote_to_tag_ms": quote_to_tag_ms(rig, pairs),
    }


def _raw_block(detector: Detector, embedder: Embedder, frames: list[Frame], embeds: list[int]) -> float:
    """The same invokes on the same frames: the detector on each, the embedder as many times on each
    frame as the pipeline embedded there. Only the invokes are timed (inputs are set outside the clock),
    so the baseline is the interpreters alone and every copy or conversion counts against the pipeline."""
    det_in, emb_in = detector.input_detail, embedder.input_detail
    det_i, emb_i = detector.model.interpreter, embedder.model.interpreter
    crop = resize_into(frames[0].image, embedder.input_width, embedder.input_height, "stretch")[0]
    emb_tensor = to_tensor(crop, emb_in, embedder.model.entry.input)
    seconds = 0.0
    for frame, count in zip(frames, embeds, strict=True):
        pixels = resize_into(
            frame.image, detector.input_width, detector.input_height, detector.model.entry.resize
        )
        det_i.set_tensor(det_in["index"], to_tensor(pixels[0], det_in, detector.model.entry.input))
        emb_i.set_tensor(emb_in["index"], emb_tensor)
        start = time.perf_counter()
        det_i.invoke()
        for _ in range(count):
            emb_i.invoke()
        seconds += time.perf_counter() - start
    return seconds


def _spread(values: list[float]) -> dict[str, Any]:
    return {
        "median": round(statistics.median(values), 4),
        "min": round(min(values), 4),
        "max": round(max(values), 4),
        "rounds": [round(v, 4) for v in values],
    }


def _results(
    ctx: Context, times: Times, frames: int, published: list[tuple[Image, ObjectMessage]]
) -> dict[str, Any]:
    handoff = handoff_us()
    lat = np.array(times.latency_ms)
    total = {name: frames * ROUNDS / sum(getattr(times, name)) for name in SIDES}
    return {
        "threads": ctx.config.runtime.num_threads,
        "models": {"detector": ctx.config.models.detector, "embedder": ctx.config.models.embedder},
        "frames_per_round": frames,
        "rounds": ROUNDS,
        "block_frames": BLOCK,
        "fps": {
            "pipeline_every_frame": round(total["every"], 2),
            "raw_interpreters": round(total["raw"], 2),
            "pipeline_detect_every_3": round(total["third"], 2),
        },
        # Per round: same frames, so a ratio of times is a ratio of frame rates.
        "processed_over_raw": _spread([r / e for r, e in zip(times.raw, times.every, strict=True)]),
        "every3_over_every1": _spread([e / t for e, t in zip(times.every, times.third, strict=True)]),
        "non_inference_ms": {
            "median": round(statistics.median(times.host_ms) + handoff / 1000, 4),
            "p90": round(float(np.percentile(times.host_ms, 90)), 4),
            "p99": round(float(np.percentile(times.host_ms, 99)), 4),
            "handoff_us": round(handoff, 2),
        },
        "frame_to_publish_ms": {
            "p50": round(float(np.percentile(lat, 50)), 3) if lat.size else None,
            "p99": round(float(np.percentile(lat, 99)), 3) if lat.size else None,
        },
        "message": payload(published, ctx.config.embedder.context_margin),
    }


def payload(published: list[tuple[Image, ObjectMessage]], margin: float) -> dict[str, Any]:
    """What sending a photo would cost instead: a q90 JPEG of each published box over its message.

    Judged on the box itself (the detector's box as the track reports it, no margin): the photo a
    photo-sending design would send. The embedder's crop, grown by its context margin, is reported too.
    """
    sizes, bare, wide, labels = [], [], [], []
    for image, message in published:
        size = len(encode(message))
        height, width = image.shape[:2]
        x1, y1, x2, y2 = message.box
        box = Box(x1 * width, y1 * height, x2 * width, y2 * height)
        sizes.append(size)
        bare.append(
            _jpeg_bytes(image[int(box.y1) : int(np.ceil(box.y2)), int(box.x1) : int(np.ceil(box.x2))])
        )
        wide.append(_jpeg_bytes(context_crop(image, box, margin)))
        labels.append(message.label)
    return {
        "published": len(sizes),
        "bytes": max(sizes, default=0),
        "dim": len(published[0][1].vector) if published else 0,
        "jpeg_over_message": _ratios(bare, sizes),
        "jpeg_with_context_margin_over_message": _ratios(wide, sizes),
        "per_box": [
            {"label": label, "jpeg_bytes": jpeg, "ratio": round(jpeg / size, 1)}
            for label, jpeg, size in zip(labels, bare, sizes, strict=True)
        ],
    }


def _ratios(jpegs: list[int], sizes: list[int]) -> dict[str, float]:
    ratios = [j / s for j, s in zip(jpegs, sizes, strict=True)]
    if not ratios:  # nothing published: nothing shows the message is smaller
        return {"median": 0.0, "p10": 0.0, "min": 0.0}
    return {
        "median": round(float(np.median(ratios)), 2),
        "p10": round(float(np.percentile(ratios, 10)), 2),
        "min": round(min(ratios), 2),
    }


def _jpeg_bytes(crop: Image) -> int:
    ok, jpeg = cv2.imencode(
        ".jpg",
        cv2.cvtColor(np.ascontiguousarray(crop), cv2.COLOR_RGB2BGR),
        [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY],
    )
    return int(jpeg.size) if ok else 0


def _text(report: dict[str, Any]) -> str:
    keys = (
        "fps",
        "processed_over_raw",
        "every3_over_every1",
        "non_inference_ms",
        "frame_to_publish_ms",
        "live",
    )
    figures = {k: report[k] for k in keys}
    figures["message"] = {k: v for k, v in report["message"].items() if k != "per_box"}
    if "soak" in report:
        figures["soak"] = report["soak"]
    return "\n".join([json.dumps(figures), load_line(report["machine_load"]), check_lines(report["checks"])])
