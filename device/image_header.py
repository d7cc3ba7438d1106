"""An image's size, read from its file header before anything is decoded.

A decoder allocates the whole picture the header declares before it reads a single pixel: a 49 KB PNG
that declares 20,000 x 20,000 pixels becomes 1.2 GB of BGR, 2.5 GB with the RGB copy. OpenCV's own
guard (OPENCV_IO_MAX_IMAGE_PIXELS) is 2^30 pixels, fixed when cv2 is loaded: far too high for a 2 GB
Pi, and not settable per call. So images.py reads the size here first and refuses what is over its
limit. Only formats whose size can be read here are accepted (PNG, JPEG, BMP, WebP, TIFF); anything
else OpenCV can decode (GIF, AVIF, JPEG 2000, PNM, HDR...) is refused rather than decoded unchecked.

Pure Python and no OpenCV, so that the config can import DEFAULT_MAX_PIXELS without loading cv2.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

# Far above any camera frame (4096 x 4096 is 16.8 Mpx, a 48 Mpx phone photo fits) and far below what
# would exhaust a 2 GB Pi: reading an image costs about 6 bytes per pixel (BGR, then RGB in place).
DEFAULT_MAX_PIXELS = 50_000_000
ACCEPTED = "PNG, JPEG, BMP, WebP or TIFF"


@dataclass(frozen=True)
class ImageHeader:
    format: str
    width: int
    height: int
    # What the decoder allocates at once: width x height, or a TIFF tile when that is bigger.
    pixels: int


def image_header(data: bytes) -> ImageHeader:
    """The format and size `data` declares. ValueError (a phrase that follows "image PATH") when the
    format is not one we can size, or the header has no usable size."""
    if not data:
        raise ValueError("is empty")
    for magic, reader in _READERS:
        if data.startswith(magic):
            header = reader(data)
            if header.width <= 0 or header.height <= 0:
                raise ValueError(f"declares a zero size ({header.width}x{header.height}) in its header")
            return header
    raise ValueError(f"is not a {ACCEPTED} image (only these can be size-checked before decoding)")


def _sized(name: str, width: int, height: int, pixels: int | None = None) -> ImageHeader:
    return ImageHeader(name, width, height, max(width * height, pixels or 0))


def _no_size(name: str) -> ValueError:
    return ValueError(f"is a {name} that has no size in its header (truncated or corrupt)")


def _png(data: bytes) -> ImageHeader:
    # IHDR is always the first chunk: length, "IHDR", width, height (big-endian).
    if len(data) < 24 or data[12:16] != b"IHDR":
        raise _no_size("PNG")
    width, height = struct.unpack_from(">II", data, 16)
    return _sized("PNG", width, height)


# Start-of-frame markers carry the size; C4 (DHT), C8 (JPG) and CC (DAC) share the range but do not.
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_STANDALONE = {0x01, *range(0xD0, 0xD8)}  # TEM, RST0-7: markers without a length


def _jpeg(data: bytes) -> ImageHeader:
    position = 2
    while position + 4 <= len(data):
        if data[position] != 0xFF:
            break
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte before a marker
            position += 1
        elif marker in _STANDALONE:
            position += 2
        elif marker in (0xD9, 0xDA):  # end of image, or a scan: no frame header came first
            break
        elif marker in _SOF and position + 9 <= len(data):
            height, width = struct.unpack_from(">HH", data, position + 5)
            return _sized("JPEG", width, height)
        else:
            (length,) = struct.unpack_from(">H", data, position + 2)
            position += 2 + length
    raise _no_size("JPEG")


def _bmp(data: bytes) -> ImageHeader:
    if len(data) < 26:
        raise _no_size("BMP")
    (info_size,) = struct.unpack_from("<I", data, 14)
    if info_size == 12:  # BITMAPCOREHEADER: 16-bit sizes
        width, height = struct.unpack_from("<HH", data, 18)
    elif info_size >= 16:
        width, height = struct.unpack_from("<ii", data, 18)
        height = abs(height)  # negative: rows stored top-down
    else:
        raise _no_size("BMP")
    return _sized("BMP", width, height)


def _webp(data: bytes) -> ImageHeader:
    if data[8:12] != b"WEBP" or len(data) < 30:
        raise ValueError(f"is not a {ACCEPTED} image (a RIFF file, but not WebP)")
    kind, body = data[12:16], data[20:30]
    if kind == b"VP8 " and body[3:6] == b"\x9d\x01\x2a":  # lossy: 14-bit sizes after the start code
        width, height = struct.unpack_from("<HH", body, 6)
        return _sized("WebP", width & 0x3FFF, height & 0x3FFF)
    if kind == b"VP8L" and body[0] == 0x2F:  # lossless: 14-bit sizes minus one, packed
        (bits,) = struct.unpack_from("<I", body, 1)
        return _sized("WebP", (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1)
    if kind == b"VP8X":  # extended (alpha, animation): the canvas, 24-bit sizes minus one
        width = int.from_bytes(body[4:7], "little") + 1
        height = int.from_bytes(body[7:10], "little") + 1
        return _sized("WebP", width, height)
    raise _no_size("WebP")


def _tiff(data: bytes) -> ImageHeader:
    """The first directory's ImageWidth, ImageLength and tile size (OpenCV decodes the first page).
    Classic TIFF and BigTIFF, either byte order."""
    order = "<" if data[:2] == b"II" else ">"
    try:
        (version,) = struct.unpack_from(order + "H", data, 2)
        if version == 42:
            (offset,) = struct.unpack_from(order + "I", data, 4)
            count_format, entry_size, value_at = "H", 12, 8
        elif version == 43:
            (offset,) = struct.unpack_from(order + "Q", data, 8)
            count_format, entry_size, value_at = "Q", 20, 12
        else:
            raise _no_size("TIFF")
        (count,) = struct.unpack_from(order + count_format, data, offset)
        first = offset + struct.calcsize(count_format)
        tags: dict[int, int] = {}
        for index in range(min(count, 4096)):
            entry = first + index * entry_size
            tag, kind = struct.unpack_from(order + "HH", data, entry)
            value_format = {3: "H", 4: "I", 16: "Q"}.get(kind)
            if tag in (256, 257, 322, 323) and value_format is not None:
                (tags[tag],) = struct.unpack_from(order + value_format, data, entry + value_at)
    except struct.error:
        raise _no_size("TIFF") from None
    if 256 not in tags or 257 not in tags:
        raise _no_size("TIFF")
    return _sized("TIFF", tags[256], tags[257], tags.get(322, 0) * tags.get(323, 0))


_READERS: tuple[tuple[bytes, Callable[[bytes], ImageHeader]], ...] = (
    (b"\x89PNG\r\n\x1a\n", _png),
    (b"\xff\xd8\xff", _jpeg),
    (b"BM", _bmp),
    (b"RIFF", _webp),
    (b"II*\x00", _tiff),
    (b"MM\x00*", _tiff),
    (b"II+\x00", _tiff),
    (b"MM\x00+", _tiff),
)
