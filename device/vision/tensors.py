"""Finding a model's tensors by name or shape, and saying clearly when they do not fit an adapter."""

from __future__ import annotations

import re
from typing import Any

from device.errors import ModelMismatchError
from device.vision.runtime import LoadedModel

TensorDetail = dict[str, Any]


def describe(details: list[TensorDetail]) -> str:
    return ", ".join(f"{d['name']} {[int(v) for v in d['shape']]} {d['dtype'].__name__}" for d in details)


def mismatch(
    model: LoadedModel, adapter: str, expected: str, found: list[TensorDetail]
) -> ModelMismatchError:
    return ModelMismatchError(
        f"model {model.entry.id} ({model.entry.file}) does not fit the {adapter} adapter: expected "
        f"{expected}; found {describe(found) or 'no tensors'}"
    )


def single_image_input(model: LoadedModel, adapter: str) -> tuple[TensorDetail, int, int]:
    """The one [1, H, W, 3] input every vision adapter takes; returns (detail, width, height)."""
    inputs = model.interpreter.get_input_details()
    shape = list(inputs[0]["shape"]) if len(inputs) == 1 else []
    if len(shape) != 4 or shape[0] != 1 or shape[3] != 3:
        raise mismatch(model, adapter, "one input of shape [1, H, W, 3]", inputs)
    return inputs[0], int(shape[2]), int(shape[1])


def by_name(model: LoadedModel, role: str) -> TensorDetail | None:
    """The output the manifest names for `role`, if it names one and the model has it."""
    name = model.entry.outputs.get(role)
    if name is None:
        return None
    for detail in model.interpreter.get_output_details():
        if detail["name"] == name:
            return detail
    return None


def name_order(detail: TensorDetail) -> int:
    """Post-processing ops name their outputs `op`, `op:1`, `op:2`...: the suffix is the op's output
    position, which is stable, unlike the order get_output_details() returns them in."""
    match = re.search(r":(\d+)$", str(detail["name"]))
    return int(match.group(1)) if match else 0
