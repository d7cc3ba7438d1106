"""The update engine: the slots, the journal and the locks, and what is done to them: a check (in
device/ota/check.py), a rollback, a pin, a health-window verdict, the daemon's start-up recovery.

Used by the daemon's agent (on its interval, a fleet notice or `cmd/ota-check`) and by `appliance ota`.
Two file locks: the check lock, held for a whole check (one check at a time: they share the staging
folder), and the update lock, held only while the slots and the journal change, never over the network
or a validation (`unlocked`), so an operator's rollback or pin and a health-window verdict never wait
for a check, however slow its repository. A check that finds the slots, pins or refusals changed when it
comes to activate activates nothing: the operator's decision stands and the next check decides again.
Every step is written to the journal before it starts; `recover()` cleans up after a step that a crash
interrupted.
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from device import __version__
from device.clock import Clock, SystemClock
from device.config import Config
from device.errors import ModelError, UpdateBusyError, UpdateError
from device.ota.journal import Journal, Outcome
from device.ota.locks import WAIT_S as LOCK_WAIT_S
from device.ota.locks import FileLock
from device.ota.select import Device
from device.ota.slots import Slots
from device.vision.manifest import Manifest

if TYPE_CHECKING:
    # Only for annotations. The index and the fetcher are the network part, with python-tuf: imported
    # when a check runs (`check`). Validation and LiteRT (with numpy and OpenCV) are imported when a
    # release is taken or a model is loaded: a check that finds nothing new needs neither
    # (docs/benchmarks.md, "Model updates").
    from device.ota.fetcher import Progress
    from device.ota.index import Listing
    from device.ota.validate import Validated
    from device.vision.runtime import InterpreterFactory, LoadedModel

log = logging.getLogger(__name__)


@dataclass
class Activation:
    """A release that passed every check and is now `current`: the daemon swaps `validated` in."""

    kind: str
    validated: Validated


class Engine:
    def __init__(
        self,
        config: Config,
        factory: InterpreterFactory | None = None,
        progress: Progress | None = None,
        clock: Clock | None = None,
        lock_wait_s: float = LOCK_WAIT_S,
    ) -> None:
        self.config = config
        self.ota = config.ota
        self.clock = clock or SystemClock()
        self.root = config.state_dir / "ota"
        self.slots = Slots(self.root / "slots")
        self.journal = Journal(self.root / "journal.json", self.clock)
        self.staging = self.root / "staging"
        self._factory = factory
        self.progress = progress
        self.cancel = threading.Event()  # set: a running check activates nothing (the daemon stops)
        self.lock_wait_s = lock_wait_s  # how long a check waits for the update lock (tests: shorter)
        self._update_lock = FileLock(
            self.root / "lock", "another update is in progress (the daemon or `appliance ota`)"
        )
        self._check_lock = FileLock(
            self.root / "check.lock", "another check is in progress (the daemon or `appliance ota`)"
        )

    @property
    def factory(self) -> InterpreterFactory:
        """This engine's interpreter factory, made on first use (see the imports above)."""
        if self._factory is None:
            from device.vision.runtime import InterpreterFactory  # noqa: PLC0415

            self._factory = InterpreterFactory(self.config.runtime)
        return self._factory

    # -- locking and recovery ------------------------------------------------------------------
    @contextmanager
    def locked(self, wait_s: float = 0.0) -> Iterator[None]:
        """The update lock: one writer of slots and journal at a time (the daemon or `appliance ota`),
        waiting up to `wait_s` for it; UpdateBusyError if it stays busy."""
        with self._update_lock.held(wait_s):
            self.journal.reload()
            yield

    def checking(self) -> AbstractContextManager[None]:
        """The check lock: one check at a time; UpdateBusyError if one is running. Taken before the
        update lock, never after."""
        return self._check_lock.held()

    @contextmanager
    def unlocked(self) -> Iterator[None]:
        """Inside `locked()`: let others change slots and journal while this thread waits on the
        network or a validation. What this process changed is written first; what others changed is
        read back after."""
        self.journal.save()
        try:
            with self._update_lock.released(self.lock_wait_s):
                yield
        finally:
            self.journal.reload()

    def recover(self, clean_staging: bool = True) -> None:
        """After a crash: forget an interrupted step, delete unverified downloads (keeping partial ones,
        which resume), and drop a health entry whose activation never happened. `clean_staging` False:
        a check is running and the staging folder is its own."""
        step = self.journal.state.step
        if step is not None:
            log.warning(
                "OTA: a previous %s of %s %s was interrupted; cleaning up", step.name, step.kind, step.version
            )
        if clean_staging and self.staging.is_dir():
            for child in self.staging.iterdir():
                if child.is_dir():
                    shutil.rmtree(child, ignore_errors=True)
        for kind, health in list(self.journal.state.health.items()):
            if self.slots.current(kind) != health.version:
                del self.journal.state.health[kind]
        if step is not None:
            self.journal.state.step = None
        self.journal.save()
        for kind in self.ota.kinds:
            self.slots.prune(kind)

    # -- the daemon's side of the health window ---------------------------------------------------
    def startup(self, run_windows: bool = True) -> list[Outcome]:
        """At daemon start. A window found running means the daemon died inside it (crash, kill -9,
        power cut): roll back, as Mender does with an uncommitted update. Others start now, unless the
        daemon will not run them (`run_windows` False: OTA is off in its config)."""
        outcomes: list[Outcome] = []
        try:
            # Wait out a brief hold (`appliance ota` following a slot): skipping this would run a
            # model whose window the daemon died in, with no verdict to come.
            with self.locked(self.lock_wait_s):
                try:
                    with self.checking():
                        self.recover()
                except UpdateBusyError:  # `appliance ota check` is downloading
                    self.recover(clean_staging=False)
                for kind, health in list(self.journal.state.health.items()):
                    if health.running:
                        reason = "the daemon stopped during the health window (crash, kill or power cut)"
                        outcomes.append(self.rollback(kind, reason))
                    elif run_windows:
                        health.running = True
                    else:
                        log.warning("OTA is off: the health window of %s %s waits", kind, health.version)
                self.journal.save()
        except UpdateError as exc:
            log.warning("OTA start-up checks skipped: %s", exc)
        return outcomes

    def pause_windows(self) -> None:
        """A clean stop is not a failure: the windows run again from the start next time."""
        try:
            with self.locked(LOCK_WAIT_S):  # a check may be activating: it activates nothing after
                for health in self.journal.state.health.values():
                    health.running = False
                self.journal.save()
        except UpdateError:
            log.warning("OTA: could not mark the health windows paused; the next start rolls them back")

    # -- which model runs ----------------------------------------------------------------------
    def active(self, kind: str) -> tuple[Manifest, str, str]:
        """(manifest, model id, version) of what the daemon should load for `kind`."""
        version = self.slots.current(kind)
        if version is not None:
            try:
                manifest, entry = self.slots.manifest(kind, version)
                return manifest, entry.id, entry.version
            except ModelError as exc:
                log.error("OTA slot %s/%s is unusable (%s); using the bundled model", kind, version, exc)
        manifest = Manifest.load(self.config.models.manifest)
        model_id = self.config.models.detector if kind == "detector" else self.config.models.embedder
        return manifest, model_id, manifest.get(model_id).version

    def load(self, kind: str, factory: InterpreterFactory | None = None) -> LoadedModel:
        """Load and warm up what `active(kind)` names, with this engine's factory or another (the TPU
        failover loads on the CPU)."""
        manifest, model_id, _ = self.active(kind)
        return (factory or self.factory).load(manifest, model_id)

    def device(self, kind: str, listing: Listing | None = None) -> Device:
        state = self.journal.state
        fingerprints = listing.fingerprints if listing is not None else {}
        return Device(
            self.config.device_id,
            self.ota.channel,
            __version__,
            state.pins.get(kind),
            frozenset(state.refused),
            frozenset(path for path, digest in fingerprints.items() if digest in state.invalid),
        )

    # -- the check -----------------------------------------------------------------------------
    def check(self, running: bool = False) -> tuple[list[Outcome], list[Activation]]:
        """One check for every kind (device/ota/check.py). `running`: the daemon runs the health window
        of what it activates right away."""
        # Imported here, not at the top: the check is the only part of the engine that talks to the
        # repository, and python-tuf with its signing libraries costs ~0.1 s of imports here (more on a
        # Pi's slower cores). A daemon with OTA off never checks, one with it on checks later on its OTA
        # thread: neither should pay for tuf at start-up (tests/test_imports.py holds this).
        from device.ota.check import Check  # noqa: PLC0415

        return Check(self, running).run()

    # -- operator actions and the health window's verdicts ----------------------------------------
    def rollback(self, kind: str, reason: str) -> Outcome:
        """current -> previous; the release rolled back from is never taken again automatically."""
        _, _, version = self.active(kind)
        current = self.slots.current(kind)
        if current is None:
            raise UpdateError(f"{kind} runs the bundled model; there is nothing to roll back to")
        key = self._key(kind, current)
        if key not in self.journal.state.refused:
            self.journal.state.refused.append(key)
        self.journal.state.health.pop(kind, None)
        _, back = self.slots.rollback(kind)
        log.warning("OTA: %s %s rolled back to %s: %s", kind, version, back or "the bundled model", reason)
        outcome = Outcome(
            outcome="rolled_back", kind=kind, version=version, reason=reason, at=self.clock.time()
        )
        self.journal.record(outcome)
        return outcome

    def pin(self, kind: str, version: str | None) -> None:
        """Take exactly `version` of `kind` from the next check on (None: follow the channel again)."""
        if version is None:
            self.journal.state.pins.pop(kind, None)
        else:
            self.journal.state.pins[kind] = version
        self.journal.save()
        log.info("OTA: %s %s", kind, f"pinned to {version}" if version else "pin cleared")

    def confirm(self, kind: str, reason: str) -> Outcome:
        health = self.journal.state.health.pop(kind)
        outcome = Outcome(
            outcome="confirmed", kind=kind, version=health.version, reason=reason, at=self.clock.time()
        )
        self.journal.record(outcome)
        self.slots.prune(kind)
        return outcome

    def _key(self, kind: str, version: str) -> str:
        try:
            _, entry = self.slots.manifest(kind, version)
            return f"{entry.id}@{entry.version}"
        except ModelError:
            return f"{kind}@{version}"
