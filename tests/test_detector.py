"""Real detectors on real photos: labels, scores, and boxes mapped back to source-frame pixels."""

from __future__ import annotations

import re
from collections.abc import Callable

import cv2
import numpy as np
import pytest

from device.config import DetectorConfig
from device.errors import ConfigError, ModelMismatchError
from device.vision.detector import Detection, Detector
from device.vision.geometry import Box
from device.vision.models import make_detector
from device.vision.preprocess import Image
from device.vision.runtime import LoadedModel

LoadModel = Callable[[str], LoadedModel]
Photo = Callable[[str], Image]
# What the float32 SSD finds on astronaut.png (512x512), the reference the int8 model is held to.
ASTRONAUT_PERSON = Box(3, 34, 374, 509)


def detector(load_model: LoadModel, model_id: str, **overrides: object) -> Detector:
    config = DetectorConfig.model_validate({"score_threshold": 0.3, **overrides})
    return make_detector(load_model(model_id), config)


def best(detections: list[Detection], label: str) -> Detection:
    matching = [d for d in detections if d.label == label]
    assert matching, f"no {label} in {detections}"
    return max(matching, key=lambda d: d.score)


def test_float_ssd_reference_box(load_model: LoadModel, photo: Photo) -> None:
    person = best(detector(load_model, "ssdlite-person-float").detect(photo("astronaut")), "person")
    assert person.box.iou(ASTRONAUT_PERSON) >= 0.95


def test_ssd_int8_finds_the_astronaut(load_model: LoadModel, photo: Photo) -> None:
    reference = best(detector(load_model, "ssdlite-person-float").detect(photo("astronaut")), "person")
    person = best(detector(load_model, "ssdlite-person-int8").detect(photo("astronaut")), "person")
    assert person.score >= 0.8
    assert person.box.iou(reference.box) >= 0.8
    assert person.class_id == 0


@pytest.mark.parametrize("model_id", ["centernet-coco-float", "centernet-coco-heatmap-float"])
def test_centernet_finds_the_astronaut(load_model: LoadModel, photo: Photo, model_id: str) -> None:
    reference = best(detector(load_model, "ssdlite-person-float").detect(photo("astronaut")), "person")
    person = best(detector(load_model, model_id).detect(photo("astronaut")), "person")
    assert person.score >= 0.5
    assert person.box.iou(reference.box) >= 0.8


@pytest.mark.parametrize("model_id", ["centernet-coco-float", "centernet-coco-heatmap-float"])
def test_centernet_finds_the_cup(load_model: LoadModel, photo: Photo, model_id: str) -> None:
    found = detector(load_model, model_id).detect(photo("coffee"))
    cup = best(found, "cup")
    assert cup.score >= 0.4
    assert found[0] == cup, "the cup is the most confident detection"
    frame = photo("coffee")
    assert 0 <= cup.box.x1 < cup.box.x2 <= frame.shape[1]
    assert 0 <= cup.box.y1 < cup.box.y2 <= frame.shape[0]


def test_heatmap_decoder_agrees_with_the_models_own_decoder(load_model: LoadModel, photo: Photo) -> None:
    for name in ("astronaut", "coffee", "chelsea"):
        full = detector(load_model, "centernet-coco-float").detect(photo(name))
        head = detector(load_model, "centernet-coco-heatmap-float").detect(photo(name))
        assert [d.label for d in full] == [d.label for d in head]
        for a, b in zip(full, head, strict=True):
            assert a.score == pytest.approx(b.score, abs=1e-3)
            assert a.box.iou(b.box) >= 0.98


def test_ssd_person_model_ignores_non_people(load_model: LoadModel, photo: Photo) -> None:
    ssd = detector(load_model, "ssdlite-person-int8", score_threshold=0.3)
    for name in ("coffee", "chelsea", "rocket"):
        assert ssd.detect(photo(name)) == []


def test_stretch_mapping_on_a_non_square_frame(load_model: LoadModel, photo: Photo) -> None:
    """SSD stretches the frame into 300x300: a frame stretched to 800x512 feeds the model the same
    pixels, so the box must come back scaled by exactly 800/512 in x."""
    square = photo("astronaut")
    wide = np.asarray(cv2.resize(square, (800, 512), interpolation=cv2.INTER_LINEAR), dtype=np.uint8)
    ssd = detector(load_model, "ssdlite-person-int8")
    a, b = best(ssd.detect(square), "person"), best(ssd.detect(wide), "person")
    sx = 800 / 512
    expected = Box(a.box.x1 * sx, a.box.y1, min(a.box.x2 * sx, 800), a.box.y2)
    assert b.box.iou(expected) >= 0.95
    assert abs(b.box.x2 - expected.x2) < 12


@pytest.mark.parametrize(
    ("model_id", "width", "height", "ox", "oy"),
    # SSD stretches: a canvas much wider than tall squashes the person below its detection threshold,
    # so its canvas is milder. CenterNet letterboxes and takes a very wide one.
    [("centernet-coco-float", 1100, 640, 520, 90), ("ssdlite-person-int8", 720, 560, 180, 30)],
)
def test_mapping_when_the_object_sits_off_centre(
    load_model: LoadModel, photo: Photo, model_id: str, width: int, height: int, ox: int, oy: int
) -> None:
    """The photo pasted into a grey canvas: the box must move by exactly the paste offset, through
    the letterbox padding (CenterNet) or the anisotropic stretch (SSD)."""
    square = photo("astronaut")
    canvas = np.full((height, width, 3), 127, dtype=np.uint8)
    canvas[oy : oy + 512, ox : ox + 512] = square
    model = detector(load_model, model_id)
    base = best(model.detect(square), "person").box
    moved = best(model.detect(canvas), "person").box
    expected = Box(base.x1 + ox, base.y1 + oy, base.x2 + ox, base.y2 + oy)
    assert moved.iou(expected) >= 0.8, (moved, expected)


def test_class_allow_list_and_max_detections(load_model: LoadModel, photo: Photo) -> None:
    everything = detector(load_model, "centernet-coco-float", score_threshold=0.1).detect(photo("coffee"))
    assert len({d.label for d in everything}) >= 2
    only_cups = detector(load_model, "centernet-coco-float", score_threshold=0.1, classes=("cup",))
    assert {d.label for d in only_cups.detect(photo("coffee"))} == {"cup"}
    capped = detector(load_model, "centernet-coco-float", score_threshold=0.1, max_detections=1)
    assert len(capped.detect(photo("coffee"))) == 1


def test_score_threshold_is_applied(load_model: LoadModel, photo: Photo) -> None:
    strict = detector(load_model, "centernet-coco-float", score_threshold=0.9).detect(photo("coffee"))
    assert strict == []
    loose = detector(load_model, "centernet-coco-float", score_threshold=0.1).detect(photo("coffee"))
    assert all(d.score >= 0.1 for d in loose)
    assert [d.score for d in loose] == sorted((d.score for d in loose), reverse=True)


def test_nms_removes_duplicate_people(load_model: LoadModel, photo: Photo) -> None:
    """CenterNet's raw output holds several overlapping boxes for the astronaut; NMS keeps one."""
    people = [
        d
        for d in detector(load_model, "centernet-coco-float", score_threshold=0.1).detect(photo("astronaut"))
        if d.label == "person"
    ]
    for i, a in enumerate(people):
        for b in people[i + 1 :]:
            assert a.box.iou(b.box) < 0.5


def test_unknown_class_in_allow_list_is_a_config_error(load_model: LoadModel) -> None:
    with pytest.raises(ConfigError, match="'persn' is not a label of model centernet-coco-float"):
        detector(load_model, "centernet-coco-float", classes=("persn",))


def test_detection_is_frozen(load_model: LoadModel, photo: Photo) -> None:
    found = detector(load_model, "ssdlite-person-int8").detect(photo("astronaut"))
    with pytest.raises(AttributeError):
        found[0].score = 1.0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("model_id", "adapter", "expected"),
    [
        ("efficientnet-lite0-int8", "ssd", "expected boxes [1, N, 4]"),
        ("ssdlite-person-int8", "centernet", "expected one output [1, K, 6]"),
        ("ssdlite-person-int8", "centernet-heatmap", "expected heatmap [1, H, W, C]"),
    ],
)
def test_model_that_does_not_fit_its_adapter(
    load_model: LoadModel, model_id: str, adapter: str, expected: str
) -> None:
    model = load_model(model_id)
    wrong = LoadedModel(
        model.entry.model_copy(update={"adapter": adapter, "outputs": {}}),
        model.interpreter,
        model.placement,
        model.labels,
    )
    with pytest.raises(ModelMismatchError, match=re.escape(expected)) as info:
        make_detector(wrong, DetectorConfig())
    assert "found " in str(info.value) and model_id in str(info.value)


def test_ssd_outputs_found_by_shape_without_names(load_model: LoadModel, photo: Photo) -> None:
    model = load_model("ssdlite-person-int8")
    unnamed = LoadedModel(
        model.entry.model_copy(update={"outputs": {}}), model.interpreter, model.placement, model.labels
    )
    person = best(make_detector(unnamed, DetectorConfig()).detect(photo("astronaut")), "person")
    assert person.score >= 0.8
