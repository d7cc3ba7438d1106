"""Downloads for python-tuf's ngclient that resume after an interruption, are capped in size and time,
and leave every kept-alive connection clean.

ngclient does all the verifying (signatures, expiry, versions, each target's length and hashes); this
only moves bytes. Target files go to `<staging>/<name>.part` and continue from where they stopped with
an HTTP Range request (a server that ignores Range simply sends the whole file again). A part file that
turns out bad is deleted, so a corrupt prefix is never resumed twice. Metadata is small and always
fetched whole, into memory.

Time: a per-read timeout alone lets a server that sends one byte every half second hold a check for
ever, so every request of a check also runs under the check's `Budget` (an overall deadline and a
minimum transfer rate). A watchdog thread enforces it by shutting the request's socket down, which ends
a blocked read at once wherever it is: in the status line, the headers or the body, and for metadata
(ngclient's reads) as much as for targets. The request then fails with SlowRepositoryError.

Connections: a response whose body is not read to its end must not go back to the pool, or the rest of
its body is read as the next response's status line (BadStatusLine) on the kept-alive connection. A
small error body (a 404 or 416) is read to its end; anything else closes the connection.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import urllib3
from tuf.api import exceptions
from tuf.ngclient import FetcherInterface
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]  # (name, bytes so far, total)
CHUNK = 64 * 1024
DRAIN_MAX = 64 * 1024  # an error body up to this long is read so its connection can be reused
TICK_S = 0.25  # how often the watchdog looks; a cut comes at most this late


class SlowRepositoryError(exceptions.DownloadError):
    """The check's deadline or its minimum transfer rate cut a request off. A DownloadError, so a part
    file keeps what arrived and the next check resumes it."""


@dataclass(frozen=True)
class Limits:
    deadline_s: float  # the whole check, from its first request
    min_rate: int  # bytes per second, averaged over `window_s`; 0: no floor
    window_s: float


class Budget:
    """One check's time: every request of the check runs under `watch()`, which cuts it off (shuts its
    socket down) once the check is past its deadline or once the request has moved fewer than
    `min_rate * window_s` body bytes in the last `window_s` seconds. A cut is final: every later
    request of the check fails at once."""

    def __init__(self, limits: Limits, repository: str) -> None:
        self.limits = limits
        self.repository = repository
        self.started = time.monotonic()
        self.received = 0  # body bytes over the whole check
        self.cut: str | None = None
        self.sockets: list[socket.socket] = []  # every connection the check opened (`track`)
        self._lock = threading.Lock()

    def count(self, n: int) -> None:
        self.received += n

    def check(self) -> None:
        if self.cut is None and time.monotonic() - self.started >= self.limits.deadline_s:
            self._cut_off(self.received, time.monotonic() - self.started, self._over_deadline())
        if self.cut is not None:
            raise SlowRepositoryError(self.cut)

    @contextlib.contextmanager
    def watch(self) -> Iterator[None]:
        """Run one request under the budget's watchdog; SlowRepositoryError if it cut the request."""
        self.check()
        done = threading.Event()
        watchdog = threading.Thread(target=self._watch, args=(done,), name="ota-watchdog", daemon=True)
        watchdog.start()
        try:
            yield
        except (urllib3.exceptions.HTTPError, OSError, exceptions.DownloadError) as exc:
            if self.cut is not None:  # the error is the watchdog's shutdown: say why it came
                raise SlowRepositoryError(self.cut) from exc
            raise
        finally:
            done.set()
            watchdog.join()
        self.check()  # a cut that came after the last read still ends the check

    def _watch(self, done: threading.Event) -> None:
        start = time.monotonic()
        samples: deque[tuple[float, int]] = deque([(start, self.received)])
        window, floor = self.limits.window_s, self.limits.min_rate * self.limits.window_s
        while not done.wait(TICK_S):
            now = time.monotonic()
            if now - self.started >= self.limits.deadline_s:
                self._cut_off(self.received, now - self.started, self._over_deadline())
                return
            samples.append((now, self.received))
            while len(samples) > 1 and samples[1][0] <= now - window:
                samples.popleft()  # keeps the newest sample at least a window old as the baseline
            since, then = samples[0]
            moved = self.received - then
            if floor and now - since >= window and moved < floor:
                why = f"under ota.min_rate_bytes_per_s ({self.limits.min_rate} bytes/s over {window:g} s)"
                self._cut_off(moved, now - since, why)
                return

    def _over_deadline(self) -> str:
        return f"over the check's deadline (ota.check_deadline_s = {self.limits.deadline_s:g} s)"

    def _cut_off(self, moved: int, seconds: float, why: str) -> None:
        with self._lock:
            if self.cut is not None:
                return
            self.cut = (
                f"the repository at {self.repository} was too slow: {moved} bytes in {seconds:.1f} s, "
                f"{why}; the check stopped and the next one resumes any partial download"
            )
            for sock in self.sockets:
                _shut(sock)

    def track(self, sock: socket.socket) -> None:
        """A new connection's socket, cut at once if the check already was."""
        with self._lock:
            self.sockets.append(sock)
            if self.cut is not None:
                _shut(sock)


def _shut(sock: socket.socket) -> None:
    """End every read on `sock` now (they see EOF). socket.socket's own shutdown, also for TLS:
    SSLSocket.shutdown would unwrap the TLS object under the reading thread's feet."""
    with contextlib.suppress(OSError):  # already closed: nothing to cut
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


def _pool_manager(budget: Budget, user_agent: str) -> urllib3.PoolManager:
    """urllib3's pool manager, with connections that hand their sockets to `budget` for cutting once
    connected (for TLS, after the handshake: a handshake is bounded by timeout_s per read only)."""

    class Connection(HTTPConnection):
        def connect(self) -> None:
            super().connect()
            budget.track(self.sock)

    class TlsConnection(HTTPSConnection):
        def connect(self) -> None:
            super().connect()
            budget.track(self.sock)

    class Pool(HTTPConnectionPool):
        ConnectionCls = Connection

    class TlsPool(HTTPSConnectionPool):
        ConnectionCls = TlsConnection

    manager = urllib3.PoolManager(headers={"User-Agent": user_agent}, retries=False)
    manager.pool_classes_by_scheme = {"http": Pool, "https": TlsPool}
    return manager


def _finish(response: urllib3.BaseHTTPResponse, complete: bool) -> None:
    """Back to the pool only if the body was read to its end; otherwise close the connection."""
    if not complete:
        response.close()
    response.release_conn()


def _discard(response: urllib3.BaseHTTPResponse) -> None:
    """An error response's body: a small one is drained (urllib3's drain_conn: read and discard; it
    closes the connection itself if the read fails), so the connection is clean for the next request;
    one without a length or over DRAIN_MAX is never read, its connection is closed."""
    remaining = response.length_remaining if isinstance(response, urllib3.HTTPResponse) else None
    if remaining is not None and remaining <= DRAIN_MAX:
        response.drain_conn()
        _finish(response, complete=True)
    else:
        _finish(response, complete=False)


def _read(response: urllib3.BaseHTTPResponse, budget: Budget) -> Iterator[bytes]:
    """The body as it arrives (read1: a slow link's bytes count for the rate floor at once)."""
    while chunk := response.read1(CHUNK):
        budget.count(len(chunk))
        yield chunk


class ResumingFetcher(FetcherInterface):
    def __init__(
        self,
        staging: Path,
        targets_url: str,
        timeout_s: float,
        user_agent: str,
        *,
        budget: Budget,
        progress: Progress | None = None,
    ) -> None:
        self.staging = staging
        self.targets_url = targets_url
        self.progress = progress
        self.budget = budget
        self._timeout = urllib3.Timeout(connect=timeout_s, read=timeout_s)
        self._http = _pool_manager(budget, user_agent)

    def _fetch(self, url: str) -> Iterator[bytes]:
        """Metadata: small, fetched whole (download_file below handles targets)."""
        with self.budget.watch():
            response = self._request(url, {})
            complete = False
            try:
                yield from _read(response, self.budget)
                complete = True
            except urllib3.exceptions.HTTPError as exc:
                if self.budget.cut is not None:
                    raise
                raise exceptions.DownloadError(f"download of {url} broke off: {exc}") from exc
            finally:  # also when ngclient stops reading early (too long): never back to the pool dirty
                _finish(response, complete)

    def _request(self, url: str, headers: dict[str, str]) -> urllib3.BaseHTTPResponse:
        try:
            response = self._http.request(
                "GET", url, headers=headers, preload_content=False, timeout=self._timeout
            )
        except urllib3.exceptions.HTTPError as exc:
            if self.budget.cut is not None:
                raise
            raise exceptions.DownloadError(f"cannot reach {url}: {exc}") from exc
        if response.status >= 400 and response.status != 416:
            _discard(response)
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
            with self.budget.watch():
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
            _discard(response)
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
        complete = False
        try:
            for chunk in _read(response, self.budget):
                have += len(chunk)
                if have > max_length:
                    raise exceptions.DownloadLengthMismatchError(
                        f"{name} is longer than the {max_length} bytes its metadata gives"
                    )
                out.write(chunk)
                if self.progress is not None:
                    self.progress(name, have, max_length)
            complete = True
        except urllib3.exceptions.HTTPError as exc:
            if self.budget.cut is not None:
                raise
            raise exceptions.DownloadError(f"download of {url} broke off at byte {have}: {exc}") from exc
        finally:  # a length overrun or a full disk leaves the body unread: close, never reuse
            _finish(response, complete)
