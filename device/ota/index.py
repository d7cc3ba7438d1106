"""The release index: a signed target, `index.json`, that lists the release targets.

ngclient looks targets up by path and has no public way to list them, so the release tool keeps this
list; it is a TUF target like any other, so it is verified (hash, length, signatures) like one.

Everything in it is checked here, at the edge: an index that is not `{"releases": [paths]}` is refused
whole (UpdateError); an entry that is not a well-formed release is a problem of its own, named and
skipped, and the other entries are still read. A signed mistake in one release never blocks another.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, ValidationError
from tuf.api import exceptions as tuf_errors

from device import __version__
from device.errors import RegistryUnavailableError, UpdateError
from device.kinds import MODEL_KINDS
from device.ota.release import CUSTOM_KEY, ReleaseInfo, one_line, parse_release

if TYPE_CHECKING:
    # Only for annotations: ngclient and tuf's metadata classes (with securesystemslib) are loaded by
    # the check that makes the updater, not by whoever only needs INDEX or Listing.
    from tuf.api.metadata import TargetFile
    from tuf.ngclient import Updater

log = logging.getLogger(__name__)

INDEX = "index.json"


class _IndexFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
    releases: list[str]


@dataclass(frozen=True)
class Problem:
    """An index entry that is not a release a device can take; kind and version are what it claims."""

    reason: str
    kind: str = ""
    version: str = ""


@dataclass
class Listing:
    releases: dict[str, ReleaseInfo] = field(default_factory=dict)  # target path -> release
    # Target path -> a digest of every signed file of the release (and this firmware's version): what
    # a device that refused the release remembers, so that it retries only when one of them changes.
    fingerprints: dict[str, str] = field(default_factory=dict)
    problems: dict[str, Problem] = field(default_factory=dict)  # digest of the bad entry -> problem


def read_index(updater: Updater, staging: Path, max_bytes: int) -> Listing:
    """Every well-formed release the index lists, and the entries that are not."""
    listing = Listing()
    info = updater.get_targetinfo(INDEX)
    if info is None:
        return listing
    if info.length > max_bytes:
        raise UpdateError(f"{INDEX} is {info.length} bytes, over ota.max_target_bytes")
    for path in _paths(updater, info, staging / INDEX):
        target = updater.get_targetinfo(path)
        try:
            if target is None:
                raise UpdateError(f"{INDEX} lists {path!r}, which the signed targets metadata does not hold")
            release = parse_release(path, target.custom)
        except UpdateError as exc:
            signed = "missing" if target is None else json.dumps(target.to_dict(), sort_keys=True)
            digest = _digest(path, signed)
            listing.problems[digest] = Problem(str(exc), *_claimed(None if target is None else target.custom))
            continue
        listing.releases[path] = release
        listing.fingerprints[path] = _fingerprint(updater, path, release)
    return listing


def _paths(updater: Updater, info: TargetFile, local: Path) -> list[str]:
    try:
        updater.download_target(info, str(local))
    except tuf_errors.DownloadLengthMismatchError as exc:
        raise UpdateError(f"{INDEX} is longer than its signed length; refused: {exc}") from None
    except tuf_errors.DownloadError as exc:
        raise RegistryUnavailableError(f"cannot download {INDEX}: {exc}") from None
    except tuf_errors.RepositoryError as exc:
        raise UpdateError(f"{INDEX} does not match its signed hash: {exc}") from None
    try:
        parsed = _IndexFile.model_validate_json(local.read_bytes())
    except ValidationError as exc:
        raise UpdateError(
            f'{INDEX} is malformed ({one_line(exc)}): it must be {{"releases": [paths]}}'
        ) from None
    return list(dict.fromkeys(parsed.releases))  # in order, each once


def _fingerprint(updater: Updater, path: str, release: ReleaseInfo) -> str:
    paths = [path, release.validation.inputs, release.labels, release.cpu_twin]
    signed = {}
    for one in filter(None, paths):
        target = updater.get_targetinfo(one)
        signed[one] = None if target is None else target.to_dict()
    return _digest(__version__, json.dumps(signed, sort_keys=True))


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def _claimed(custom: object) -> tuple[str, str]:
    """The kind and version a malformed entry claims, when it says, to name it in outcomes."""
    try:
        raw = json.loads(custom[CUSTOM_KEY]) if isinstance(custom, dict) else None
    except (TypeError, ValueError):
        return "", ""
    if not isinstance(raw, dict):
        return "", ""
    kind, version = raw.get("kind"), raw.get("version")
    kind = kind if kind in MODEL_KINDS else ""
    return kind, version if isinstance(version, str) and len(version) <= 32 else ""
