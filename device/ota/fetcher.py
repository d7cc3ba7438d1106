"""Downloads for python-tuf's ngclient that resume after an interruption and are capped in size.

ngclient does all the verifying (signatures, expiry, versions, each target's length and hashes); this
only moves bytes. Target files go to `<staging>/<name>.part` and continue from where they stopped with
an HTTP Range request (a server that ignores Range simply sends the whole file again). A part file that
turns out bad is deleted, so a corrupt prefix is never resumed twice. Metadata is small and always
fetched whole, into memory.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import urllib3
from tuf.api import exceptions
from tuf.ngclient import FetcherInterface

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]  # (name, bytes so far, total)
CHUNK = 64 * 1024


class ResumingFetcher(FetcherInterface):
    def __init__(
        self,
        staging: Path,
        targets_url: str,
        timeout_s: float,
        user_agent: str,
        progress: Progress | None = None,
    ) -> None:
        self.staging = staging
        self.targets_url = targets_url
        self.progress = progress
        self._timeout = urllib3.Timeout(connect=timeout_s, read=timeout_s)
        self._http = urllib3.PoolManager(headers={"User-Agent": user_agent}, retries=False)

    def _fetch(self, url: str) -> Iterator[bytes]:
        """Metadata: small, fetched whole (download_file below handles targets)."""
        response = self._request(url, {})
        try:
            yield from response.stream(CHUNK)
        except urllib3.exceptions.HTTPError as exc:
            raise exceptions.DownloadError(f"download of {url} broke off: {exc}") from exc
        finally:
            response.release_conn()

    def _request(self, url: str, headers: dict[str, str]) -> urllib3.BaseHTTPResponse:
        try:
            response = self._http.request(
                "GET", url, headers=headers, preload_content=False, timeout=self._timeout
            )
        except urllib3.exceptions.HTTPError as exc:
            raise exceptions.DownloadError(f"cannot reach {url}: {exc}") from exc
        if response.status >= 400 and response.status != 416:
            response.release_conn()
            raise exceptions.DownloadHTTPError(f"HTTP {response.status} for {url}", response.status)
        return response

    @contextlib.contextmanager
    def download_file(self, url: str, max_length: int) -> Iterator[IO[bytes]]:
        if not url.startswith(self.targets_url):
            with super().download_file(url, max_length) as handle:
                yield handle
            return
        part = self.part_path(url)
        try:
            self._download_part(url, part, max_length)
            with part.open("rb") as handle:
                yield handle  # ngclient checks length and hashes, then copies it out
        except exceptions.DownloadError as exc:
            # A network failure keeps what arrived, to resume next time; too many bytes are bad bytes.
            if isinstance(exc, exceptions.DownloadLengthMismatchError):
                part.unlink(missing_ok=True)
            raise
        except BaseException:  # a hash mismatch, a full disk: nothing here is worth resuming
            part.unlink(missing_ok=True)
            raise
        part.unlink(missing_ok=True)

    def part_path(self, url: str) -> Path:
        name = url.rsplit("/", 1)[-1][-80:]
        return self.staging / f"{hashlib.sha256(url.encode()).hexdigest()[:16]}-{name}.part"

    def _download_part(self, url: str, part: Path, max_length: int) -> None:
        self.staging.mkdir(parents=True, exist_ok=True)
        have = part.stat().st_size if part.exists() else 0
        if have > max_length:
            part.unlink()
            have = 0
        response = self._request(url, {"Range": f"bytes={have}-"} if have else {})
        if response.status == 416:  # what we have is already the whole file (or junk): start over
            response.release_conn()
            part.unlink(missing_ok=True)
            return self._download_part(url, part, max_length) if have else None
        if have and response.status == 206:
            log.info("resuming %s at byte %d", url, have)
        else:
            have = 0  # 200: the server sent the whole file
        with part.open("r+b" if have else "wb") as out:
            out.seek(have)
            self._copy(response, out, url, have, max_length)
            out.flush()
            os.fsync(out.fileno())
        return None

    def _copy(
        self, response: urllib3.BaseHTTPResponse, out: IO[bytes], url: str, have: int, max_length: int
    ) -> None:
        name = url.rsplit("/", 1)[-1]
        try:
            for chunk in response.stream(CHUNK):
                have += len(chunk)
                if have > max_length:
                    raise exceptions.DownloadLengthMismatchError(
                        f"{name} is longer than the {max_length} bytes its metadata gives"
                    )
                out.write(chunk)
                if self.progress is not None:
                    self.progress(name, have, max_length)
        except urllib3.exceptions.HTTPError as exc:
            raise exceptions.DownloadError(f"download of {url} broke off at byte {have}: {exc}") from exc
        finally:
            response.release_conn()
