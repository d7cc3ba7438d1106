"""Builds the adapter a manifest entry names around a loaded model."""

from __future__ import annotations

from device.config import DetectorConfig
from device.errors import ModelMismatchError
from device.vision.centernet import CenterNetDetector, CenterNetHeatmapDetector
from device.vision.detector import Detector
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
