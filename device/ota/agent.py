"""The daemon's updater: checks on an interval (with jitter) or when told, swaps models in between
frames, and runs the health window.

Checks run on this thread, never on the frame loop: a download and a validation take seconds, and the
pipeline keeps running the old model meanwhile. The swap itself is a pointer exchange between two frames
(Pipeline.request_swap), so no frame waits for a model to load. A fleet notice (`<prefix>/fleet/release`)
or `cmd/ota-check` only triggers a check; their content is never trusted.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
from collections.abc import Callable
from typing import Any

from device.clock import Clock
from device.config import Config
from device.errors import ApplianceError, RegistryUnavailableError, UpdateBusyError, UpdateError
from device.ota.engine import Engine
from device.ota.health import MIN_INVOKES, HealthWatch
from device.ota.journal import Outcome
from device.pipeline import Pipeline
from device.vision.detector import Detector
from device.vision.embedder import Embedder
from device.vision.models import make_adapter

log = logging.getLogger(__name__)

MIN_TRIGGER_GAP_S = 10.0  # a burst of notices or commands costs one check
BUSY_RETRY_S = 5.0  # `appliance ota` held the lock


class Agent:
    def __init__(
        self, engine: Engine, pipeline: Pipeline, config: Config, clock: Clock, on_change: Callable[[], None]
    ) -> None:
        self.engine = engine
        self.pipeline = pipeline
        self.config = config
        self.ota = config.ota
        self.clock = clock
        self.on_change = on_change
        self.state = "idle"
        self.last_error = ""
        self.windows: dict[str, HealthWatch] = {}
        self.loaded = {kind: engine.slots.current(kind) for kind in ("detector", "embedder")}
        self._wake = threading.Event()
        self._commands: queue.Queue[tuple[str, str, str | None]] = queue.Queue()
        self._stop = threading.Event()
        self._last_trigger = -1e18
        self._thread = threading.Thread(target=self._run, name="ota", daemon=True)

    # -- control ---------------------------------------------------------------------------------
    def start(self) -> None:
        now = self.clock.monotonic()
        for kind, health in self.engine.journal.state.health.items():
            self.windows[kind] = HealthWatch.open(kind, health.version, now, self.pipeline, None)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(2.0)
        self.engine.pause_windows()

    def command(self, action: str, kind: str, version: str | None) -> None:
        """An operator's `cmd/ota-rollback` or `cmd/ota-pin`, carried out on the agent's thread."""
        self._commands.put((action, kind, version))
        self._wake.set()

    def trigger(self, why: str) -> None:
        now = self.clock.monotonic()
        if now - self._last_trigger < MIN_TRIGGER_GAP_S:
            log.info("OTA check (%s) skipped: one ran less than %.0f s ago", why, MIN_TRIGGER_GAP_S)
            return
        self._last_trigger = now
        log.info("OTA check requested: %s", why)
        self._wake.set()

    def status(self) -> dict[str, Any]:
        windows = {
            k: {
                "version": w.version,
                "left_s": round(max(0.0, self.ota.health_window_s - (self.clock.monotonic() - w.started)), 1),
            }
            for k, w in list(self.windows.items())  # a copy: the agent's thread may change it meanwhile
        }
        return {
            "state": self.state,
            "error": self.last_error,
            **self.engine.journal.summary(),
            "health_windows": windows,
        }

    # -- the loop --------------------------------------------------------------------------------
    def _run(self) -> None:
        # The first check comes soon after start, spread over a minute so a fleet rebooting together
        # does not hit the repository at once.
        next_check = self.clock.monotonic() + random.uniform(1.0, min(60.0, self.ota.interval_s))
        while not self._stop.is_set():
            woken = self._wake.wait(1.0)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                if self._operator_commands():
                    woken = True  # a new pin is taken at once
                if woken or self.clock.monotonic() >= next_check:
                    done = self._check()
                    next_check = self.clock.monotonic() + (self._interval() if done else BUSY_RETRY_S)
                self._follow_slots()
                self._watch()
            except Exception:  # the updater must never take the daemon down
                log.exception("OTA agent error")

    def _operator_commands(self) -> bool:
        """Carry out queued operator commands; True if a pin changed, so a check should follow."""
        pinned = False
        while not self._commands.empty():
            action, kind, version = self._commands.get_nowait()
            try:
                with self.engine.locked():
                    if action == "rollback":
                        self.engine.rollback(kind, "by operator command cmd/ota-rollback")
                        self.windows.pop(kind, None)
                    else:
                        self.engine.pin(kind, version)
                        pinned = True
            except UpdateError as exc:  # nothing to roll back to, or busy: say so, keep running
                log.warning("OTA %s of the %s refused: %s", action, kind, exc)
                self.last_error = str(exc)
            self.on_change()
        return pinned

    def _interval(self) -> float:
        return self.ota.interval_s * random.uniform(1 - self.ota.jitter, 1 + self.ota.jitter)

    def _check(self) -> bool:
        """One check; False if `appliance ota` held the lock and it should be tried again soon."""
        self.state = "checking"
        try:
            outcomes, activations = self.engine.check(running=True)
            self.last_error = ""
        except UpdateBusyError as exc:
            log.info("OTA check postponed: %s", exc)
            return False
        except RegistryUnavailableError as exc:
            self._failed("unavailable", str(exc), logging.WARNING)
            return True
        except (UpdateError, ApplianceError) as exc:
            self._failed("rejected", str(exc), logging.ERROR)
            return True
        finally:
            self.state = "idle"
        for activation in activations:
            self._swap(activation.kind, activation.validated.adapter, activation.validated.release.version)
        if activations or any(o.outcome in ("rejected", "rolled_back") for o in outcomes):
            self.on_change()
        return True

    def _failed(self, outcome: str, reason: str, level: int) -> None:
        log.log(level, "OTA check failed; the current models keep running: %s", reason)
        self.last_error = reason
        try:
            with self.engine.locked():  # never over a pin `appliance ota` is writing
                self.engine.journal.record(Outcome(outcome=outcome, reason=reason, at=self.clock.time()))
        except UpdateBusyError:
            pass  # the status still shows the error; the journal gets the next one
        self.on_change()

    def _swap(self, kind: str, adapter: Detector | Embedder, version: str) -> None:
        old = self.pipeline.invoke_ms[kind]
        baseline = old.get(50) if len(old) >= MIN_INVOKES else None
        if isinstance(adapter, Embedder):
            self.pipeline.request_swap(embedder=adapter)
        else:
            self.pipeline.request_swap(detector=adapter)
        self.loaded[kind] = self.engine.slots.current(kind)
        if kind in self.engine.journal.state.health:
            self.windows[kind] = HealthWatch.open(
                kind, version, self.clock.monotonic(), self.pipeline, baseline
            )
        log.info("OTA: %s %s swapped in between frames", kind, version)

    def _follow_slots(self) -> None:
        """`appliance ota check|rollback` changed a slot: load what it now points at."""
        for kind in ("detector", "embedder"):
            current = self.engine.slots.current(kind)
            if current == self.loaded[kind]:
                continue
            self.engine.journal.reload()  # the CLI wrote it: its health entries are news to us
            model = self.engine.load(kind)
            adapter = make_adapter(kind, model, self.config.detector, self.config.embedder)
            self._swap(kind, adapter, model.entry.version)
            if kind in self.engine.journal.state.health:
                try:
                    self.engine.start_window(kind)
                except UpdateBusyError:  # the window runs anyway; only a crash in it would go unjudged
                    log.warning("OTA: could not mark the %s health window as running", kind)
            self.on_change()

    def _watch(self) -> None:
        for kind, window in list(self.windows.items()):
            verdict = window.verdict(self.clock.monotonic(), self.pipeline, self.ota)
            if verdict is None:
                continue
            try:
                with self.engine.locked():
                    if verdict.healthy:
                        self.engine.confirm(kind, verdict.reason)
                        log.info("OTA: %s %s confirmed: %s", kind, window.version, verdict.reason)
                    else:
                        self.engine.rollback(kind, verdict.reason)
            except UpdateBusyError:
                continue  # `appliance ota` holds the lock: judge again in a second
            del self.windows[kind]
            if not verdict.healthy:
                self._follow_slots()
            self.on_change()
