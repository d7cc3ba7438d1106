"""The daemon's updater: checks on an interval (with jitter) or when told, swaps models in between
frames, and runs the health window.

Two threads, neither of them the frame loop. Checks run on their own (`ota-check`): a download and a
validation take seconds, a slow repository up to ota.check_deadline_s, and the pipeline keeps running
the old model meanwhile. The agent's thread (`ota`) carries out operator commands and health-window
verdicts, and follows slot changes, every second, so a running check never delays them; the engine
holds the update lock only to change slots and the journal, never over the network, and a check that
finds them changed when it comes to activate (a rollback came in meanwhile) does not activate. The swap
itself is a pointer exchange between two frames (ModelHost.swap_model, device/ota/port.py), so no frame
waits for a model to load. A fleet notice (`<prefix>/fleet/release`) or `cmd/ota-check` only triggers a
check; their content is never trusted.

Locks, always in this order: the engine's update lock (a file lock, shared with `appliance ota`), then
`_mutex` (this process's windows, loaded versions and swaps).
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
from device.kinds import MODEL_KINDS
from device.ota.engine import Activation, Engine
from device.ota.health import MIN_INVOKES, HealthWatch
from device.ota.locks import WAIT_S as LOCK_WAIT_S
from device.ota.port import ModelHost
from device.vision.detector import Detector
from device.vision.embedder import Embedder
from device.vision.models import make_adapter

log = logging.getLogger(__name__)

MIN_TRIGGER_GAP_S = 10.0  # a burst of notices or commands costs one check
BUSY_RETRY_S = 5.0  # `appliance ota` held the lock


class Agent:
    def __init__(
        self, engine: Engine, host: ModelHost, config: Config, clock: Clock, on_change: Callable[[], None]
    ) -> None:
        self.engine = engine
        self.host = host  # the pipeline, seen through OTA's port
        self.config = config
        self.ota = config.ota
        self.clock = clock
        self.on_change = on_change
        self.state = "idle"
        self.last_error = ""
        self.windows: dict[str, HealthWatch] = {}
        self.loaded: dict[str, str | None] = {kind: engine.slots.current(kind) for kind in MODEL_KINDS}
        self._wake = threading.Event()
        self._commands: queue.Queue[tuple[str, str, str | None]] = queue.Queue()
        self._stop = threading.Event()
        self._last_trigger = -1e18
        self._mutex = threading.Lock()
        self._check_wanted = False
        self._next_check = 0.0
        self._checker: threading.Thread | None = None
        self._thread = threading.Thread(target=self._run, name="ota", daemon=True)

    # -- control ---------------------------------------------------------------------------------
    def start(self) -> None:
        now = self.clock.monotonic()
        for kind, health in self.engine.journal.state.health.items():
            self.windows[kind] = HealthWatch.open(kind, health.version, now, self.host, None)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.engine.cancel.set()  # a check still running activates nothing from now on
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
        self._check_wanted = True
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
        self._next_check = self.clock.monotonic() + random.uniform(1.0, min(60.0, self.ota.interval_s))
        while not self._stop.is_set():
            self._wake.wait(1.0)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                if self._operator_commands():
                    self._check_wanted = True  # a new pin is taken at once
                self._follow_slots()
                self._watch()
                self._maybe_check()
            except Exception:  # the updater must never take the daemon down
                log.exception("OTA agent error")

    def _maybe_check(self) -> None:
        """Start a check on its own thread when one is due and none is running."""
        if self._checker is not None and self._checker.is_alive():
            return  # a wanted check starts when this one ends
        if self._check_wanted or self.clock.monotonic() >= self._next_check:
            self._check_wanted = False
            self._checker = threading.Thread(target=self._check, name="ota-check", daemon=True)
            self._checker.start()

    def _operator_commands(self) -> bool:
        """Carry out queued operator commands; True if a pin changed, so a check should follow."""
        pinned = False
        while not self._commands.empty():
            action, kind, version = self._commands.get_nowait()
            try:
                with self.engine.locked(LOCK_WAIT_S), self._mutex:
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

    def _check(self) -> None:
        """One check, on the `ota-check` thread; tried again soon if `appliance ota` held a lock."""
        self.state = "checking"
        retry_s = self._interval()
        try:
            outcomes, activations = self.engine.check(running=True)
            self.last_error = ""
        except UpdateBusyError as exc:
            log.info("OTA check postponed: %s", exc)
            retry_s = BUSY_RETRY_S
            return
        except RegistryUnavailableError as exc:
            self._failed(str(exc), logging.WARNING)
            return
        except (UpdateError, ApplianceError) as exc:
            self._failed(str(exc), logging.ERROR)
            return
        finally:
            self.state = "idle"
            self._next_check = self.clock.monotonic() + retry_s
            self._wake.set()
        self._take(activations)
        if activations or any(o.outcome in ("rejected", "rolled_back") for o in outcomes):
            self.on_change()

    def _take(self, activations: list[Activation]) -> None:
        """Swap in what the check activated, unless the agent's thread already followed the slot (it
        may see it first) or something else replaced it since."""
        try:
            with self.engine.locked(LOCK_WAIT_S), self._mutex:
                for activation in activations:
                    kind, version = activation.kind, activation.validated.release.version
                    if self.engine.slots.current(kind) == version != self.loaded[kind]:
                        self._swap(kind, activation.validated.adapter, version)
        except UpdateBusyError:
            log.warning("OTA: the update lock stayed busy; the slots are followed within a second")

    def _failed(self, reason: str, level: int) -> None:
        """The engine has journaled the failure; the status carries it too."""
        log.log(level, "OTA check failed; the current models keep running: %s", reason)
        self.last_error = reason
        self.on_change()

    def _swap(self, kind: str, adapter: Detector | Embedder, version: str) -> None:
        old = self.host.run_counts(kind)
        baseline = old.invoke_ms_p50 if old.invokes >= MIN_INVOKES else None
        self.host.swap_model(adapter)
        self.loaded[kind] = self.engine.slots.current(kind)
        if kind in self.engine.journal.state.health:
            self.windows[kind] = HealthWatch.open(kind, version, self.clock.monotonic(), self.host, baseline)
        log.info("OTA: %s %s swapped in between frames", kind, version)

    def _follow_slots(self) -> None:
        """`appliance ota check|rollback` (or our own check) changed a slot: load what it now points
        at. Compared again under the update lock, so an activation is never seen half done."""
        if all(self.engine.slots.current(kind) == self.loaded[kind] for kind in MODEL_KINDS):
            return
        with self.engine.locked(LOCK_WAIT_S), self._mutex:
            for kind in MODEL_KINDS:
                if self.engine.slots.current(kind) == self.loaded[kind]:
                    continue
                model = self.engine.load(kind)
                adapter = make_adapter(kind, model, self.config.detector, self.config.embedder)
                self._swap(kind, adapter, model.entry.version)
                health = self.engine.journal.state.health.get(kind)
                if health is not None and not health.running:  # the CLI activated it: we run it now
                    health.running = True
                    self.engine.journal.save()
                self.on_change()

    def _watch(self) -> None:
        with self._mutex:
            windows = list(self.windows.items())
        for kind, window in windows:
            verdict = window.verdict(self.clock.monotonic(), self.host, self.ota)
            if verdict is None:
                continue
            try:
                with self.engine.locked(LOCK_WAIT_S), self._mutex:
                    if self.windows.get(kind) is not window:
                        continue  # an operator's rollback or a new activation closed it meanwhile
                    if verdict.healthy:
                        self.engine.confirm(kind, verdict.reason)
                        log.info("OTA: %s %s confirmed: %s", kind, window.version, verdict.reason)
                    else:
                        self.engine.rollback(kind, verdict.reason)
                    del self.windows[kind]
            except UpdateBusyError:
                continue  # judged again in a second
            if not verdict.healthy:
                self._follow_slots()
            self.on_change()
