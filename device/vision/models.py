"""Builds the adapter a manifest entry names around a loaded model: a detector, or the embedder."""

from __future__ import annotations

from device.config import DetectorConfig, EmbedderConfig
from device.errors import ModelMismatchError
from device.vision.centernet import CenterNetDetector, CenterNetHeatmapDetector
from device.vision.detector import Detector
from device.vision.embedder import Embedder
from device.vision.runtime import LoadedModel
from device.vision.ssd import SsdDetector

_DETECTORS: dict[str, type[Detector]] = {
    "ssd": SsdDetector,
    "centernet": CenterNetDetector,
    "centernet-heatmap": CenterNetHeatmapDetector,
}


def make_detector(model: LoadedModel, config: DetectorConfig) -> Detector:
    adapter = _DETECTORS.get(model.entry.adapter)
    if adapter is None:
        raise ModelMismatchError(
            f"model {model.entry.id} has adapter {model.entry.adapter!r}, which is not a detector "
            f"(detector adapters: {', '.join(_DETECTORS)})"
        )
    return adapter(model, config)


def make_adapter(
    kind: str, model: LoadedModel, detector_config: DetectorConfig, embedder_config: EmbedderConfig
) -> Detector | Embedder:
    """The adapter for a model of `kind` (detector or embedder); ModelMismatchError when the model's
    adapter or tensors do not fit that kind."""
    if kind == "detector":
        return make_detector(model, detector_config)
    if model.entry.adapter != "embedder":
        raise ModelMismatchError(
            f"model {model.entry.id} has adapter {model.entry.adapter!r}, which is not an embedder"
        )
    return Embedder(model, embedder_config)
