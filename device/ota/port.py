"""What OTA sees of the part that runs the models: the port that app.py wires to the pipeline.

A health window needs only counts (frames and inference errors since it opened, and the new model's
median invoke time), and an activation needs only a way to swap a model in between frames. Keeping OTA
to this narrow port means a change to the pipeline's own counters cannot silently break rollback: the
pipeline must still implement these two methods, which mypy checks where app.py hands it over.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from device.vision.detector import Detector
from device.vision.embedder import Embedder


@dataclass(frozen=True)
class RunCounts:
    frames: int  # frames processed since start
    errors: int  # frames whose inference raised, since start
    invokes: int  # recent invokes of the model of one kind (since its last swap), up to a window
    invoke_ms_p50: float | None  # their median, None before the first


class ModelHost(Protocol):
    def run_counts(self, kind: str) -> RunCounts:
        """The counts a health window judges `kind` ("detector" or "embedder") by; any thread."""

    def swap_model(self, model: Detector | Embedder) -> None:
        """Use `model` from the next frame on (called from the OTA thread)."""
