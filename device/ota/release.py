"""What a release says about a model: the `appliance` custom field of a TUF target.

The release tool writes it and the device reads it; both go through these pydantic models, so a field
that one side misspells is an error, not a silent default. The target's hashes and length are TUF's; the
files a model needs besides itself (labels, validation inputs, a CPU twin) are further targets, named here
by their target paths so that TUF verifies them too.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Annotated, Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from device.errors import UpdateError
from device.kinds import Kind
from device.vision.manifest import Adapter, Quantization, Source, TensorSpec

CUSTOM_KEY = "appliance"
_TARGET_PATH = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*$")


class _Strict(BaseModel):
    # No NaN or infinity: a NaN tolerance would make every comparison pass.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def check_target_path(path: str) -> str:
    """Relative, no `..`, no empty or hidden parts: a target path must never reach outside its folder."""
    if not _TARGET_PATH.match(path) or ".." in path.split("/"):
        raise ValueError(f"target path {path!r} is not a plain relative path (no '..', no leading '/')")
    return path


class EmbedderOutput(_Strict):
    """What an embedder must output for one input: its int8 vector (base64) and quantisation."""

    vector: str
    scale: float = Field(gt=0)
    zero_point: int

    @field_validator("vector")
    @classmethod
    def _base64(cls, value: str) -> str:
        try:
            if not base64.b64decode(value, validate=True):
                raise ValueError("the vector is empty")
        except binascii.Error as exc:
            raise ValueError(f"the vector is not base64 ({exc})") from None
        return value


class Detection(_Strict):
    label: str
    score: float = Field(ge=0, le=1)
    box: tuple[float, float, float, float]  # x1, y1, x2, y2, as fractions of the input's size


class DetectorOutput(_Strict):
    """What a detector must find in one input (its top detections)."""

    detections: tuple[Detection, ...]


def _output_kind(value: Any) -> str:
    if isinstance(value, dict):
        return "detector" if "detections" in value else "embedder"
    return "detector" if isinstance(value, DetectorOutput) else "embedder"


Expected = Annotated[
    Annotated[EmbedderOutput, Tag("embedder")] | Annotated[DetectorOutput, Tag("detector")],
    Discriminator(_output_kind),
]
TOLERANCES = {"embedder": {"min_cosine"}, "detector": {"min_iou", "score", "count"}}


class Validation(_Strict):
    """Sample inputs and a summary of the outputs expected from them (see device.ota.vectors)."""

    inputs: str  # target path of an .npz of uint8 RGB images
    expected: tuple[Expected, ...] = Field(min_length=1)
    tolerance: dict[str, float]

    @field_validator("inputs")
    @classmethod
    def _path(cls, value: str) -> str:
        return check_target_path(value)

    @field_validator("expected")
    @classmethod
    def _can_fail(cls, value: tuple[EmbedderOutput | DetectorOutput, ...]) -> tuple[Any, ...]:
        # The release tool refuses these too (models/release/checks.py); a device must not rely on the
        # tool: vectors that expect nothing on every photo pass a detector that never fires.
        outputs = [v for v in value if isinstance(v, DetectorOutput)]
        if outputs and len(outputs) == len(value) and not any(o.detections for o in outputs):
            raise ValueError("the detector's vectors expect no detection on any photo: they prove nothing")
        return value


class ModelSpec(_Strict):
    """The manifest entry's fields, minus the file and its hash (TUF holds those)."""

    adapter: Adapter
    resize: Literal["stretch", "letterbox"] = "stretch"
    input: TensorSpec
    outputs: dict[str, str] = Field(default_factory=dict)
    source: Source
    licence: str
    description: str = ""
    # What the file holds (int8, float32, dynamic-range), as the manifest entry says: the models
    # report and the fleet compare models by it. Left out (releases made before it was carried), it
    # follows from the input as in a manifest, which is wrong only for a dynamic-range model.
    quantization: Quantization | None = None


class ReleaseInfo(_Strict):
    model_id: str = Field(pattern=r"^[a-z0-9][a-z0-9.-]{0,63}$")
    kind: Kind
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

    @model_validator(mode="after")
    def _vectors_fit_kind(self) -> Self:
        """A detector's release carries detections, an embedder's vectors, each with its own tolerances:
        anything else would fail at the device's comparison, after a download, instead of here."""
        want = DetectorOutput if self.kind == "detector" else EmbedderOutput
        for i, output in enumerate(self.validation.expected):
            if not isinstance(output, want):
                raise ValueError(f"validation.expected[{i}] is not what a {self.kind} outputs")
        unknown = set(self.validation.tolerance) - TOLERANCES[self.kind]
        if unknown:
            raise ValueError(f"validation.tolerance has {sorted(unknown)}, not {self.kind} tolerances")
        return self

    @property
    def key(self) -> str:
        return f"{self.model_id}@{self.version}"


def parse_release(target_path: str, custom: object) -> ReleaseInfo:
    """The release a target listed in the index describes. UpdateError, in one line, if the target has
    no release field or a malformed one: a signed but broken release is refused and named, never an
    internal error, and never a reason to stop reading the others."""
    try:
        check_target_path(target_path)
        raw = custom.get(CUSTOM_KEY) if isinstance(custom, dict) else None
        if raw is None:
            raise ValueError(f"it has no {CUSTOM_KEY!r} custom field")
        # A JSON string: TUF's canonical JSON has no floats, and the release has scores and scales.
        if not isinstance(raw, str):
            raise ValueError(f"the {CUSTOM_KEY!r} field must be a JSON string")
        return ReleaseInfo.model_validate_json(raw)
    except ValidationError as exc:
        raise UpdateError(f"release target {target_path!r} is malformed: {one_line(exc)}") from None
    except ValueError as exc:
        raise UpdateError(f"release target {target_path!r} is malformed: {exc}") from None


def one_line(exc: ValidationError) -> str:
    """pydantic's errors as `where: what` pairs, without its URLs and input dumps."""
    parts = []
    for error in exc.errors()[:3]:
        where = ".".join(str(part) for part in error["loc"])
        parts.append(f"{where}: {error['msg']}" if where else str(error["msg"]))
    more = exc.error_count() - len(parts)
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))
