"""The per-frame loop body: detect every Nth frame, track every frame, embed new or changed tracks,
and hand each embedding to the sink as an object message.

The pipeline owns no thread and no I/O: the app feeds it frames from the camera's latest-frame slot,
and the sink (the durable outbox, drained by the link) owns delivery. Models can be swapped between frames.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from device.camera.source import Frame
from device.clock import Clock
from device.config import PipelineConfig
from device.metrics import MovingAverage, Percentiles
from device.ota.port import RunCounts
from device.pace import Pace, PaceController
from device.token_bucket import TokenBucket
from device.vision.detector import Detection, Detector
from device.vision.embedder import Embedder
from device.vision.geometry import Box
from device.vision.tracker import Track, Tracker
from device.wire import ObjectMessage

# Stores a message and gives it its seq; returns the stored message, or None if it could not be
# stored (outbox full or disk full: counted there).
Sink = Callable[[ObjectMessage], ObjectMessage | None]
# The same for a frame's several objects at once (one transaction: Outbox.add_many); one result each.
SinkMany = Callable[[list[ObjectMessage]], list[ObjectMessage | None]]
STAGES = ("detect", "track", "embed", "publish")


INVOKE_SAMPLES = 256


@dataclass
class _Embedded:
    box: Box
    at: float


@dataclass
class PipelineCounters:
    frames: int = 0
    detected_frames: int = 0
    embeddings: int = 0
    embeds_deferred: int = 0  # over the embedding budget; retried on a later frame
    not_stored: int = 0  # embedded, but the outbox could not keep it (full, or disk full)
    swaps: int = 0
    errors: int = 0  # frames that raised (counted by the app; the OTA health window watches them)


@dataclass
class _Swap:
    detector: Detector | None = None
    embedder: Embedder | None = None


@dataclass
class Pipeline:
    detector: Detector
    embedder: Embedder
    tracker: Tracker
    pace: PaceController
    sink: Sink
    config: PipelineConfig
    clock: Clock
    # When set, a frame that yields several objects hands them over in one call: one commit and one
    # wait for the outbox's lock on the frame thread instead of one per object.
    sink_many: SinkMany | None = None
    counters: PipelineCounters = field(default_factory=PipelineCounters)
    stage_ms: dict[str, MovingAverage] = field(default_factory=lambda: {s: MovingAverage() for s in STAGES})
    latency_ms: Percentiles = field(default_factory=Percentiles)  # capture -> handed to the sink
    # Milliseconds the last frame spent inside interpreter invokes (detector and embedder), so the
    # benchmark can tell inference from everything else the pipeline does.
    last_invoke_ms: float = 0.0
    # Each model's own recent invoke times, reset when it is swapped: the OTA health window compares a
    # new model's median against the one it replaced.
    invoke_ms: dict[str, Percentiles] = field(
        default_factory=lambda: {
            "detector": Percentiles(INVOKE_SAMPLES),
            "embedder": Percentiles(INVOKE_SAMPLES),
        }
    )
    _embedded: dict[int, _Embedded] = field(default_factory=dict)
    _embed_budget: TokenBucket = field(default_factory=lambda: TokenBucket(0.0, 0.0))
    _swap: _Swap | None = None
    _swap_lock: threading.Lock = field(default_factory=threading.Lock)

    def run_counts(self, kind: str) -> RunCounts:
        """OTA's view (device.ota.port.ModelHost): ints and a median, safe to read from its thread."""
        samples = self.invoke_ms[kind]
        count = len(samples)
        return RunCounts(
            self.counters.frames, self.counters.errors, count, samples.get(50) if count else None
        )

    def swap_model(self, model: Detector | Embedder) -> None:
        if isinstance(model, Embedder):
            self.request_swap(embedder=model)
        else:
            self.request_swap(detector=model)

    def request_swap(self, detector: Detector | None = None, embedder: Embedder | None = None) -> None:
        """Swap models before the next frame (called from another thread, e.g. the OTA updater). A
        request adds to one the frame thread has not taken yet (a check activates both kinds)."""
        with self._swap_lock:
            pending = self._swap or _Swap()
            self._swap = _Swap(detector or pending.detector, embedder or pending.embedder)

    def process(self, frame: Frame, pace: Pace | None = None) -> list[Track]:
        """One frame through detect (if due), track and embed. Returns the reported tracks."""
        self.apply_swap()
        pace = pace or self.pace.current()
        started = time.perf_counter()
        self.last_invoke_ms = 0.0
        detections = self._detect(frame) if self.counters.frames % pace.detect_every == 0 else None
        detected = time.perf_counter()
        tracks = self.tracker.step(detections, frame.width, frame.height)
        tracked = time.perf_counter()
        self.stage_ms["detect"].add((detected - started) * 1e3)
        self.stage_ms["track"].add((tracked - detected) * 1e3)
        self._embed_due(frame, tracks, pace)
        self._forget_gone(tracks)
        self.counters.frames += 1
        return tracks

    def apply_swap(self) -> None:
        """Take a requested swap now (the pipeline's own thread only: the frame loop, or the app before
        it reports which models run)."""
        with self._swap_lock:
            swap, self._swap = self._swap, None
        if swap is None:
            return
        if swap.detector is not None:
            self.detector = swap.detector
            self.invoke_ms["detector"] = Percentiles(INVOKE_SAMPLES)
        if swap.embedder is not None:
            self.embedder = swap.embedder
            self.invoke_ms["embedder"] = Percentiles(INVOKE_SAMPLES)
            self._embedded.clear()  # vectors from the old model are not comparable: embed again
        self.counters.swaps += 1

    def _detect(self, frame: Frame) -> list[Detection]:
        self.counters.detected_frames += 1
        detections = self._detect_scaled(frame)
        self.last_invoke_ms += self.detector.times.invoke_ms
        self.invoke_ms["detector"].add(self.detector.times.invoke_ms)
        return detections

    def _detect_scaled(self, frame: Frame) -> list[Detection]:
        if frame.lores is None:
            return self.detector.detect(frame.image)
        # Found on the lores stream (same sensor readout, smaller): scale boxes up to the main stream.
        sx = frame.width / frame.lores.shape[1]
        sy = frame.height / frame.lores.shape[0]
        return [
            Detection(
                d.class_id, d.label, d.score, Box(d.box.x1 * sx, d.box.y1 * sy, d.box.x2 * sx, d.box.y2 * sy)
            )
            for d in self.detector.detect(frame.lores)
        ]

    def _embed_due(self, frame: Frame, tracks: list[Track], pace: Pace) -> None:
        now = self.clock.monotonic()
        due = []
        for track in tracks:
            if not track.matched or not self._needs_embedding(track, now):
                continue
            if not self._take_token(pace, now):
                self.counters.embeds_deferred += 1
                continue
            due.append(track)
        if due:
            self._emit(frame, due, now)

    def _needs_embedding(self, track: Track, now: float) -> bool:
        last = self._embedded.get(track.track_id)
        if last is None:
            return True
        changed = track.box.iou(last.box) < self.config.reembed_iou
        return changed or now - last.at >= self.config.reembed_interval_s

    def _take_token(self, pace: Pace, now: float) -> bool:
        """Token bucket for the embedding budget; a burst of up to one second's budget is allowed."""
        if pace.embed_budget_per_s <= 0:
            return True
        self._embed_budget.rate = self._embed_budget.burst = pace.embed_budget_per_s
        return self._embed_budget.take(now)

    def _emit(self, frame: Frame, tracks: list[Track], now: float) -> None:
        messages = [self._build(frame, track) for track in tracks]
        built = time.perf_counter()
        if self.sink_many is not None and len(messages) > 1:
            stored = self.sink_many(messages)
        else:
            stored = [self.sink(message) for message in messages]
        done = time.perf_counter()
        self.counters.not_stored += sum(1 for s in stored if s is None)
        for track in tracks:
            self.stage_ms["publish"].add((done - built) * 1e3 / len(tracks))
            self.latency_ms.add((self.clock.time() - frame.captured) * 1e3)
            self._embedded[track.track_id] = _Embedded(track.box, now)
        self.counters.embeddings += len(tracks)

    def _build(self, frame: Frame, track: Track) -> ObjectMessage:
        start = time.perf_counter()
        embedding = self.embedder.embed(frame.image, track.box)
        self.last_invoke_ms += self.embedder.times.invoke_ms
        self.invoke_ms["embedder"].add(self.embedder.times.invoke_ms)
        built = time.perf_counter()
        entry = self.embedder.model.entry
        w, h = frame.width, frame.height
        message = ObjectMessage(
            seq=0,  # the outbox assigns it, in the same transaction that stores the message
            captured_us=round(frame.captured * 1e6),
            track_id=track.track_id,
            class_id=track.class_id,
            label=track.label,
            score=track.score,
            box=(track.box.x1 / w, track.box.y1 / h, track.box.x2 / w, track.box.y2 / h),
            model_id=entry.id,
            model_version=entry.version,
            scale=embedding.scale,
            zero_point=embedding.zero_point,
            vector=embedding.values.tobytes(),
        )
        self.stage_ms["embed"].add((built - start) * 1e3)
        return message

    def _forget_gone(self, tracks: list[Track]) -> None:
        live = {t.track_id for t in tracks}
        for track_id in [t for t in self._embedded if t not in live]:
            del self._embedded[track_id]
