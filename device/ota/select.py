"""Which release, if any, a device should run for one kind of model."""

from __future__ import annotations

from dataclasses import dataclass

from device.ota.cohort import in_cohort
from device.ota.release import ReleaseInfo, version_key


@dataclass(frozen=True)
class Wanted:
    release: ReleaseInfo
    target_path: str
    why: str


@dataclass(frozen=True)
class Blocked:
    """The operator's pin names a release this device must not take; `reason` says why and what to do."""

    reason: str


@dataclass(frozen=True)
class Device:
    device_id: str
    channel: str
    firmware: str
    pinned: str | None = None  # operator's pin: exactly this version
    refused: frozenset[str] = frozenset()  # release keys this device rolled back from
    invalid: frozenset[str] = frozenset()  # target paths whose signed files failed validation here


def eligible(release: ReleaseInfo, device: Device) -> str | None:
    """None if the device may take the release, else why not."""
    if release.key in device.refused:
        return "rolled back from on this device"
    if release.halted:
        return f"halted ({release.halt_reason or 'no reason given'})"
    percent = release.channels.get(device.channel)
    if percent is None:
        return f"not on channel {device.channel}"
    if version_key(release.min_firmware) > version_key(device.firmware):
        return f"needs firmware {release.min_firmware} (this is {device.firmware})"
    if not in_cohort(device.device_id, release.key, percent):
        return f"outside the {percent}% cohort"
    return None


def choose(releases: dict[str, ReleaseInfo], kind: str, device: Device) -> Wanted | Blocked | None:
    """The newest eligible release of `kind`, or the pinned version: an operator's pin skips the channel,
    the cohort and this device's own earlier rollback from it, never a halt, the firmware it needs, or a
    validation this device already saw it fail."""
    ofkind = {path: r for path, r in releases.items() if r.kind == kind}
    if device.pinned is not None:
        return _pinned(ofkind, device, device.pinned)
    best: tuple[str, ReleaseInfo] | None = None
    for path, release in ofkind.items():
        if (
            path not in device.invalid
            and eligible(release, device) is None
            and (best is None or version_key(release.version) > version_key(best[1].version))
        ):
            best = (path, release)
    if best is None:
        return None
    return Wanted(best[1], best[0], f"channel {device.channel}, {best[1].channels[device.channel]}%")


def _pinned(ofkind: dict[str, ReleaseInfo], device: Device, version: str) -> Wanted | Blocked | None:
    # Two models of one kind may share a version (a pin names only the version): a halted one last.
    found = sorted(((p, r) for p, r in ofkind.items() if r.version == version), key=lambda pr: pr[1].halted)
    if not found:
        return None
    path, release = found[0]
    if release.halted:
        return Blocked(f"pinned release {release.key} is halted ({release.halt_reason or 'no reason given'})")
    if version_key(release.min_firmware) > version_key(device.firmware):
        return Blocked(
            f"pinned release {release.key} needs firmware {release.min_firmware} (this is "
            f"{device.firmware}); not taken: update the firmware or clear the pin"
        )
    if path in device.invalid:
        return Blocked(
            f"pinned release {release.key} failed validation on this device before; not taken until the "
            "repository publishes it again"
        )
    return Wanted(release, path, f"pinned to {version}")
