"""What a release says about a model: the `appliance` custom field of a TUF target.

The release tool writes it and the device reads it; both go through these pydantic models, so a field
that one side misspells is an error, not a silent default. The target's hashes and length are TUF's; the
files a model needs besides itself (labels, validation inputs, a CPU twin) are further targets, named here
by their target paths so that TUF verifies them too.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from device.errors import UpdateError
from device.vision.manifest import Adapter, Source, TensorSpec

CUSTOM_KEY = "appliance"
_TARGET_PATH = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def check_target_path(path: str) -> str:
    """Relative, no `..`, no empty or hidden parts: a target path must never reach outside its folder."""
    if not _TARGET_PATH.match(path) or ".." in path.split("/"):
        raise ValueError(f"target path {path!r} is not a plain relative path (no '..', no leading '/')")
    return path


class Validation(_Strict):
    """Sample inputs and a summary of the outputs expected from them (see device.ota.vectors)."""

    inputs: str  # target path of an .npz of uint8 RGB images
    expected: tuple[dict[str, Any], ...]
    tolerance: dict[str, float]

    @field_validator("inputs")
    @classmethod
    def _path(cls, value: str) -> str:
        return check_target_path(value)


class ModelSpec(_Strict):
    """The manifest entry's fields, minus the file and its hash (TUF holds those)."""

    adapter: Adapter
    resize: Literal["stretch", "letterbox"] = "stretch"
    input: TensorSpec
    outputs: dict[str, str] = Field(default_factory=dict)
    source: Source
    licence: str
    description: str = ""


class ReleaseInfo(_Strict):
    model_id: str = Field(pattern=r"^[a-z0-9][a-z0-9.-]{0,63}$")
    kind: Literal["detector", "embedder"]
    version: str = Field(pattern=r"^\d+\.\d+\.\d+$")
    # Channel -> rollout percent. Promoting adds a channel; halting sets `halted`.
    channels: dict[str, int]
    min_firmware: str = Field(default="0.0.0", pattern=r"^\d+\.\d+\.\d+$")
    halted: bool = False
    halt_reason: str = ""
    spec: ModelSpec
    labels: str | None = None  # target path
    cpu_twin: str | None = None  # target path of a CPU build with the same tensors
    validation: Validation

    @field_validator("channels")
    @classmethod
    def _percent(cls, value: dict[str, int]) -> dict[str, int]:
        for channel, percent in value.items():
            if not 0 <= percent <= 100:
                raise ValueError(f"rollout percent for {channel!r} must be 0..100, not {percent}")
        return value

    @field_validator("labels", "cpu_twin")
    @classmethod
    def _paths(cls, value: str | None) -> str | None:
        return None if value is None else check_target_path(value)

    @property
    def key(self) -> str:
        return f"{self.model_id}@{self.version}"


def parse_release(target_path: str, custom: dict[str, Any]) -> ReleaseInfo | None:
    """The release a target describes; None for auxiliary targets (labels, inputs). UpdateError if the
    field is there but malformed: a signed but broken release must be loud, not skipped quietly."""
    raw = custom.get(CUSTOM_KEY)
    if raw is None:
        return None
    try:
        check_target_path(target_path)
        # A JSON string: TUF's canonical JSON has no floats, and the release has scores and scales.
        if not isinstance(raw, str):
            raise ValueError(f"the {CUSTOM_KEY!r} field must be a JSON string")
        return ReleaseInfo.model_validate_json(raw)
    except (ValidationError, ValueError) as exc:
        raise UpdateError(f"release target {target_path!r} is malformed: {exc}") from None


def version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))
