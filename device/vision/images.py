"""Reading still images from disk as RGB frames (the CLI and the image-folder source use this)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from device.errors import InputError
from device.vision.preprocess import Image


def read_image(path: Path) -> Image:
    """The image at `path` as an RGB uint8 array; InputError naming the file when it cannot be read."""
    if not path.is_file():
        raise InputError(f"image {path} does not exist or is not a file")
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise InputError(f"image {path} cannot be read: {exc.strerror}") from None
    # imdecode returns None (it does not raise) on truncated or non-image data.
    decoded = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if decoded is None:
        raise InputError(f"image {path} is not a readable image (corrupt, truncated or not PNG/JPEG)")
    return np.ascontiguousarray(cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB), dtype=np.uint8)
