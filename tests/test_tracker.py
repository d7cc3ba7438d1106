"""The SORT-style tracker on synthetic motion: stable ids, prediction between detections, birth and death."""

from __future__ import annotations

from device.config import TrackerConfig
from device.vision.detector import Detection
from device.vision.geometry import Box
from device.vision.tracker import Tracker

W, H = 640, 480


def det(
    x: float, y: float, w: float = 80, h: float = 120, class_id: int = 0, label: str = "person"
) -> Detection:
    return Detection(class_id, label, 0.9, Box(x, y, x + w, y + h))


def tracker(**overrides: object) -> Tracker:
    return Tracker(TrackerConfig.model_validate({"min_hits": 2, "max_age": 3, **overrides}))


def test_a_moving_object_keeps_its_id() -> None:
    t = tracker()
    ids = set()
    for i in range(40):
        tracks = t.step([det(100 + 5 * i, 100 + 2 * i)], W, H)
        if i >= 1:
            assert len(tracks) == 1
            ids.add(tracks[0].track_id)
    assert ids == {1}


def test_tracks_are_reported_only_after_min_hits() -> None:
    t = tracker(min_hits=3)
    assert t.step([det(100, 100)], W, H) == []
    assert t.step([det(102, 100)], W, H) == []
    assert len(t.step([det(104, 100)], W, H)) == 1


def test_prediction_follows_the_object_between_detections() -> None:
    """With detection every 3rd frame, the predicted boxes keep moving at the learned velocity."""
    t = tracker()
    x = 100.0
    for frame in range(30):
        x = 100 + 6 * frame
        detections = [det(x, 200)] if frame % 3 == 0 else None
        tracks = t.step(detections, W, H)
    assert len(tracks) == 1
    truth = Box(x, 200, x + 80, 320)
    assert tracks[0].box.iou(truth) > 0.8, (tracks[0].box, truth)
    assert not tracks[0].matched


def test_two_objects_crossing_paths_keep_their_ids() -> None:
    t = tracker()
    history: dict[int, list[float]] = {}
    for i in range(30):
        a, b = det(50 + 10 * i, 100), det(400 - 10 * i, 300, label="cup", class_id=41)
        for track in t.step([a, b], W, H):
            history.setdefault(track.track_id, []).append(track.box.x1)
    assert len(history) == 2
    (_, firsts), (_, seconds) = sorted(history.items())
    assert firsts[-1] > firsts[0] and seconds[-1] < seconds[0]  # each id kept its own direction


def test_classes_never_swap_tracks() -> None:
    t = tracker()
    t.step([det(100, 100)], W, H)
    t.step([det(100, 100)], W, H)
    tracks = t.step([det(100, 100, class_id=41, label="cup")], W, H)
    assert all(track.label == "person" for track in tracks)
    assert len(t) == 2  # the cup is a new track, not the person relabelled


def test_a_lost_track_dies_after_max_age_and_a_return_gets_a_new_id() -> None:
    t = tracker(max_age=2)
    t.step([det(100, 100)], W, H)
    for _ in range(2):
        (track,) = t.step([det(100, 100)], W, H)
    for _ in range(3):
        t.step([], W, H)
    assert len(t) == 0
    t.step([det(100, 100)], W, H)
    (again,) = t.step([det(100, 100)], W, H)
    assert again.track_id != track.track_id


def test_boxes_are_clipped_to_the_frame() -> None:
    t = tracker()
    for i in range(10):
        tracks = t.step([det(600 + 3 * i, 400)], W, H)
    for track in tracks:
        assert 0 <= track.box.x1 <= track.box.x2 <= W and 0 <= track.box.y1 <= track.box.y2 <= H
