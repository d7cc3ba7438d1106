"""Reading still images from disk as RGB frames (the CLI, the image-folder source and the catalog build
use this). The size an image declares is checked before it is decoded: see image_header.py."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from device.errors import InputError
from device.image_header import DEFAULT_MAX_PIXELS, image_header
from device.vision.preprocess import Image

# Room for metadata (EXIF, ICC profiles, thumbnails) on top of the pixels.
METADATA_BYTES = 16 * 2**20


def read_image(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image:
    """The image at `path` as an RGB uint8 array; InputError naming the file when it cannot be read, or
    when it declares more than `max_pixels` pixels (refused before decoding)."""
    if not path.is_file():
        raise InputError(f"image {path} does not exist or is not a file")
    data = _read(path, max_pixels)
    try:
        header = image_header(data)
    except ValueError as exc:
        raise InputError(f"image {path} {exc}") from None
    if header.pixels > max_pixels:
        raise InputError(
            f"image {path} declares {header.width}x{header.height} pixels ({header.pixels:,}), over the "
            f"limit of {max_pixels:,}: refused before decoding. If the image is genuine, scale it down "
            "or raise the limit (camera.max_image_pixels; pricing-service: --max-image-pixels)"
        )
    try:
        # imdecode returns None (it does not raise) on truncated or non-image data.
        decoded = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    except cv2.error as exc:  # OpenCV's own checks, which the header check should have pre-empted
        raise InputError(f"image {path} cannot be decoded: {str(exc).strip().splitlines()[-1]}") from None
    if decoded is None:
        raise InputError(f"image {path} is not a readable {header.format} image (corrupt or truncated)")
    # In place: a second full-size copy would double the peak memory of a large photo.
    return np.asarray(cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB, dst=decoded), dtype=np.uint8)


def _read(path: Path, max_pixels: int) -> bytes:
    """The file's bytes, unless it is bigger than any image within the limit could be: 8 bytes a pixel
    (16-bit RGBA, uncompressed) plus metadata."""
    try:
        size = path.stat().st_size
        max_bytes = max_pixels * 8 + METADATA_BYTES
        if size > max_bytes:
            raise InputError(
                f"image {path} is {size:,} bytes, more than any image of at most {max_pixels:,} pixels "
                f"needs ({max_bytes:,}): refused unread"
            )
        return path.read_bytes()
    except OSError as exc:
        raise InputError(f"image {path} cannot be read: {exc.strerror}") from None
