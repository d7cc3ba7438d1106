"""The sample photos used for int8 calibration and for the behaviour checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

# Named, not globbed: a photo added to tests/data must not silently change the int8 calibration.
SAMPLE_PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.png")


def load_rgb(path: Path, size: int) -> np.ndarray:
    """Decode a PNG as float32 RGB 0..255, bilinear-resized to size x size."""
    pixels = tf.io.decode_png(tf.io.read_file(str(path)), channels=3)
    return np.asarray(tf.image.resize(pixels, (size, size)), dtype=np.float32)
