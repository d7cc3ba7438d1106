"""`cmd/bench` on the device: pause the pipeline, time the models on a low-priority thread, resume, and
publish the result with the device's hardware on `<prefix>/<id>/bench` (docs/topics.md).

- One benchmark at a time: a request while one runs gets a `busy` reply, so the operator's tool lists
  the device instead of waiting for an answer that will not come.
- The pipeline is held through the pace controller's own hold, apart from the operator's pause: a
  pipeline the operator had paused stays paused afterwards, and a `cmd/pause` or `cmd/resume` sent
  during the benchmark takes effect when it ends instead of being overwritten by it.
- The benchmark waits until the frame thread has seen the hold, so no frame's inference overlaps it.
- The thread runs at nice 10: the link, the commands, the camera and the sensors keep their CPU share,
  so a device under test stays connected and its status and stats keep coming.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from device import __version__
from device.config import Config
from device.errors import ApplianceError
from device.fleetbench.hardware import describe
from device.fleetbench.measure import StoppedError, measure_models, sample_frame
from device.fleetbench.request import REPLY_VERSION, BadRequestError, BenchRequest, parse_request
from device.kinds import MODEL_KINDS
from device.link.topics import Topics
from device.ratelog import log_rarely
from device.thermal.sensors import Readings
from device.vision.manifest import Manifest

log = logging.getLogger(__name__)

BENCH_NICE = 10  # below the daemon's other threads (nice 0), above idle work
# The frame thread looks at the pace at least every 0.1 s while paused; a frame in flight finishes
# within its own inference time (a second at most on a Pi's CPU). Past this, the bench goes ahead and
# says so in its result.
IDLE_TIMEOUT_S = 5.0

# Model id -> the manifest that lists it (bundled or an OTA slot's), and the ids the pipeline runs now.
Catalogue = tuple[dict[str, Manifest], tuple[str, ...]]


class Holdable(Protocol):
    """The pace controller, as the benchmark sees it."""

    def hold(self, reason: str | None) -> None: ...


@dataclass
class BenchCounts:
    """In the stats as `bench`."""

    completed: int = 0
    failed: int = 0
    busy: int = 0  # refused because another benchmark was running
    malformed: int = 0  # ignored: the payload did not validate
    running: str | None = None  # the request id of the benchmark running now


class BenchAgent:
    def __init__(
        self,
        config: Config,
        *,
        catalogue: Callable[[], Catalogue],
        pace: Holdable,
        idle: threading.Event,
        readings: Callable[[], Readings],
        publish: Callable[[dict[str, Any]], bool],
    ) -> None:
        """`idle`: set by the frame thread each time it finds the pipeline paused (cleared here).
        `readings`: the sampled sensors. `publish`: puts a reply on the bench topic."""
        self.config = config
        self.catalogue = catalogue
        self.pace = pace
        self.idle = idle
        self.readings = readings
        self.publish = publish
        self.counts = BenchCounts()
        self.topic = Topics(config.mqtt.topic_prefix, config.device_id).command("bench")
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def stats(self) -> dict[str, Any]:
        return asdict(self.counts)

    def submit(self, payload: bytes) -> None:
        """Handle one cmd/bench (the control thread): validate, refuse if busy, else start."""
        known, active = self.catalogue()
        try:
            request = parse_request(payload, frozenset(known), active, self.config.runtime.num_threads)
        except BadRequestError as exc:
            self.counts.malformed += 1
            why = f"ignored malformed message on {self.topic}: {exc}"
            log_rarely(log, logging.WARNING, self.counts.malformed, why)
            return
        with self._lock:
            running = self.counts.running
            if running is None:
                self.counts.running = request.request_id
                self._thread = threading.Thread(
                    target=self._run, args=(request, known), name="bench", daemon=True
                )
                self._thread.start()
                return
            self.counts.busy += 1
        log.warning("cmd/bench %s refused: benchmark %s is still running", request.request_id, running)
        self.publish(self._reply(request, "busy", running=running))

    def stop(self, timeout: float) -> None:
        """Ends a benchmark in progress (between two runs) without a result."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread.is_alive():
            thread.join(timeout)

    def _run(self, request: BenchRequest, manifests: dict[str, Manifest]) -> None:
        nice = _lower_priority()
        log.info(
            "benchmark %s: %s, %d threads, %d runs",
            request.request_id,
            ", ".join(request.models),
            request.threads,
            request.runs,
        )
        try:
            reply = self._measure(request, manifests, nice)
        except StoppedError:
            log.info("benchmark %s stopped: the daemon is stopping", request.request_id)
            return
        except ApplianceError as exc:
            reply = self._reply(request, "error", error=str(exc))
        except Exception as exc:  # a bug here must not take the daemon down: say so and go on
            log.exception("benchmark %s failed", request.request_id)
            reply = self._reply(request, "error", error=f"internal error: {type(exc).__name__}: {exc}")
        finally:
            with self._lock:
                self.counts.running = None
        if reply["status"] == "ok":
            self.counts.completed += 1
        else:
            self.counts.failed += 1
        self.publish(reply)
        log.info("benchmark %s: %s", request.request_id, reply.get("error") or "published")

    def _measure(
        self, request: BenchRequest, manifests: dict[str, Manifest], nice: int | None
    ) -> dict[str, Any]:
        frame = sample_frame()
        before = _temperatures(self.readings())
        self.pace.hold(f"benchmark {request.request_id}")
        started = time.monotonic()
        try:
            self.idle.clear()
            idle = self.idle.wait(IDLE_TIMEOUT_S)
            models = measure_models(self.config, manifests, request, frame, self._stop)
        finally:
            self.pace.hold(None)
        return self._reply(
            request,
            "ok",
            models=models,
            nice=nice,
            pipeline_idle=idle,
            paused_s=round(time.monotonic() - started, 3),
            temperatures={"before": before, "after": _temperatures(self.readings())},
            hardware=describe(self.config.governor.sysfs_root),
        )

    def _reply(self, request: BenchRequest, status: str, **fields: Any) -> dict[str, Any]:
        return {
            "version": REPLY_VERSION,
            "request_id": request.request_id,
            "status": status,
            "device_id": self.config.device_id,
            "firmware": __version__,
            "at": round(time.time(), 3),
            "threads": request.threads,
            "runs": request.runs,
            **fields,
        }


def _lower_priority() -> int | None:
    """Nice this thread (only this one: Linux keeps a nice value per thread, and the interpreter's
    worker threads, created later from this one, inherit it). The value read back, or None where the
    platform cannot do it."""
    if not hasattr(os, "setpriority"):
        return None
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, BENCH_NICE)
        return os.getpriority(os.PRIO_PROCESS, tid)
    except OSError as exc:
        log.warning("benchmark runs at normal priority: %s", exc)
        return None


def _temperatures(readings: Readings) -> dict[str, Any]:
    figures = readings.to_dict()
    return {"cpu_c": figures["cpu_c"], "tpu_c": figures["tpu_c"]}


class ActiveModels(Protocol):
    """The OTA engine, as the benchmark sees it: what runs now for a kind."""

    def active(self, kind: str) -> tuple[Manifest, str, str]: ...


def catalogue(engine: ActiveModels, bundled: Path) -> Catalogue:
    """Every model of the bundled manifest, plus what the pipeline runs now (which may come from an OTA
    slot's manifest): a new release can be timed across the fleet before it is rolled out further."""
    manifest = Manifest.load(bundled)
    known = {entry.id: manifest for entry in manifest.entries}
    active = []
    for kind in MODEL_KINDS:
        slot_manifest, model_id, _ = engine.active(kind)
        known[model_id] = slot_manifest
        active.append(model_id)
    return known, tuple(active)
