"""Edge TPU failover at run time: when a TPU dies, the models move to the CPU without a restart.

A PCIe Coral that has failed reports about -89 °C (the governor reads it). Models placed on it would
fail at their next invoke, so they are reloaded on the CPU (through their CPU twins where they are
compiled for the TPU) on a background thread, and swapped in between frames, as an OTA update is.
Status and stats then say `cpu_fallback` with the reason. With `runtime.fallback = "fail"` the operator
chose never to run on the CPU: the daemon stops instead (exit 69) and says why.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from device.config import Config
from device.errors import AcceleratorError, ApplianceError
from device.kinds import MODEL_KINDS
from device.ota.engine import Engine
from device.pipeline import Pipeline
from device.thermal.sensors import Readings
from device.vision.detector import Detector
from device.vision.embedder import Embedder
from device.vision.models import make_adapter
from device.vision.runtime import InterpreterFactory, Placement

log = logging.getLogger(__name__)


class TpuFailover:
    def __init__(
        self, config: Config, engine: Engine, pipeline: Pipeline, on_change: Callable[[], None]
    ) -> None:
        self.config = config
        self.engine = engine
        self.pipeline = pipeline
        self.on_change = on_change
        self.started = False

    def poll(self, readings: Readings) -> None:
        """On the app thread, cheap: acts once, the first time a TPU reads as failed."""
        if self.started or not readings.tpu_failed:
            return
        on_tpu = [
            m
            for m in (self.pipeline.detector.model, self.pipeline.embedder.model)
            if m.placement.accelerator == "edgetpu"
        ]
        if not on_tpu:
            return
        self.started = True
        reason = f"Edge TPU {', '.join(readings.tpu_failed)} failed (it reads about -89 °C)"
        if self.config.runtime.fallback == "fail":
            raise AcceleratorError(f"{reason}, and runtime.fallback is 'fail'; stopping")
        log.warning("%s: moving the models to the CPU", reason)
        threading.Thread(target=self._move, args=(reason,), name="tpu-failover", daemon=True).start()

    def _move(self, reason: str) -> None:
        factory = InterpreterFactory(self.config.runtime.model_copy(update={"device": "cpu"}))
        moved: dict[str, Detector | Embedder] = {}
        for kind in MODEL_KINDS:
            try:
                model = self.engine.load(kind, factory)
            except ApplianceError as exc:
                log.error("cannot move the %s to the CPU (%s); it stays on the failed TPU", kind, exc)
                continue
            model.placement = Placement("cpu", "cpu", cpu_fallback=True, reason=reason)
            moved[kind] = make_adapter(kind, model, self.config.detector, self.config.embedder)
        detector, embedder = moved.get("detector"), moved.get("embedder")
        self.pipeline.request_swap(
            detector if isinstance(detector, Detector) else None,
            embedder if isinstance(embedder, Embedder) else None,
        )
        self.on_change()
