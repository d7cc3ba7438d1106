"""Validation before activation: the release loads, fits its adapter, and gives the expected outputs.

It runs on the device, with the device's own runtime (Edge TPU or CPU), on the staged files. Nothing
here touches the running pipeline: the validated adapter is handed over only after every check passed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from device.config import DetectorConfig, EmbedderConfig
from device.errors import ModelError, ReleaseInvalidError, UpdateError
from device.ota.release import ReleaseInfo
from device.ota.slots import read_manifest
from device.ota.vectors import compare, unpack_inputs
from device.vision.detector import Detector
from device.vision.embedder import Embedder
from device.vision.models import make_adapter
from device.vision.runtime import InterpreterFactory

INPUTS_FILE = "validation.npz"


@dataclass
class Validated:
    release: ReleaseInfo
    adapter: Detector | Embedder  # built with the device's config, ready to swap in


def validate(
    release: ReleaseInfo,
    directory: Path,
    factory: InterpreterFactory,
    detector_config: DetectorConfig,
    embedder_config: EmbedderConfig,
) -> Validated:
    """ReleaseInvalidError naming the release and what failed: the device remembers these (a new check
    would fail the same way) and does not download the same files again."""
    name = f"{release.kind} release {release.key}"
    try:
        manifest, entry = read_manifest(directory / "manifest.json")
        model = factory.load(manifest, entry.id)
        adapter = make_adapter(release.kind, model, detector_config, embedder_config)
        # Validation uses the default thresholds, which the release tool used too: a device's own
        # score_threshold must not turn a good model into a failed validation.
        reference = make_adapter(release.kind, model, DetectorConfig(), EmbedderConfig())
    except ModelError as exc:
        raise ReleaseInvalidError(f"{name} refused: {exc}") from None
    try:
        images = unpack_inputs((directory / INPUTS_FILE).read_bytes())
    except UpdateError as exc:
        raise ReleaseInvalidError(f"{name} refused: {exc}") from None
    try:
        compare(reference, images, release.validation.expected, release.validation.tolerance)
    except UpdateError as exc:
        raise ReleaseInvalidError(f"{name} failed its validation vectors: {exc}") from None
    except (ModelError, RuntimeError, ValueError) as exc:
        raise ReleaseInvalidError(f"{name} fails to run its validation inputs: {exc}") from None
    return Validated(release, adapter)
