"""models/manifest.toml: what each model file is, where it came from, and how to feed it.

The manifest is the contract between the ML engineers who build models and the runtime that loads
them. pydantic validates it at the edge; the rest of the firmware sees frozen ModelEntry objects.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from device.errors import ManifestError, ModelError
from device.kinds import Kind
from device.settings import read_toml

Adapter = Literal["ssd", "centernet", "centernet-heatmap", "embedder"]
# How the weights and activations are stored (models/README.md): "dynamic-range" is int8 weights with
# float activations and a float input.
Quantization = Literal["float32", "dynamic-range", "int8"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class TensorSpec(_Strict):
    shape: tuple[int, ...]
    dtype: Literal["uint8", "int8", "float32"]
    description: str = ""
    # Float-domain normalisation the model was trained with: value = (pixel - mean) / std. Leave both
    # out for "raw" models, which take pixels as they are in the tensor's own storage type.
    mean: float | None = None
    std: float | None = None

    @model_validator(mode="after")
    def _mean_and_std_together(self) -> TensorSpec:
        if (self.mean is None) != (self.std is None):
            raise ValueError("give both mean and std, or neither (raw pixels)")
        return self


class Source(_Strict):
    package: str
    version: str
    path: str = ""


class ModelEntry(_Strict):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9.-]{0,63}$")
    version: str
    kind: Kind
    adapter: Adapter
    file: Path
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    labels: Path | None = None
    resize: Literal["stretch", "letterbox"] = "stretch"
    input: TensorSpec
    outputs: dict[str, str] = Field(default_factory=dict)
    source: Source
    licence: str
    # The id of a CPU-runnable model to use instead when this one is compiled for the Edge TPU and no
    # TPU is in use.
    cpu_twin: str | None = None
    description: str = ""
    # Left out, it follows from the input: an integer input means a full-int8 model, a float one a
    # float32 model. A dynamic-range model has a float input, so its entry must say so.
    quantization: Quantization = "float32"
    # The file's size in bytes, for the models report; the sha256 is what the loader checks.
    size: int | None = Field(default=None, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _quantization_from_input(cls, data: Any) -> Any:
        if isinstance(data, dict) and "quantization" not in data:
            spec = data.get("input")
            dtype = spec.get("dtype") if isinstance(spec, dict) else getattr(spec, "dtype", None)
            if dtype in ("uint8", "int8"):
                return {**data, "quantization": "int8"}
        return data

    def label_for(self, class_id: int, labels: tuple[str, ...]) -> str:
        return labels[class_id] if 0 <= class_id < len(labels) else str(class_id)


class _ManifestFile(_Strict):
    schema_version: int = Field(alias="schema", ge=1, le=1)
    model: tuple[ModelEntry, ...]


class Manifest:
    """The parsed manifest; file paths in entries are resolved against the manifest's directory."""

    def __init__(self, path: Path, entries: tuple[ModelEntry, ...]) -> None:
        self.path = path
        self.root = path.parent
        self._entries = {entry.id: entry for entry in entries}

    @classmethod
    def load(cls, path: Path) -> Manifest:
        raw = read_toml(
            path,
            ManifestError,
            "model manifest",
            "check models.manifest",
            "check models.manifest names the manifest, not a model file",
        )
        try:
            parsed = _ManifestFile.model_validate(raw)
        except ValidationError as exc:
            raise ManifestError(f"model manifest {path} is invalid: {_summarise(exc)}") from None
        entries = tuple(e.model_copy(update=_resolved(e, path.parent)) for e in parsed.model)
        return cls(path, entries)

    @property
    def entries(self) -> tuple[ModelEntry, ...]:
        return tuple(self._entries.values())

    def get(self, model_id: str) -> ModelEntry:
        try:
            return self._entries[model_id]
        except KeyError:
            known = ", ".join(sorted(self._entries)) or "none"
            raise ModelError(f"model {model_id!r} is not in {self.path} (known models: {known})") from None

    def labels(self, entry: ModelEntry) -> tuple[str, ...]:
        if entry.labels is None:
            return ()
        try:
            text = entry.labels.read_text(encoding="utf-8")
        except OSError as exc:
            raise ModelError(
                f"labels file {entry.labels} for model {entry.id} is unreadable: {exc}"
            ) from None
        return tuple(line.strip() for line in text.splitlines() if line.strip())


def _resolved(entry: ModelEntry, root: Path) -> dict[str, Path | None]:
    return {
        "file": root / entry.file,
        "labels": None if entry.labels is None else root / entry.labels,
    }


def _summarise(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors())
