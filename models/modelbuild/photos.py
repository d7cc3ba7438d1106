"""The sample photos used for int8 calibration and for the behaviour checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

from .errors import BuildError

# Named, not globbed: a photo added to tests/data must not silently change the int8 calibration.
SAMPLE_PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.png")


def load_rgb(path: Path, size: int) -> np.ndarray:
    """Decode a PNG as float32 RGB 0..255, bilinear-resized to size x size."""
    pixels = tf.io.decode_png(tf.io.read_file(str(path)), channels=3)
    return np.asarray(tf.image.resize(pixels, (size, size)), dtype=np.float32)


def calibration_set(images: Path, size: int) -> list[np.ndarray]:
    """The sample photos and their mirror images, size x size float RGB 0..255.

    The representative dataset of every full-int8 conversion. A weak set (see README): production
    releases should calibrate on camera frames. Mirroring doubles it at no cost and keeps people
    upright.
    """
    missing = [name for name in SAMPLE_PHOTOS if not (images / name).is_file()]
    if missing:
        raise BuildError(f"calibration photos missing from {images}: {', '.join(missing)}")
    photos = [load_rgb(images / name, size) for name in SAMPLE_PHOTOS]
    return photos + [p[:, ::-1, :].copy() for p in photos]
