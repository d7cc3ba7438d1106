"""What every command needs: the config, the manifest and an interpreter factory."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from device.config import Config, load_config
from device.vision.manifest import Manifest

if TYPE_CHECKING:
    from device.vision.runtime import InterpreterFactory


@dataclass
class Context:
    config: Config
    manifest: Manifest
    factory: InterpreterFactory = field(init=False)

    def __post_init__(self) -> None:
        # Here, not at the top: `appliance ota` imports config_path from this module, and a check that
        # finds nothing new must not load LiteRT and numpy (docs/benchmarks.md, "Model updates").
        from device.vision.runtime import InterpreterFactory  # noqa: PLC0415 - see above

        self.factory = InterpreterFactory(self.config.runtime)


def config_path(explicit: str | None) -> Path | None:
    """--config, else $APPLIANCE_CONFIG, else no file (built-in defaults plus environment)."""
    chosen = explicit or os.environ.get("APPLIANCE_CONFIG")
    return Path(chosen) if chosen else None


def build_context(explicit_config: str | None) -> Context:
    config = load_config(config_path(explicit_config))
    return Context(config, Manifest.load(config.models.manifest))
