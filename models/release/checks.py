"""What the release tool refuses before it writes anything.

- Values from its command line that become target paths or names on devices (version, model id,
  channel): one line naming the flag and the value, exit 64. The patterns are the ones devices parse
  releases and their config with (device.ota.release, device.config), kept ASCII and anchored at the
  very end, so nothing the tool signs is a release that a device would refuse to parse.
- Validation vectors that could not catch a broken model: exit 65, saying which photo to add.
"""

from __future__ import annotations

import base64
import itertools
import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from device.errors import ConfigError, ReleaseRefusedError, UsageError
from device.ota.vectors import EMBEDDER_TOLERANCE
from device.vision.embedder import Embedding, cosine

VERSION = re.compile(r"[0-9]{1,9}\.[0-9]{1,9}\.[0-9]{1,9}", re.ASCII)
MODEL_ID = re.compile(r"[a-z0-9][a-z0-9.-]{0,63}", re.ASCII)  # the manifest's pattern
CHANNEL = re.compile(r"[a-z0-9][a-z0-9-]{0,31}", re.ASCII)  # [ota] channel on a device
_WHAT = {
    VERSION: "MAJOR.MINOR.PATCH, e.g. 1.2.0",
    MODEL_ID: "lower-case letters, digits, '.' and '-', starting with a letter or digit (the manifest id)",
    CHANNEL: "lower-case letters, digits and '-', at most 32 characters (what devices set as [ota] channel)",
}


def value(flag: str, given: str, pattern: re.Pattern[str]) -> str:
    """`given` if the whole of it matches `pattern`; UsageError naming the flag otherwise."""
    if pattern.fullmatch(given) is None:
        raise UsageError(f"{flag} {given!r} is not valid: use {_WHAT[pattern]}")
    return given


def percent(given: int) -> int:
    # A range error, exit 78, as `rollout` has always reported it.
    if not 0 <= given <= 100:
        raise ConfigError(f"--percent must be 0..100, not {given}")
    return given


def manifest_version(model_id: str, manifest: Path, version: str) -> str:
    if VERSION.fullmatch(version) is None:
        raise UsageError(
            f"the version of {model_id} in {manifest} is {version!r}, not MAJOR.MINOR.PATCH: "
            "fix the manifest entry or give --version"
        )
    return version


def vectors_can_fail(
    kind: str, model_id: str, photos: list[Path], expected: list[dict[str, Any]], tolerance: dict[str, float]
) -> None:
    """ReleaseRefusedError unless a device whose model is broken could fail these vectors."""
    if kind == "detector":
        _detector(model_id, photos, expected)
    else:
        _embedder(model_id, photos, expected, tolerance)


def _detector(model_id: str, photos: list[Path], expected: list[dict[str, Any]]) -> None:
    # Expected [] passes a device whose detector finds nothing, or one box anywhere (the count may
    # differ by one): only an expected detection makes the device find the same thing in the same place.
    if not any(e.get("detections") for e in expected):
        names = ", ".join(p.name for p in photos)
        raise ReleaseRefusedError(
            f"detector {model_id} finds nothing on its validation photos ({names}), so a device whose "
            "detector never fires would pass them: add a --photo on which it detects something (a "
            "person in view for a person detector)"
        )


def _embedder(
    model_id: str, photos: list[Path], expected: list[dict[str, Any]], tolerance: dict[str, float]
) -> None:
    """At least two photos whose vectors are further apart than the tolerance can bridge.

    A device passes a photo when its output is within angle acos(t) of the expected vector (t: the
    min_cosine). If every pair of expected vectors is within twice that angle, one output vector could be
    close enough to all of them: a model that ignores its input (a constant output from a broken
    conversion or runtime) could pass. Two vectors more than 2 acos(t) apart, cosine < 2t^2 - 1
    (0.92 for 0.98), can never both be matched by one output, so the vectors prove the device's
    model responds to what it sees. Different objects embed at cosine 0.1-0.3; a photo and its mirror
    image at 0.95."""
    t = tolerance.get("min_cosine", EMBEDDER_TOLERANCE["min_cosine"])
    apart = math.cos(2 * math.acos(min(1.0, max(-1.0, t))))
    if len(expected) < 2:
        raise ReleaseRefusedError(
            f"embedder {model_id} needs at least 2 validation photos of different objects (got "
            f"{len(expected)}): one vector cannot show that a device's model responds to its input; "
            "add a --photo of something else"
        )
    vectors = [_embedding(e) for e in expected]
    pairs = itertools.combinations(zip(photos, vectors, strict=True), 2)
    similar = [(a[0], b[0], cosine(a[1], b[1])) for a, b in pairs]
    if all(c >= apart for _, _, c in similar):
        a, b, c = min(similar, key=lambda s: s[2])
        raise ReleaseRefusedError(
            f"embedder {model_id} sees its validation photos as alike ({a.name} and {b.name} at cosine "
            f"{c:.3f}; two must be below {apart:.3f} for a min_cosine of {t}), so one output could pass "
            "them all: add a --photo of a different object"
        )


def _embedding(summary: dict[str, Any]) -> Embedding:
    values = np.frombuffer(base64.b64decode(summary["vector"]), dtype=np.int8)
    return Embedding.from_quantised(values, float(summary["scale"]), int(summary["zero_point"]))
