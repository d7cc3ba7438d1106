"""The pipeline with real models on the demo sequence: cadence, tracking, when to embed, model swaps."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from device.camera.image_folder import ImageFolderSource
from device.camera.source import Frame
from device.clock import FakeClock
from device.config import DetectorConfig, EmbedderConfig, OutboxConfig, PipelineConfig, TrackerConfig
from device.images import read_image
from device.link.outbox import Outbox
from device.pace import PaceController
from device.pipeline import Pipeline
from device.vision.embedder import Embedder
from device.vision.models import make_detector
from device.vision.runtime import LoadedModel
from device.vision.tracker import Tracker
from device.wire import ObjectMessage, decode, encode

from .conftest import ROOT

LoadModel = Callable[[str], LoadedModel]
# The person detector, a quarter of the default CenterNet's CPU here, where a test is about the
# pipeline's cadence or budgets and a person on the demo photos is all it needs. The tracking and the
# swap are tested on the default detector.
LIGHT = "ssdlite-person-int8"


def build(
    load_model: LoadModel, clock: FakeClock, detector: str = "centernet-coco-float", **settings: object
) -> tuple[Pipeline, list[ObjectMessage]]:
    sent: list[ObjectMessage] = []
    config = PipelineConfig.model_validate(settings)
    counter = iter(range(1, 10**6))

    def store(message: ObjectMessage) -> ObjectMessage:
        stored = replace(message, seq=next(counter))
        sent.append(stored)
        return stored

    pipeline = Pipeline(
        make_detector(load_model(detector), DetectorConfig(score_threshold=0.4)),
        Embedder(load_model("efficientnet-lite0-int8"), EmbedderConfig()),
        Tracker(TrackerConfig()),
        PaceController(config, clock),
        store,
        config,
        clock,
    )
    return pipeline, sent


def frames(clock: FakeClock, count: int, seconds: float = 4.0) -> Iterator[Frame]:
    """Frames as the camera paces them: the fake clock moves 1/15 s per frame, as they are taken."""
    source = ImageFolderSource(ROOT / "demo", fps=15, seconds=seconds, clock=clock)
    source.open()
    for _ in range(count):
        yield source.read()


def run(pipeline: Pipeline, clock: FakeClock, sequence: Iterable[Frame]) -> None:
    for frame in sequence:
        pipeline.process(frame)


def test_astronaut_keeps_one_track_and_is_embedded_rarely(load_model: LoadModel) -> None:
    clock = FakeClock()
    pipeline, sent = build(load_model, clock)
    run(pipeline, clock, frames(clock, 60))  # the astronaut, zooming and drifting for 4 s
    people = [m for m in sent if m.label == "person"]
    assert people, sent
    assert {m.track_id for m in people} == {people[0].track_id}
    assert 1 <= len(people) <= 6  # new, then only when the box changed a lot: never every frame
    assert pipeline.counters.detected_frames == 60
    assert [m.seq for m in sent] == list(range(1, len(sent) + 1))
    for message in sent:
        assert all(0.0 <= v <= 1.0 for v in message.box)
        assert message.box[0] < message.box[2] and message.box[1] < message.box[3]
        decoded = decode(encode(message))
        assert decoded.box == pytest.approx(message.box, abs=1e-6)  # float32 on the wire
        assert replace(decoded, box=message.box, score=message.score) == message


def test_detector_runs_every_nth_frame_and_tracking_fills_the_gaps(load_model: LoadModel) -> None:
    clock = FakeClock()
    pipeline, sent = build(load_model, clock, LIGHT, detect_every=3)
    run(pipeline, clock, frames(clock, 60))
    assert pipeline.counters.detected_frames == 20
    people = [m for m in sent if m.label == "person"]
    assert people and {m.track_id for m in people} == {people[0].track_id}


def test_reembed_interval(load_model: LoadModel) -> None:
    clock = FakeClock()
    pipeline, sent = build(load_model, clock, LIGHT, reembed_iou=0.01, reembed_interval_s=1.0)
    run(pipeline, clock, frames(clock, 60))  # 4 s of one object: about one embedding per second
    people = [m for m in sent if m.label == "person"]
    assert 3 <= len(people) <= 5
    gaps = np.diff([m.captured_us for m in people]) / 1e6
    assert all(gap >= 1.0 - 1e-3 for gap in gaps)


def test_embedding_budget_defers_and_counts(load_model: LoadModel) -> None:
    clock = FakeClock()
    pipeline, sent = build(load_model, clock, LIGHT, reembed_iou=1.0, embed_budget_per_s=2.0)
    run(pipeline, clock, frames(clock, 45))  # reembed_iou=1.0 asks for an embedding on every frame
    assert pipeline.counters.embeds_deferred > 0
    assert len(sent) <= 2 * 3 + 2  # 3 s at 2 per second, plus the initial burst


def test_models_swap_between_frames(load_model: LoadModel) -> None:
    clock = FakeClock()
    pipeline, sent = build(load_model, clock)
    sequence = frames(clock, 40)
    run(pipeline, clock, itertools.islice(sequence, 20))
    before = len(sent)
    swapped = make_detector(load_model(LIGHT), DetectorConfig(score_threshold=0.4))
    pipeline.request_swap(
        detector=swapped, embedder=Embedder(load_model("efficientnet-lite0-int8"), EmbedderConfig())
    )
    run(pipeline, clock, sequence)
    assert pipeline.detector is swapped and pipeline.counters.swaps == 1
    assert pipeline.counters.frames == 40  # no frame lost to the swap
    assert len(sent) > before  # a new embedder means every track is embedded again


def test_lores_detections_are_scaled_to_the_main_stream(load_model: LoadModel) -> None:
    clock = FakeClock()
    pipeline, _ = build(load_model, clock, LIGHT)
    main = next(frames(clock, 1))
    lores = np.asarray(cv2.resize(main.image, (300, 300)), dtype=np.uint8)
    with_lores = Frame(main.image, main.captured, main.index, lores=lores)
    direct = pipeline.detector.detect(main.image)
    scaled = pipeline._detect_scaled(with_lores)
    assert len(direct) == len(scaled) == 1
    assert scaled[0].box.iou(direct[0].box) > 0.95


def test_a_frames_several_objects_go_to_the_outbox_in_one_batch(
    load_model: LoadModel, tmp_path: Path
) -> None:
    clock = FakeClock()
    pipeline, singles = build(load_model, clock)
    box = Outbox(tmp_path / "outbox.sqlite", OutboxConfig(), clock)
    batches: list[list[ObjectMessage | None]] = []

    def store_many(messages: list[ObjectMessage]) -> list[ObjectMessage | None]:
        batches.append(box.add_many(messages))
        return batches[-1]

    pipeline.sink_many = store_many
    run(pipeline, clock, side_by_side(clock, 15))  # two demo photos in one frame: two new tracks at once
    assert batches and all(len(b) >= 2 for b in batches) and not singles  # several at once, one call
    stored = [m for b in batches for m in b if m is not None]
    assert [m.seq for m in stored] == [p.seq for p in box.pending(0, 1000)]
    assert [m.seq for m in stored] == list(range(stored[0].seq, stored[0].seq + len(stored)))
    assert pipeline.counters.embeddings == len(stored) and pipeline.counters.not_stored == 0


def side_by_side(clock: FakeClock, count: int) -> Iterator[Frame]:
    """The person's and the cat's photos next to each other, so one frame holds two objects."""
    photos = sorted(p for p in (ROOT / "demo").iterdir() if p.suffix in (".jpg", ".png"))
    left, right = (cv2.resize(read_image(p), (320, 480)) for p in photos[:2])
    image = np.hstack([left, right]).astype(np.uint8)
    for index in range(count):
        clock.advance(1 / 15)
        yield Frame(image, clock.time(), index)
