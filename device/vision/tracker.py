"""SORT-style multi-object tracker: a constant-velocity Kalman filter per object, IoU matching.

The detector runs every Nth frame; on the frames between, `step(None)` moves every track by its
predicted velocity, so boxes keep following objects while the heavy model rests. Matching is greedy
by IoU (highest first, same class only). With the handful of objects a shelf camera sees, greedy gives
the same assignment as the Hungarian method, without pulling SciPy onto the device.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from device.config import TrackerConfig
from device.vision.detector import Detection
from device.vision.geometry import Box


@dataclass(frozen=True)
class Track:
    track_id: int
    class_id: int
    label: str
    score: float
    box: Box  # source-frame pixels: the last detection on detection frames, the prediction between
    hits: int
    age: int  # frames since the track was born
    matched: bool  # a detection updated the track on this frame


class _KalmanTrack:
    """State (cx, cy, area, aspect, vx, vy, v_area), measured (cx, cy, area, aspect), as in SORT."""

    def __init__(self, track_id: int, detection: Detection) -> None:
        self.track_id = track_id
        self.detection = detection
        self.hits, self.misses, self.age = 1, 0, 0
        self.matched = True
        kf = cv2.KalmanFilter(7, 4)
        kf.transitionMatrix = np.eye(7, dtype=np.float32)
        kf.transitionMatrix[0, 4] = kf.transitionMatrix[1, 5] = kf.transitionMatrix[2, 6] = 1.0
        kf.measurementMatrix = np.eye(4, 7, dtype=np.float32)
        # SORT's noise settings: the first velocity estimate is very uncertain; area changes slowly.
        kf.measurementNoiseCov = np.diag([1, 1, 10, 10]).astype(np.float32)
        kf.errorCovPost = np.diag([10, 10, 10, 10, 1e4, 1e4, 1e4]).astype(np.float32)
        kf.processNoiseCov = np.diag([1, 1, 1, 1, 0.01, 0.01, 1e-4]).astype(np.float32)
        kf.statePost = np.vstack([_measure(detection.box), np.zeros((3, 1), np.float32)])
        self.kf = kf

    def predict(self) -> None:
        state = self.kf.statePost
        if state[2, 0] + state[6, 0] <= 0:  # an area about to go negative: stop shrinking
            state[6, 0] = 0.0
        self.kf.predict()
        self.age += 1
        self.matched = False

    def update(self, detection: Detection) -> None:
        self.kf.correct(_measure(detection.box))
        self.detection = detection
        self.hits += 1
        self.misses = 0
        self.matched = True

    @property
    def box(self) -> Box:
        if self.matched:
            return self.detection.box
        return _box(self.kf.statePost)

    def snapshot(self, width: int, height: int) -> Track:
        d = self.detection
        box = self.box.clip(width, height)
        return Track(self.track_id, d.class_id, d.label, d.score, box, self.hits, self.age, self.matched)


class Tracker:
    def __init__(self, config: TrackerConfig) -> None:
        self.config = config
        self._tracks: list[_KalmanTrack] = []
        self._next_id = 1

    def step(self, detections: list[Detection] | None, width: int, height: int) -> list[Track]:
        """Advance one frame. `detections` is None on frames where the detector did not run."""
        for track in self._tracks:
            track.predict()
        if detections is not None:
            self._associate(detections)
        # A track still tentative (too few hits) or predicted out of the frame is not reported.
        snapshots = [t.snapshot(width, height) for t in self._tracks if t.hits >= self.config.min_hits]
        return [s for s in snapshots if s.box.area > 0]

    def _associate(self, detections: list[Detection]) -> None:
        pairs = sorted(
            (
                (track.box.iou(det.box), ti, di)
                for ti, track in enumerate(self._tracks)
                for di, det in enumerate(detections)
                if track.detection.class_id == det.class_id
            ),
            reverse=True,
        )
        used_tracks: set[int] = set()
        used_detections: set[int] = set()
        for iou, ti, di in pairs:
            if iou < self.config.iou_match:
                break
            if ti in used_tracks or di in used_detections:
                continue
            self._tracks[ti].update(detections[di])
            used_tracks.add(ti)
            used_detections.add(di)
        for ti, track in enumerate(self._tracks):
            if ti not in used_tracks:
                track.misses += 1
        self._tracks = [t for t in self._tracks if t.misses <= self.config.max_age]
        for di, det in enumerate(detections):
            if di not in used_detections:
                self._tracks.append(_KalmanTrack(self._next_id, det))
                self._next_id += 1

    def __len__(self) -> int:
        return len(self._tracks)


def _measure(box: Box) -> np.ndarray:
    w, h = max(box.width, 1e-3), max(box.height, 1e-3)
    return np.array([[box.x1 + w / 2], [box.y1 + h / 2], [w * h], [w / h]], dtype=np.float32)


def _box(state: np.ndarray) -> Box:
    cx, cy, area, aspect = (float(v) for v in state[:4, 0])
    w = float(np.sqrt(max(area * aspect, 0.0)))
    h = area / w if w > 0 else 0.0
    return Box(cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
