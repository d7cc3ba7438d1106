"""The real int8 embedder on real photos: invariance to flips and crops, separation of different things."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np
import pytest

from device.vision.embedder import Embedder, Embedding, context_crop, cosine, quantise_float
from device.vision.geometry import Box
from device.vision.preprocess import Image

Photo = Callable[[str], Image]
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")


def test_vector_is_int8_with_the_tensors_own_quantisation(embedder: Embedder, photo: Photo) -> None:
    emb = embedder.embed(photo("astronaut"))
    assert emb.values.dtype == np.int8
    assert emb.dim == 1280 == embedder.dim
    scale, zero_point = embedder.output_detail["quantization"]
    assert emb.scale == pytest.approx(scale)
    assert emb.zero_point == zero_point
    assert float(np.linalg.norm(emb.vector)) == pytest.approx(1.0, abs=1e-5)
    expected = (emb.values.astype(np.float32) - zero_point) * scale
    assert np.allclose(emb.vector, expected / np.linalg.norm(expected), atol=1e-6)


@pytest.mark.parametrize("name", PHOTOS)
def test_flipped_photo_is_the_same_thing(embedder: Embedder, photo: Photo, name: str) -> None:
    image = photo(name)
    assert cosine(embedder.embed(image), embedder.embed(np.ascontiguousarray(image[:, ::-1]))) >= 0.9


@pytest.mark.parametrize("name", PHOTOS)
def test_cropped_photo_is_the_same_thing(embedder: Embedder, photo: Photo, name: str) -> None:
    image = photo(name)
    h, w = image.shape[:2]
    cropped = np.ascontiguousarray(image[h // 20 : h - h // 20, w // 20 : w - w // 20])
    assert cosine(embedder.embed(image), embedder.embed(cropped)) >= 0.9


def test_different_photos_are_different_things(embedder: Embedder, photo: Photo) -> None:
    vectors = {name: embedder.embed(photo(name)) for name in PHOTOS}
    for a, b in itertools.combinations(PHOTOS, 2):
        assert cosine(vectors[a], vectors[b]) <= 0.4, (a, b)


def test_box_crop_follows_the_object(embedder: Embedder, photo: Photo) -> None:
    """The same object at another place in another frame embeds the same, through its box."""
    image = photo("coffee")
    box = Box(170, 16, 416, 265)  # the cup, as CenterNet finds it
    canvas = np.full((700, 900, 3), 90, dtype=np.uint8)
    canvas[200:600, 250:850] = image
    moved = Box(box.x1 + 250, box.y1 + 200, box.x2 + 250, box.y2 + 200)
    assert cosine(embedder.embed(image, box), embedder.embed(canvas, moved)) >= 0.9
    whole = embedder.embed(photo("astronaut"))
    assert cosine(embedder.embed(image, box), whole) <= 0.4


def test_context_crop_is_square_and_clipped(photo: Photo) -> None:
    image = photo("coffee")  # 600x400
    crop = context_crop(image, Box(100, 100, 200, 150), margin=0.1)
    assert crop.shape[0] == crop.shape[1] == 120
    edge = context_crop(image, Box(0, 0, 50, 300), margin=0.5)
    assert edge.shape[0] <= image.shape[0] and edge.shape[1] <= image.shape[1]
    assert edge.shape[0] > 0 and edge.shape[1] > 0


def test_cosine_helper() -> None:
    a = Embedding.from_quantised(np.array([10, 0, -10], dtype=np.int8), 0.5, 0)
    b = Embedding.from_quantised(np.array([10, 0, -10], dtype=np.int8), 0.1, 0)
    c = Embedding.from_quantised(np.array([-10, 0, 10], dtype=np.int8), 0.5, 0)
    assert cosine(a, b) == pytest.approx(1.0)
    assert cosine(a, c) == pytest.approx(-1.0)
    assert cosine(np.array([1.0, 0.0]), np.array([0.0, 2.0])) == pytest.approx(0.0)


def test_float_vectors_quantise_to_int8_faithfully() -> None:
    rng = np.random.default_rng(7)
    vector = rng.normal(size=1280).astype(np.float32)
    emb = quantise_float(vector)
    assert emb.values.dtype == np.int8 and emb.zero_point == 0
    assert cosine(emb.vector, vector) >= 0.999
