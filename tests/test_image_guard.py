"""Decompression bombs: an image's size is checked in its header before it is decoded, wherever images
enter (`appliance detect` and `embed`, the image-folder source, `pricing-service catalog build`)."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from device.errors import InputError
from device.image_header import image_header
from device.images import read_image

from .cli_helpers import run_measured
from .conftest import DATA

COFFEE = DATA / "coffee.png"
# A CLI run that decodes coffee.png takes about 180 MB; decoding a 20,000 x 20,000 bomb takes 2.5 GB.
MAX_RSS_MB = 500


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(width: int, height: int, rows: int | None = None) -> bytes:
    """A valid 1-bit greyscale PNG of zeros: 20,000 x 20,000 is 49 KB on disk, 1.2 GB once decoded to
    BGR. `rows` writes only that many rows of data (the header still declares `height`)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    packer = zlib.compressobj(9)
    row = bytes(1 + (width + 7) // 8)
    body = b"".join(packer.compress(row) for _ in range(height if rows is None else rows)) + packer.flush()
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


@pytest.fixture()
def bombs(tmp_path: Path) -> tuple[Path, Path]:
    """The 20,000² bomb (decodes today, at 2.5 GB) and a 50,000² header (OpenCV's own limit refuses it)."""
    big, huge = tmp_path / "bomb-20k.png", tmp_path / "bomb-50k.png"
    big.write_bytes(png_bomb(20_000, 20_000))
    huge.write_bytes(png_bomb(50_000, 50_000, rows=10))
    return big, huge


def test_the_peak_memory_measurement_sees_a_child_allocate(tmp_path: Path) -> None:
    """The measurement below can fail: a module that touches 300 MB reads as at least that."""
    (tmp_path / "hog.py").write_text(
        "block = bytearray(300 * 2**20)\nblock[::4096] = b'x' * len(block[::4096])\n"
    )
    run = run_measured("hog", env={"PYTHONPATH": str(tmp_path)})
    assert run.returncode == 0, run.stderr
    assert 300 <= run.peak_mb < 400


@pytest.mark.parametrize("command", ["detect", "embed"])
def test_cli_refuses_a_bomb_and_still_processes_the_good_photo(
    bombs: tuple[Path, Path], command: str
) -> None:
    big, huge = bombs
    run = run_measured("device", command, str(big), str(COFFEE), str(huge), "--json")
    assert run.returncode == 1, run.stderr
    for bomb, size in ((big, "20000x20000"), (huge, "50000x50000")):
        assert f"image {bomb} declares {size} pixels" in run.stderr
    assert "internal error" not in run.stderr
    report = json.loads(run.stdout)
    if command == "detect":
        by_image = {r["image"]: r for r in report["results"]}
        assert by_image[str(COFFEE)]["detections"][0]["label"] == "cup"
        assert "declares" in by_image[str(big)]["error"] and "declares" in by_image[str(huge)]["error"]
    else:
        assert [i["image"] for i in report["images"]] == [str(COFFEE)]
        assert [e["image"] for e in report["errors"]] == [str(big), str(huge)]
    assert run.peak_mb < MAX_RSS_MB, f"peak RSS {run.peak_mb:.0f} MB"


def test_the_limit_is_configurable(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("[camera]\nmax_image_pixels = 100_000\n")  # coffee.png is 600 x 400 = 240,000
    run = run_measured("device", "--config", str(config), "detect", str(COFFEE))
    assert run.returncode == 1
    assert f"image {COFFEE} declares 600x400 pixels" in run.stderr and "100,000" in run.stderr


def test_catalog_build_names_every_bomb_and_writes_nothing(bombs: tuple[Path, Path], tmp_path: Path) -> None:
    big, huge = bombs
    rows = [
        "id,image,price,currency,status",
        f"good,{COFFEE},1200,JPY,sold",
        f"bomb,{big.name},100,JPY,sold",
        f"huge,{huge.name},100,JPY,listed",
    ]
    (tmp_path / "items.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "catalog.sqlite"
    run = run_measured("pricing", "catalog", "build", str(tmp_path / "items.csv"), "--out", str(out))
    assert run.returncode == 65, run.stderr
    assert "2 bad row(s), nothing written" in run.stderr
    assert f"items.csv:3: image {big} declares 20000x20000 pixels" in run.stderr
    assert f"items.csv:4: image {huge} declares 50000x50000 pixels" in run.stderr
    assert not out.exists()
    assert run.peak_mb < MAX_RSS_MB, f"peak RSS {run.peak_mb:.0f} MB"


def test_catalog_build_takes_its_limit_from_the_command_line(tmp_path: Path) -> None:
    (tmp_path / "items.csv").write_text(f"id,image,price,currency,status\ngood,{COFFEE},1200,JPY,sold\n")
    out = tmp_path / "catalog.sqlite"
    build = ("pricing", "catalog", "build", str(tmp_path / "items.csv"), "--out", str(out))
    run = run_measured(*build, "--max-image-pixels", "100000")  # coffee.png is 600 x 400 = 240,000
    assert run.returncode == 65, run.stderr
    assert "1 bad row(s), nothing written" in run.stderr
    assert f"items.csv:2: image {COFFEE} declares 600x400 pixels (240,000)" in run.stderr
    assert "over the limit of 100,000" in run.stderr
    assert not out.exists()
    # At exactly its size the photo is taken: the flag sets the limit, it does not refuse everything.
    run = run_measured(*build, "--max-image-pixels", "240000")
    assert run.returncode == 0, run.stderr
    assert f"{out}: 1 items" in run.stdout


def test_read_image_refuses_a_header_over_opencvs_own_limit_as_bad_input(bombs: tuple[Path, Path]) -> None:
    with pytest.raises(InputError, match=r"declares 50000x50000 pixels \(2,500,000,000\), over the limit"):
        read_image(bombs[1])


def encoded(image: np.ndarray, suffix: str, params: tuple[int, ...] = ()) -> bytes:
    ok, data = cv2.imencode(suffix, image, list(params))
    assert ok
    return bytes(data)


PHOTO = np.random.default_rng(3).integers(0, 255, (200, 300, 3), dtype=np.uint8)
ENCODINGS = {
    "png": (".png", ()),
    "jpeg": (".jpg", ()),
    "jpeg-progressive": (".jpg", (cv2.IMWRITE_JPEG_PROGRESSIVE, 1)),
    "bmp": (".bmp", ()),
    "webp-lossy": (".webp", (cv2.IMWRITE_WEBP_QUALITY, 80)),
    "webp-lossless": (".webp", (cv2.IMWRITE_WEBP_QUALITY, 101)),
    "tiff": (".tiff", ()),
}


@pytest.mark.parametrize("name", list(ENCODINGS))
def test_every_accepted_format_is_sized_from_its_header(tmp_path: Path, name: str) -> None:
    suffix, params = ENCODINGS[name]
    path = tmp_path / f"photo{suffix}"
    path.write_bytes(encoded(PHOTO, suffix, params))
    header = image_header(path.read_bytes())
    assert (header.width, header.height, header.pixels) == (300, 200, 60_000)
    assert read_image(path, max_pixels=60_000).shape == (200, 300, 3)
    with pytest.raises(InputError, match=rf"image {path} declares 300x200 pixels \(60,000\), over the limit"):
        read_image(path, max_pixels=59_999)


def test_webp_extended_and_bmp_top_down_headers() -> None:
    with_alpha = encoded(np.dstack([PHOTO, PHOTO[..., :1]]), ".webp", (cv2.IMWRITE_WEBP_QUALITY, 80))
    header = image_header(with_alpha)
    assert (header.width, header.height) == (300, 200)
    bmp = bytearray(encoded(PHOTO, ".bmp"))
    bmp[22:26] = struct.pack("<i", -200)  # a negative height is a top-down bitmap
    assert (image_header(bytes(bmp)).width, image_header(bytes(bmp)).height) == (300, 200)


def tiff(order: str, big: bool, tags: dict[int, int]) -> bytes:
    """Just a TIFF header and first directory: enough to be sized, nothing to decode."""
    mark = b"II" if order == "<" else b"MM"
    if big:
        head = mark + struct.pack(order + "HHHQ", 43, 8, 0, 16)
        body = struct.pack(order + "Q", len(tags))
        for tag, value in sorted(tags.items()):
            body += struct.pack(order + "HHQQ", tag, 16, 1, value)
        return head + body
    head = mark + struct.pack(order + "HI", 42, 8)
    body = struct.pack(order + "H", len(tags))
    for tag, value in sorted(tags.items()):
        if value < 65536:  # SHORT, left-justified in the 4-byte value field
            body += struct.pack(order + "HHIHH", tag, 3, 1, value, 0)
        else:
            body += struct.pack(order + "HHII", tag, 4, 1, value)
    return head + body


@pytest.mark.parametrize(("order", "big"), [("<", False), (">", False), ("<", True), (">", True)])
def test_tiff_headers_in_both_byte_orders_and_bigtiff(order: str, big: bool) -> None:
    header = image_header(tiff(order, big, {256: 70_000, 257: 300}))
    assert (header.format, header.width, header.height) == ("TIFF", 70_000, 300)
    # Tiles bigger than the image still have to be allocated by the decoder: they count.
    tiled = image_header(tiff(order, big, {256: 16, 257: 16, 322: 40_000, 323: 40_000}))
    assert tiled.pixels == 1_600_000_000


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "is empty"),
        (b"GIF89a" + bytes(20), "not a PNG, JPEG, BMP, WebP or TIFF"),
        (b"P6\n20000 20000\n255\n", "not a PNG, JPEG, BMP, WebP or TIFF"),
        (b"\x89PNG\r\n\x1a\n" + bytes(8), "has no size in its header"),
        (b"\xff\xd8\xff\xda" + bytes(20), "has no size in its header"),
        (b"\xff\xd8\xff\xc0\x00\x11\x08\x00\x00\x01\x00" + bytes(12), "declares a zero size"),
        (tiff("<", False, {256: 10}), "has no size in its header"),
    ],
)
def test_what_cannot_be_sized_is_refused(tmp_path: Path, data: bytes, reason: str) -> None:
    path = tmp_path / "odd.img"
    path.write_bytes(data)
    with pytest.raises(InputError, match=rf"image {path} .*{reason}"):
        read_image(path)


def test_a_file_too_big_for_any_allowed_image_is_not_read(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    path.write_bytes(png_bomb(10, 10))
    with open(path, "ab") as handle:
        handle.truncate(8 * 1000 + 16 * 2**20 + 1)  # sparse: costs no disk
    with pytest.raises(InputError, match=rf"image {path} is 16,785,217 bytes, more than"):
        read_image(path, max_pixels=1000)
