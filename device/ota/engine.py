"""One update check, end to end: refresh the signed metadata, choose, download, validate, stage, activate.

Used by the daemon's agent (on its interval, a fleet notice or `cmd/ota-check`) and by `appliance ota`.
Two file locks: the check lock, held for a whole check (one check at a time: they share the staging
folder), and the update lock, held only while the slots and the journal change, never over the network
or a validation (`_unlocked`), so an operator's rollback or pin and a health-window verdict never wait
for a check, however slow its repository. A check that finds the slots, pins or refusals changed when it
comes to activate (`_basis`) activates nothing: the operator's decision stands and the next check
decides again. Every step is written to the journal before it starts; `recover()` cleans up after a
step that a crash interrupted.
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tuf.ngclient import Updater

from device import __version__
from device.clock import Clock, SystemClock
from device.config import Config
from device.errors import (
    ModelError,
    RegistryUnavailableError,
    ReleaseInvalidError,
    UpdateBusyError,
    UpdateError,
)
from device.ota import faults, remote
from device.ota.fetcher import Progress
from device.ota.index import Listing, read_index
from device.ota.journal import Health, Invalid, Journal, Outcome
from device.ota.locks import WAIT_S as LOCK_WAIT_S
from device.ota.locks import FileLock
from device.ota.release import version_key
from device.ota.select import Blocked, Device, Wanted, choose
from device.ota.slots import Slots, entries_for, write_manifest
from device.vision.manifest import Manifest

if TYPE_CHECKING:
    # Validation and LiteRT (with numpy and OpenCV) are imported when a release is taken or a model is
    # loaded: a check that finds nothing new needs neither (docs/benchmarks.md, "Model updates").
    from device.ota.validate import Validated
    from device.vision.runtime import InterpreterFactory, LoadedModel

log = logging.getLogger(__name__)


class _Superseded(Exception):  # noqa: N818 (control flow inside the engine, never raised out of it)
    """What a check decided on changed while it downloaded and validated: it activates nothing."""


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
    def _unlocked(self) -> Iterator[None]:
        """Inside `locked()`: let others change slots and journal while this thread waits on the
        network or a validation. What this process changed is written first; what others changed is
        read back after."""
        self.journal.save()
        try:
            with self._update_lock.released(self.lock_wait_s):
                yield
        finally:
            self.journal.reload()

    def _basis(self, kind: str) -> tuple[object, ...]:
        """What a check decided on: if any of it changes before the check activates, it does not."""
        state = self.journal.state
        health = state.health.get(kind)
        return (
            self.slots.current(kind),
            self.slots.previous(kind),
            state.pins.get(kind),
            frozenset(state.refused),
            None if health is None else health.version,
        )

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
        """One check for every kind. `running`: the daemon runs the health window right away."""
        outcomes: list[Outcome] = []
        activations: list[Activation] = []
        # The check lock fails at once (a check runs for minutes); the update lock is held for moments
        # (a rollback, a verdict, the daemon following a slot): wait them out, as everyone else does.
        with self.checking(), self.locked(self.lock_wait_s):
            self.recover()
            self.journal.begin_check()
            try:
                with self._unlocked():
                    updater = self._refresh()
                    listing = read_index(updater, self.staging, self.ota.max_target_bytes)
            except UpdateBusyError:  # the lock was not taken back: postponed, and nothing may be written
                raise
            except (UpdateError, RegistryUnavailableError) as exc:
                # Recorded here, so `appliance ota status` shows it as the daemon's status does.
                failed = "unavailable" if isinstance(exc, RegistryUnavailableError) else "rejected"
                self.journal.record(Outcome(outcome=failed, reason=str(exc), at=self.clock.time()))
                raise
            outcomes.extend(self._bad_entries(listing))
            for kind in self.ota.kinds:
                outcome, activation = self._check_kind(updater, listing, kind, running)
                outcomes.append(outcome)
                if activation is not None:
                    activations.append(activation)
            self.journal.save()
        return outcomes, activations

    def _refresh(self) -> Updater:
        return remote.refresh(self.ota, self.root / "metadata", self.staging, self.progress)

    def _bad_entries(self, listing: Listing) -> list[Outcome]:
        """Index entries that are not releases: each is recorded (and returned) the first time it is
        seen, then only listed in the status while the index still holds it."""
        new = []
        for digest, problem in listing.problems.items():
            if digest not in self.journal.state.bad_entries:
                log.error("OTA: %s", problem.reason)
                new.append(
                    Outcome(
                        outcome="rejected",
                        kind=problem.kind,
                        version=problem.version,
                        reason=problem.reason,
                        at=self.clock.time(),
                    )
                )
                self.journal.record(new[-1])
        self.journal.state.bad_entries = {d: p.reason for d, p in listing.problems.items()}
        listed = set(listing.fingerprints.values())
        self.journal.state.invalid = {d: i for d, i in self.journal.state.invalid.items() if d in listed}
        return new

    def _check_kind(
        self, updater: Updater, listing: Listing, kind: str, running: bool
    ) -> tuple[Outcome, Activation | None]:
        _, model_id, active = self.active(kind)
        releases = listing.releases
        halted = [
            r
            for r in releases.values()
            if r.kind == kind and r.model_id == model_id and r.version == active and r.halted
        ]
        if halted and self.slots.current(kind) is not None:
            return self.rollback(kind, f"release {halted[0].key} was halted: {halted[0].halt_reason}"), None
        device = self.device(kind, listing)
        wanted = choose(releases, kind, device)
        if isinstance(wanted, Blocked):
            log.error("OTA: %s", wanted.reason)
            version = device.pinned or ""
            blocked = Outcome(
                outcome="rejected", kind=kind, version=version, reason=wanted.reason, at=self.clock.time()
            )
            self.journal.record(blocked)
            return blocked, None
        held = self._held(listing, kind, device, wanted, active)
        if held is not None:
            return held, None
        assert wanted is not None  # _held returns an outcome when there is nothing to take
        return self._take_and_activate(updater, listing, wanted, running)

    def _held(
        self, listing: Listing, kind: str, device: Device, wanted: Wanted | None, active: str
    ) -> Outcome | None:
        """Why `wanted` is not taken now (not journaled: `last_check` says the check happened), or None."""
        now = self.clock.time()
        if wanted is None or wanted.release.version == active:
            skipped = self._skipped(listing, kind, device)
            return Outcome(outcome="up_to_date", kind=kind, version=active, reason=skipped, at=now)
        if kind in self.journal.state.health:
            return Outcome(
                outcome="waiting", kind=kind, version=active, reason="a health window is open", at=now
            )
        if device.pinned is None and version_key(wanted.release.version) < version_key(active):
            return Outcome(
                outcome="up_to_date", kind=kind, version=active, reason="newer than the release", at=now
            )
        return None

    def _take_and_activate(
        self, updater: Updater, listing: Listing, wanted: Wanted, running: bool
    ) -> tuple[Outcome, Activation | None]:
        try:
            validated = self._take(updater, wanted)
        except _Superseded as exc:
            return self._superseded(wanted, str(exc)), None
        except UpdateBusyError:  # as in check(): the journal's step is cleaned up by the next check
            raise
        except (UpdateError, RegistryUnavailableError) as exc:
            if isinstance(exc, ReleaseInvalidError):  # it would fail the same way next time
                digest = listing.fingerprints[wanted.target_path]
                invalid = Invalid(release=wanted.release.key, reason=str(exc), at=self.clock.time())
                self.journal.state.invalid[digest] = invalid
            return self._not_taken(wanted, exc), None
        kind = wanted.release.kind
        self._activate(kind, validated, running)
        outcome = Outcome(
            outcome="activated",
            kind=kind,
            version=wanted.release.version,
            reason=wanted.why,
            at=self.clock.time(),
        )
        self.journal.record(outcome)
        return outcome, Activation(kind, validated)

    def _not_taken(self, wanted: Wanted, exc: UpdateError | RegistryUnavailableError) -> Outcome:
        log.error("OTA: %s", exc)
        self.journal.state.step = None
        shutil.rmtree(self._workdir(wanted), ignore_errors=True)
        failed = "unavailable" if isinstance(exc, RegistryUnavailableError) else "rejected"
        release = wanted.release
        outcome = Outcome(
            outcome=failed, kind=release.kind, version=release.version, reason=str(exc), at=self.clock.time()
        )
        self.journal.record(outcome)
        return outcome

    def _superseded(self, wanted: Wanted, why: str) -> Outcome:
        log.warning("OTA: %s %s not activated: %s", wanted.release.kind, wanted.release.version, why)
        self.journal.state.step = None
        shutil.rmtree(self._workdir(wanted), ignore_errors=True)
        _, _, active = self.active(wanted.release.kind)
        self.journal.save()  # "waiting" is not journaled (journal.OUTCOMES); the step is over
        return Outcome(
            outcome="waiting", kind=wanted.release.kind, version=active, reason=why, at=self.clock.time()
        )

    def _skipped(self, listing: Listing, kind: str, device: Device) -> str:
        """Why releases of `kind` that failed validation here before are not downloaded again."""
        notes = []
        for path in sorted(device.invalid):
            release = listing.releases[path]
            if release.kind == kind:
                why = self.journal.state.invalid[listing.fingerprints[path]].reason
                notes.append(f"skipped {release.key}: it failed validation before on this device ({why})")
        return "; ".join(notes)

    def _workdir(self, wanted: Wanted) -> Path:
        return self.staging / f"{wanted.release.kind}-{wanted.release.version}"

    def _take(self, updater: Updater, wanted: Wanted) -> Validated:
        from device.ota.validate import INPUTS_FILE, validate  # noqa: PLC0415 - see the imports above

        release = wanted.release
        basis = self._basis(release.kind)
        self.journal.begin("download", release.kind, release.version)
        faults.checkpoint("download")
        workdir = self._workdir(wanted)
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir(parents=True)
        files = {"model": wanted.target_path, INPUTS_FILE: release.validation.inputs}
        if release.labels:
            files["labels"] = release.labels
        if release.cpu_twin:
            files["cpu_twin"] = release.cpu_twin
        with self._unlocked():
            local = {
                role: remote.download(
                    updater,
                    path,
                    workdir / (INPUTS_FILE if role == INPUTS_FILE else Path(path).name),
                    self.ota,
                )
                for role, path in files.items()
            }
        self.journal.begin("verify", release.kind, release.version)
        faults.checkpoint("verify")
        try:
            write_manifest(workdir, entries_for(release, local))
        except (ModelError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
            raise ReleaseInvalidError(f"{release.kind} release {release.key} refused: {exc}") from None
        with self._unlocked():
            validated = validate(release, workdir, self.factory, self.config.detector, self.config.embedder)
        if self.cancel.is_set():
            raise _Superseded("the daemon is stopping; the next check decides again")
        if self._basis(release.kind) != basis:
            raise _Superseded(
                f"the {release.kind}'s slots, pin or refusals changed during the check (an operator's "
                "rollback or pin, or a health-window verdict); the next check decides again"
            )
        self.journal.begin("stage", release.kind, release.version)
        faults.checkpoint("stage")
        self.slots.stage(release.kind, release.version, workdir)
        return validated

    def _activate(self, kind: str, validated: Validated, running: bool) -> None:
        version = validated.release.version
        self.journal.begin("activate", kind, version)
        faults.checkpoint("activate")
        previous = self.slots.current(kind)
        self.journal.state.health[kind] = Health(version=version, started=self.clock.time(), running=running)
        self.journal.save()
        self.slots.activate(kind, version)
        self.journal.end_step()
        log.info("OTA: %s %s activated (previous: %s)", kind, validated.release.key, previous or "bundled")

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
