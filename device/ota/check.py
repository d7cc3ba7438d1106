"""One update check, end to end: refresh the signed metadata, read the index, and for every kind choose,
download, validate, stage and activate (device.ota.engine holds the state it works on and the locks).

This is the only part of the engine that talks to the repository, so the only one that imports
python-tuf: `Engine.check` imports this module when a check runs, and a daemon starts without tuf.

The update lock is held for the whole check except over the network and a validation
(`Engine.unlocked`). What the check decided on (`_basis`: the slots, pin, refusals and health window of
the kind) is compared before it stages: if an operator's rollback or pin, or a health-window verdict,
changed it meanwhile, the check activates nothing (`_Superseded`) and the next check decides again.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from device.errors import (
    ModelError,
    RegistryUnavailableError,
    ReleaseInvalidError,
    UpdateBusyError,
    UpdateError,
)
from device.ota import faults, remote
from device.ota.engine import Activation, Engine
from device.ota.index import Listing, read_index
from device.ota.journal import Health, Invalid, Outcome
from device.ota.release import version_key
from device.ota.select import Blocked, Device, Wanted, choose
from device.ota.slots import entries_for, write_manifest

if TYPE_CHECKING:
    from tuf.ngclient import Updater

    from device.ota.validate import Validated

log = logging.getLogger(__name__)


class _Superseded(Exception):  # noqa: N818 (control flow inside the check, never raised out of it)
    """What a check decided on changed while it downloaded and validated: it activates nothing."""


class Check:
    """One check for every kind, run by `Engine.check`. `running`: the daemon runs the health window
    of what it activates right away."""

    def __init__(self, engine: Engine, running: bool) -> None:
        self.engine = engine
        self.running = running
        self.journal = engine.journal
        self.slots = engine.slots
        self.clock = engine.clock

    def run(self) -> tuple[list[Outcome], list[Activation]]:
        engine = self.engine
        outcomes: list[Outcome] = []
        activations: list[Activation] = []
        # The check lock fails at once (a check runs for minutes); the update lock is held for moments
        # (a rollback, a verdict, the daemon following a slot): wait them out, as everyone else does.
        with engine.checking(), engine.locked(engine.lock_wait_s):
            engine.recover()
            self.journal.begin_check()
            try:
                with engine.unlocked():
                    updater = self._refresh()
                    listing = read_index(updater, engine.staging, engine.ota.max_target_bytes)
            except UpdateBusyError:  # the lock was not taken back: postponed, and nothing may be written
                raise
            except (UpdateError, RegistryUnavailableError) as exc:
                # Recorded here, so `appliance ota status` shows it as the daemon's status does.
                failed = "unavailable" if isinstance(exc, RegistryUnavailableError) else "rejected"
                self.journal.record(Outcome(outcome=failed, reason=str(exc), at=self.clock.time()))
                raise
            outcomes.extend(self._bad_entries(listing))
            for kind in engine.ota.kinds:
                outcome, activation = self._check_kind(updater, listing, kind)
                outcomes.append(outcome)
                if activation is not None:
                    activations.append(activation)
            self.journal.save()
        return outcomes, activations

    def _refresh(self) -> Updater:
        engine = self.engine
        return remote.refresh(engine.ota, engine.root / "metadata", engine.staging, engine.progress)

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

    def _check_kind(self, updater: Updater, listing: Listing, kind: str) -> tuple[Outcome, Activation | None]:
        engine = self.engine
        _, model_id, active = engine.active(kind)
        releases = listing.releases
        halted = [
            r
            for r in releases.values()
            if r.kind == kind and r.model_id == model_id and r.version == active and r.halted
        ]
        if halted and self.slots.current(kind) is not None:
            return engine.rollback(kind, f"release {halted[0].key} was halted: {halted[0].halt_reason}"), None
        device = engine.device(kind, listing)
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
        return self._take_and_activate(updater, listing, wanted)

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
        self, updater: Updater, listing: Listing, wanted: Wanted
    ) -> tuple[Outcome, Activation | None]:
        try:
            validated = self._take(updater, wanted)
        except _Superseded as exc:
            return self._superseded(wanted, str(exc)), None
        except UpdateBusyError:  # as in run(): the journal's step is cleaned up by the next check
            raise
        except (UpdateError, RegistryUnavailableError) as exc:
            if isinstance(exc, ReleaseInvalidError):  # it would fail the same way next time
                digest = listing.fingerprints[wanted.target_path]
                invalid = Invalid(release=wanted.release.key, reason=str(exc), at=self.clock.time())
                self.journal.state.invalid[digest] = invalid
            return self._not_taken(wanted, exc), None
        kind = wanted.release.kind
        self._activate(kind, validated)
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
        _, _, active = self.engine.active(wanted.release.kind)
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
        return self.engine.staging / f"{wanted.release.kind}-{wanted.release.version}"

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

    def _take(self, updater: Updater, wanted: Wanted) -> Validated:
        # Validation imports LiteRT (with numpy and OpenCV): a check that finds nothing new needs none
        # of them (docs/benchmarks.md, "Model updates").
        from device.ota.validate import validate  # noqa: PLC0415

        engine = self.engine
        release = wanted.release
        basis = self._basis(release.kind)
        self.journal.begin("download", release.kind, release.version)
        faults.checkpoint("download")
        workdir = self._workdir(wanted)
        local = self._download(updater, wanted, workdir)
        self.journal.begin("verify", release.kind, release.version)
        faults.checkpoint("verify")
        try:
            write_manifest(workdir, entries_for(release, local))
        except (ModelError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
            raise ReleaseInvalidError(f"{release.kind} release {release.key} refused: {exc}") from None
        with engine.unlocked():
            validated = validate(
                release, workdir, engine.factory, engine.config.detector, engine.config.embedder
            )
        if engine.cancel.is_set():
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

    def _download(self, updater: Updater, wanted: Wanted, workdir: Path) -> dict[str, Path]:
        """The release's files into a fresh `workdir`, by role, with the update lock released."""
        from device.ota.validate import INPUTS_FILE  # noqa: PLC0415 (see _take)

        release = wanted.release
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir(parents=True)
        files = {"model": wanted.target_path, INPUTS_FILE: release.validation.inputs}
        if release.labels:
            files["labels"] = release.labels
        if release.cpu_twin:
            files["cpu_twin"] = release.cpu_twin
        with self.engine.unlocked():
            return {
                role: remote.download(
                    updater,
                    path,
                    workdir / (INPUTS_FILE if role == INPUTS_FILE else Path(path).name),
                    self.engine.ota,
                )
                for role, path in files.items()
            }

    def _activate(self, kind: str, validated: Validated) -> None:
        version = validated.release.version
        self.journal.begin("activate", kind, version)
        faults.checkpoint("activate")
        previous = self.slots.current(kind)
        self.journal.state.health[kind] = Health(
            version=version, started=self.clock.time(), running=self.running
        )
        self.journal.save()
        self.slots.activate(kind, version)
        self.journal.end_step()
        log.info("OTA: %s %s activated (previous: %s)", kind, validated.release.key, previous or "bundled")
