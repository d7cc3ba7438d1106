"""The model repository as a device sees it: python-tuf's ngclient over the resumable fetcher.

ngclient verifies everything (the chain from the trusted root, signatures, expiry, versions, each
target's length and hashes); this module only sets it up and turns its errors into ours: a repository
that cannot be reached is RegistryUnavailableError (retry later), anything it serves that fails
verification is UpdateError (refused). A repository too slow for the check's budget (ota.check_deadline_s,
ota.min_rate_bytes_per_s) is unusable as much as one that cannot be reached: RegistryUnavailableError,
with what it sent in how long.
"""

from __future__ import annotations

import errno
from pathlib import Path

from tuf.api import exceptions as tuf_errors
from tuf.ngclient import Updater, UpdaterConfig

from device import __version__
from device.config import OtaConfig
from device.errors import RegistryUnavailableError, UpdateError
from device.ota.fetcher import Budget, Limits, Progress, ResumingFetcher, SlowRepositoryError

USER_AGENT = f"appliance/{__version__}"


def refresh(ota: OtaConfig, metadata: Path, staging: Path, progress: Progress | None) -> Updater:
    """An updater with fresh, verified top-level metadata. The first run starts from the trusted root
    installed at provisioning; later runs from the newest root ngclient has verified since."""
    metadata.mkdir(parents=True, exist_ok=True)
    bootstrap = None
    if not (metadata / "root.json").exists():
        if ota.trusted_root is None:
            raise UpdateError("ota.trusted_root is not set: install the repository's root.json first")
        try:
            bootstrap = ota.trusted_root.read_bytes()
        except OSError as exc:
            raise UpdateError(f"trusted root {ota.trusted_root} is unreadable: {exc.strerror}") from None
    base = ota.repository_url.rstrip("/")
    limits = Limits(ota.check_deadline_s, ota.min_rate_bytes_per_s, ota.rate_window_s)
    budget = Budget(limits, base)  # one per check: the deadline runs from here to the last download
    fetcher = ResumingFetcher(
        staging, f"{base}/targets/", ota.timeout_s, USER_AGENT, budget=budget, progress=progress
    )
    try:
        updater = Updater(
            str(metadata),
            f"{base}/metadata/",
            str(staging),
            f"{base}/targets/",
            fetcher,
            UpdaterConfig(app_user_agent=USER_AGENT),
            bootstrap=bootstrap,
        )
        updater.refresh()
    except SlowRepositoryError as exc:
        raise RegistryUnavailableError(str(exc)) from None
    except tuf_errors.DownloadLengthMismatchError as exc:
        # More metadata than a device accepts is a broken or hostile server, not a network problem.
        raise UpdateError(
            f"repository metadata refused: a file is longer than a device accepts ({exc})"
        ) from None
    except tuf_errors.DownloadError as exc:
        raise RegistryUnavailableError(f"model repository {base} is unreachable: {exc}") from None
    except (tuf_errors.RepositoryError, ValueError) as exc:
        raise UpdateError(f"repository metadata refused ({type(exc).__name__}): {exc}") from None
    return updater


def download(updater: Updater, path: str, local: Path, ota: OtaConfig) -> Path:
    """One signed target to `local`, refused before a byte moves when it is over the size cap."""
    info = updater.get_targetinfo(path)
    if info is None:
        raise UpdateError(f"target {path!r} is not in the signed targets metadata")
    if info.length > ota.max_target_bytes:
        raise UpdateError(
            f"target {path!r} is {info.length} bytes, over ota.max_target_bytes "
            f"({ota.max_target_bytes}); refused before downloading"
        )
    try:
        updater.download_target(info, str(local))
    except tuf_errors.LengthOrHashMismatchError as exc:
        raise UpdateError(f"target {path!r} does not match its signed hash and length: {exc}") from None
    except SlowRepositoryError as exc:
        raise RegistryUnavailableError(str(exc)) from None
    except tuf_errors.DownloadLengthMismatchError as exc:  # the fetcher deleted what arrived
        raise UpdateError(f"target {path!r} refused and deleted: {exc}") from None
    except tuf_errors.DownloadError as exc:  # the network: what arrived is kept
        raise RegistryUnavailableError(
            f"download of {path!r} broke off, will resume at the next check: {exc}"
        ) from None
    except OSError as exc:
        why = "the disk is full" if exc.errno == errno.ENOSPC else exc.strerror
        raise UpdateError(f"download of {path!r} aborted and removed: {why}") from None
    return local
