"""Validation vectors: sample inputs, and a summary of what a model must output for them.

The release tool runs the model on a few photos and records a summary; the device runs the downloaded
model on the same photos (a TUF target, so they are verified too) and compares within tolerances. This
proves what signatures cannot: that the file on the device behaves as the file the tool ran did, on
this device's runtime (a damaged file, a delegate or runtime that computes differently). It cannot prove
that the build itself was right: the vectors come from the built file (docs/ota.md). Vectors that could
not fail (a detector expected to find nothing on every photo) are refused (device/ota/release.py).
The summary is small enough to live in the signed metadata:
- embedder: the int8 vector of each whole photo; passes at cosine >= `min_cosine`;
- detector: the top detections of each photo (label, score, normalised box); each must be found again
  with the same label, IoU >= `min_iou` and a score within `score`; the count may differ by `count`.

The inputs are an npz (a zip of .npy files) from the network: before anything is unpacked, its entries
are counted and their declared sizes added up, and each .npy header must describe an RGB image no larger
than its entry; so a small signed file that unpacks to gigabytes is refused with a reason, not loaded.
"""

from __future__ import annotations

import base64
import io
import zipfile
from typing import IO, Any

import numpy as np

from device.errors import UpdateError
from device.ota.release import Detection, DetectorOutput, EmbedderOutput
from device.vision.detector import Detector
from device.vision.embedder import Embedder, Embedding, cosine
from device.vision.geometry import Box
from device.vision.preprocess import Image

EMBEDDER_TOLERANCE = {"min_cosine": 0.98}
DETECTOR_TOLERANCE = {"min_iou": 0.7, "score": 0.1, "count": 1.0}
TOP_DETECTIONS = 5
# The release tool writes a handful of photos of at most 320 px a side (300 KB each unpacked); these
# limits leave room for many more and still keep a hostile file's cost to tens of MB.
MAX_INPUTS = 64
MAX_UNPACKED_BYTES = 32 * 1024 * 1024


def pack_inputs(images: list[Image]) -> bytes:
    buffer = io.BytesIO()
    arrays: dict[str, Any] = {f"image{i}": image for i, image in enumerate(images)}
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def unpack_inputs(data: bytes) -> list[Image]:
    """The images, in order; UpdateError saying what is wrong before anything large is unpacked."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = archive.infolist()
            _check_sizes(members)
            names = {m.filename: m for m in members}
            wanted = [f"image{i}.npy" for i in range(len(members))]
            if sorted(names) != sorted(wanted):
                raise UpdateError(
                    f"validation inputs hold {sorted(names)[:5]}, not image0.npy, image1.npy, ..."
                )
            return [_read_image(archive, names[name]) for name in wanted]
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as exc:
        raise UpdateError(f"validation inputs are unreadable: {exc}") from None


def _check_sizes(members: list[zipfile.ZipInfo]) -> None:
    if not members or len(members) > MAX_INPUTS:
        raise UpdateError(f"validation inputs hold {len(members)} entries; 1 to {MAX_INPUTS} are allowed")
    declared = sum(m.file_size for m in members)
    if declared > MAX_UNPACKED_BYTES:
        raise UpdateError(
            f"validation inputs would unpack to {declared} bytes, over the limit of {MAX_UNPACKED_BYTES}: "
            "refused without unpacking them"
        )


def _read_image(archive: zipfile.ZipFile, member: zipfile.ZipInfo) -> Image:
    """One .npy entry, its header checked against the entry's declared size before reading the data
    (zipfile never returns more than that size)."""
    with archive.open(member) as stream:
        shape, dtype = _header(stream)
        size = int(np.prod(shape, dtype=np.int64))
        if dtype != np.uint8 or len(shape) != 3 or shape[2] != 3:
            raise UpdateError(f"validation input {member.filename} is {shape} {dtype}, not RGB uint8")
        if size > member.file_size:
            raise UpdateError(
                f"validation input {member.filename}: its header claims {shape} ({size} bytes) but the entry "
                f"holds {member.file_size} bytes"
            )
        data = stream.read(size)
    if len(data) != size:
        raise UpdateError(f"validation input {member.filename} ends after {len(data)} of {size} bytes")
    return np.frombuffer(data, dtype=np.uint8).reshape(shape).copy()


def _header(stream: IO[bytes]) -> tuple[tuple[int, ...], np.dtype[Any]]:
    version = np.lib.format.read_magic(stream)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream)
    else:
        raise UpdateError(f"validation input has .npy format {version}, not 1.0 or 2.0")
    if fortran:
        raise UpdateError("validation input is in Fortran order; the release tool writes C order")
    return tuple(shape), dtype


def summarise(model: Detector | Embedder, images: list[Image]) -> list[dict[str, Any]]:
    if isinstance(model, Embedder):
        return [_embedding_summary(model.embed(image)) for image in images]
    return [{"detections": _detections(model, image)} for image in images]


def compare(
    model: Detector | Embedder,
    images: list[Image],
    expected: tuple[EmbedderOutput | DetectorOutput, ...],
    tolerance: dict[str, float],
) -> None:
    """UpdateError saying which input failed and by how much. The release's parser checked that every
    expected output is of the model's kind (device.ota.release)."""
    if len(expected) != len(images) or not images:
        raise UpdateError(f"validation has {len(images)} inputs but {len(expected)} expected outputs")
    for i, (image, want) in enumerate(zip(images, expected, strict=True)):
        if isinstance(model, Embedder) and isinstance(want, EmbedderOutput):
            _compare_embedding(i, model.embed(image), want, tolerance)
        elif isinstance(model, Detector) and isinstance(want, DetectorOutput):
            _compare_detections(i, _detections(model, image), want, tolerance)
        else:
            raise UpdateError(f"validation output {i} is not what a {type(model).__name__} outputs")


def _embedding_summary(embedding: Embedding) -> dict[str, Any]:
    return {
        "vector": base64.b64encode(embedding.values.tobytes()).decode(),
        "scale": embedding.scale,
        "zero_point": embedding.zero_point,
    }


def _compare_embedding(i: int, got: Embedding, want: EmbedderOutput, tolerance: dict[str, float]) -> None:
    try:
        values = np.frombuffer(base64.b64decode(want.vector), dtype=np.int8)
        expected = Embedding.from_quantised(values, want.scale, want.zero_point)
    except ValueError as exc:
        raise UpdateError(f"validation output {i} is malformed: {exc}") from None
    if expected.dim != got.dim:
        raise UpdateError(f"input {i}: the model outputs {got.dim} values, validation expects {expected.dim}")
    similarity = cosine(expected, got)
    if similarity < tolerance.get("min_cosine", EMBEDDER_TOLERANCE["min_cosine"]):
        raise UpdateError(
            f"input {i}: embedding differs from the expected one (cosine {similarity:.3f}, "
            f"needs >= {tolerance.get('min_cosine', EMBEDDER_TOLERANCE['min_cosine'])})"
        )


def _detections(detector: Detector, image: Image) -> list[dict[str, Any]]:
    h, w = image.shape[:2]
    found = sorted(detector.detect(image), key=lambda d: -d.score)[:TOP_DETECTIONS]
    return [
        {
            "label": d.label,
            "score": round(d.score, 3),
            "box": [
                round(d.box.x1 / w, 4),
                round(d.box.y1 / h, 4),
                round(d.box.x2 / w, 4),
                round(d.box.y2 / h, 4),
            ],
        }
        for d in found
    ]


def _compare_detections(
    i: int, got: list[dict[str, Any]], want: DetectorOutput, tolerance: dict[str, float]
) -> None:
    limits = {**DETECTOR_TOLERANCE, **tolerance}
    expected: tuple[Detection, ...] = want.detections
    if abs(len(got) - len(expected)) > limits["count"]:
        raise UpdateError(f"input {i}: {len(got)} detections, validation expects {len(expected)}")
    for one in expected:
        box = Box(*one.box)
        if not any(
            g["label"] == one.label
            and Box(*g["box"]).iou(box) >= limits["min_iou"]
            and abs(g["score"] - one.score) <= limits["score"]
            for g in got
        ):
            raise UpdateError(
                f"input {i}: expected {one.label} (score {one.score}) at {list(one.box)} was not "
                f"detected within tolerance (IoU >= {limits['min_iou']}, score +-{limits['score']})"
            )
