"""The kinds of model the appliance runs, spelled once."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import Field


class ModelKind(StrEnum):
    DETECTOR = "detector"
    EMBEDDER = "embedder"


MODEL_KINDS: tuple[ModelKind, ...] = tuple(ModelKind)
# For the strict pydantic models (config, manifest, release, commands): the kind as written in TOML or
# JSON, "detector" or "embedder", is taken as the enum member it names.
Kind = Annotated[ModelKind, Field(strict=False)]
