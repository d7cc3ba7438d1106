"""Releases: model files plus their manifest entry in, signed targets with `appliance` custom fields out.

The validation vectors are computed here with the device's own code on the CPU (through the model's CPU
twin when it is compiled for the Edge TPU), so a device that gets a different answer is running a
different model or a broken runtime, and refuses it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from pydantic import ValidationError
from tuf.api.metadata import Metadata, Targets

from device.config import DetectorConfig, EmbedderConfig, RuntimeConfig
from device.errors import ConfigError, ReleaseRefusedError
from device.images import read_image
from device.ota.release import CUSTOM_KEY, ModelSpec, ReleaseInfo, Validation
from device.ota.vectors import DETECTOR_TOLERANCE, EMBEDDER_TOLERANCE, pack_inputs, summarise
from device.vision.manifest import Manifest, ModelEntry
from device.vision.models import make_adapter
from device.vision.preprocess import Image
from device.vision.runtime import InterpreterFactory

from . import checks
from .repository import Repository

MAX_SIDE = 320  # validation photos are downscaled: they check the model, not the camera


@dataclass
class NewRelease:
    manifest: Path
    model_id: str
    version: str  # "" means the manifest entry's own version
    channel: str
    percent: int
    photos: list[Path]
    min_firmware: str = "0.0.0"
    model_file: Path | None = None  # default: the manifest entry's file
    kind: str | None = None  # default: the manifest entry's kind
    adapter: str | None = None
    expected: list[dict[str, Any]] | None = None  # default: computed from the manifest entry's model
    tolerance: dict[str, float] = field(default_factory=dict)


def add_release(
    repo: Repository, new: NewRelease, edit: Callable[[dict[str, Any]], None] | None = None
) -> str:
    """Publish one release; returns its target path. Nothing is written unless every value is valid and
    the validation vectors could catch a broken model (release.checks). `expected` and `edit` skip that
    check and may change the custom fields: tests use them to forge bad releases that a careless or
    hostile publisher could sign."""
    _check_values(new)
    manifest = Manifest.load(new.manifest)
    entry = manifest.get(new.model_id)
    kind = new.kind or entry.kind
    version = new.version or checks.manifest_version(entry.id, new.manifest, entry.version)
    images = [_small(read_image(p)) for p in new.photos]
    if not images:
        raise ConfigError("give at least one --photo for the validation vectors")
    tolerance = new.tolerance or (EMBEDDER_TOLERANCE if kind == "embedder" else DETECTOR_TOLERANCE)
    expected = new.expected
    if expected is None:
        expected = _expected(manifest, entry, kind, images)
        checks.vectors_can_fail(kind, entry.id, new.photos, expected, tolerance)
    info = _release_info(
        new, manifest, entry, version=version, kind=kind, expected=expected, tolerance=tolerance
    )
    targets = repo.targets()
    model_file = new.model_file or Path(entry.file)
    fields = info.model_dump(mode="json")
    if edit is not None:
        edit(fields)
    custom = {CUSTOM_KEY: encode(fields)}
    repo.add_data(targets.signed, info.validation.inputs, pack_inputs(images))
    _add_files(repo, targets.signed, info, entry, manifest)
    path = f"{_base(info)}/{model_file.name}"
    repo.add_file(targets.signed, path, model_file, custom)
    repo.publish(targets)
    return path


def _base(info: ReleaseInfo) -> str:
    return f"models/{info.kind}/{info.model_id}/{info.version}"


def _release_info(
    new: NewRelease,
    manifest: Manifest,
    entry: ModelEntry,
    *,
    version: str,
    kind: str,
    expected: list[dict[str, Any]],
    tolerance: dict[str, float],
) -> ReleaseInfo:
    base = f"models/{kind}/{entry.id}/{version}"
    twin = manifest.get(entry.cpu_twin).file if entry.cpu_twin else None
    try:
        return ReleaseInfo(
            model_id=entry.id,
            kind=kind,
            version=version,
            channels={new.channel: new.percent},
            min_firmware=new.min_firmware,
            spec=_spec(entry, new.adapter),
            labels=f"{base}/{Path(entry.labels).name}" if entry.labels else None,
            cpu_twin=f"{base}/cpu/{Path(twin).name}" if twin else None,
            validation=Validation(
                inputs=f"{base}/validation.npz", expected=tuple(expected), tolerance=tolerance
            ),
        )
    except ValidationError as exc:
        # Values from the command line were checked already; this is a manifest entry devices could not
        # parse as a release. One line, never a pydantic error list.
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise ReleaseRefusedError(
            f"{entry.id}: the release would not parse on devices ({where}: {first['msg']}, "
            f"given {first.get('input')!r}); fix the manifest entry"
        ) from None


def _check_values(new: NewRelease) -> None:
    """Every value that names a path or a name on devices, before anything is read or run."""
    checks.value("--model", new.model_id, checks.MODEL_ID)
    if new.version:
        checks.value("--version", new.version, checks.VERSION)
    checks.value("--min-firmware", new.min_firmware, checks.VERSION)
    checks.value("--channel", new.channel, checks.CHANNEL)
    checks.percent(new.percent)


def encode(fields: dict[str, Any]) -> str:
    """TUF signs canonical JSON, which has no floats; the release travels as a JSON string instead."""
    return json.dumps(fields, sort_keys=True, separators=(",", ":"))


def decode(value: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(value)
    return result


def _add_files(
    repo: Repository, targets: Targets, info: ReleaseInfo, entry: ModelEntry, manifest: Manifest
) -> None:
    """The labels and the CPU twin, when the release has them."""
    if info.labels and entry.labels:
        repo.add_file(targets, info.labels, Path(entry.labels))
    if info.cpu_twin and entry.cpu_twin:
        repo.add_file(targets, info.cpu_twin, Path(manifest.get(entry.cpu_twin).file))


def _spec(entry: ModelEntry, adapter: str | None) -> ModelSpec:
    data = entry.model_dump(
        include={"adapter", "resize", "input", "outputs", "source", "licence", "description", "quantization"}
    )
    if adapter is not None:
        data["adapter"] = adapter
    return ModelSpec.model_validate(data)


def _expected(manifest: Manifest, entry: ModelEntry, kind: str, images: list[Image]) -> list[dict[str, Any]]:
    factory = InterpreterFactory(RuntimeConfig(device="cpu", warmup_runs=1))
    model = factory.load(manifest, entry.id)
    return summarise(make_adapter(kind, model, DetectorConfig(), EmbedderConfig()), images)


def _small(image: Image) -> Image:
    h, w = image.shape[:2]
    scale = MAX_SIDE / max(h, w)
    if scale >= 1:
        return image
    small = cv2.resize(image, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
    return np.asarray(small, dtype=np.uint8)


def change(repo: Repository, model_id: str, version: str, update: Callable[[dict[str, Any]], None]) -> str:
    """Edit one release's custom fields (promote, rollout, halt) and publish."""
    targets: Metadata[Targets] = repo.targets()
    for path, target in targets.signed.targets.items():
        custom = target.unrecognized_fields.get("custom", {})
        fields = decode(custom[CUSTOM_KEY]) if CUSTOM_KEY in custom else None
        if fields and fields["model_id"] == model_id and fields["version"] == version:
            update(fields)
            ReleaseInfo.model_validate(fields)  # never sign a release the devices would refuse to parse
            custom[CUSTOM_KEY] = encode(fields)
            repo.publish(targets)
            return path
    raise ConfigError(f"no release {model_id}@{version} in {repo.path} (see `appliance-release list`)")
