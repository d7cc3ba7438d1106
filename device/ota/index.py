"""The release index: a signed target, `index.json`, that lists the release targets.

ngclient looks targets up by path and has no public way to list them, so the release tool keeps this
list; it is a TUF target like any other, so it is verified (hash, length, signatures) like one.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from tuf.api import exceptions as tuf_errors
from tuf.ngclient import Updater

from device.errors import RegistryUnavailableError, UpdateError
from device.ota.release import ReleaseInfo, parse_release

log = logging.getLogger(__name__)

INDEX = "index.json"


def read_index(updater: Updater, staging: Path, max_bytes: int) -> tuple[dict[str, ReleaseInfo], list[str]]:
    """Target path -> release for every well-formed release the index lists, and why others were refused."""
    info = updater.get_targetinfo(INDEX)
    if info is None:
        return {}, []
    if info.length > max_bytes:
        raise UpdateError(f"{INDEX} is {info.length} bytes, over ota.max_target_bytes")
    local = staging / INDEX
    try:
        updater.download_target(info, str(local))
        paths = json.loads(local.read_bytes())["releases"]
    except tuf_errors.DownloadError as exc:
        raise RegistryUnavailableError(f"cannot download {INDEX}: {exc}") from None
    except tuf_errors.RepositoryError as exc:
        raise UpdateError(f"{INDEX} does not match its signed hash: {exc}") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise UpdateError(f"{INDEX} is malformed: {exc}") from None
    releases: dict[str, ReleaseInfo] = {}
    problems: list[str] = []
    for path in paths:
        target = updater.get_targetinfo(str(path))
        try:
            if target is None:
                raise UpdateError(f"{INDEX} lists {path!r}, which the signed targets metadata does not hold")
            release = parse_release(str(path), target.custom)
        except UpdateError as exc:
            log.error("OTA: %s", exc)
            problems.append(str(exc))
            continue
        if release is not None:
            releases[str(path)] = release
    return releases, problems
