"""The updater's file locks (flock(2): they hold between processes and between threads alike, and die
with their process, so a kill -9 never leaves one behind).

- `<state_dir>/ota/check.lock`: one check at a time (checks share the staging folder);
- `<state_dir>/ota/lock`: one writer of the slots and the journal at a time, held for milliseconds.
"""

from __future__ import annotations

import fcntl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from device.errors import UpdateBusyError

WAIT_S = 10.0  # the update lock is held for milliseconds (a fsync, a model load at most)
POLL_S = 0.02  # flock has no timeout: a bounded wait tries again this often


class FileLock:
    def __init__(self, path: Path, busy: str) -> None:
        self.path = path
        self.busy = busy  # what UpdateBusyError says
        self._mine = threading.local()  # the lock file this thread holds, for `released`

    @contextmanager
    def held(self, wait_s: float = 0.0) -> Iterator[None]:
        """Hold the lock, waiting up to `wait_s` for it; UpdateBusyError if it stays busy."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("w") as handle:
            self._take(handle, wait_s)
            self._mine.handle = handle
            try:
                yield
            finally:
                self._mine.handle = None

    @contextmanager
    def released(self, wait_s: float = WAIT_S) -> Iterator[None]:
        """Inside `held()`: let go for a while (a download), then take it back, waiting up to `wait_s`;
        UpdateBusyError if it stays busy (the caller then holds nothing)."""
        handle: IO[str] = self._mine.handle
        fcntl.flock(handle, fcntl.LOCK_UN)
        try:
            yield
        finally:
            self._take(handle, wait_s)

    def _take(self, handle: IO[str], wait_s: float) -> None:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise UpdateBusyError(f"{self.busy}; try again shortly") from None
                time.sleep(POLL_S)
