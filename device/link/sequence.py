"""Device sequence numbers that never repeat, even across restarts and power cuts.

Blocks of numbers are reserved on disk (written, fsynced, renamed) before any of them is used, so one
fsync covers BLOCK messages. After a crash the next run starts above the last reservation: the
numbers skipped then are a visible gap, never a repeat, which subscribers' deduplication relies on.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from device.errors import ApplianceError

# One fsync per this many messages: at a few messages per second, one disk write every few minutes.
BLOCK = 1000


class SequenceCounter:
    def __init__(self, path: Path, block: int = BLOCK) -> None:
        self.path = path
        self.block = block
        self._lock = threading.Lock()
        self._next = self._load()
        self._reserved = self._next

    def _load(self) -> int:
        try:
            text = self.path.read_text(encoding="ascii").strip()
        except FileNotFoundError:
            return 1
        except OSError as exc:
            raise ApplianceError(f"sequence file {self.path} cannot be read: {exc.strerror}") from None
        if not text.isdigit():
            # Unreadable state must not restart numbering at 1 (that would repeat numbers). Start past
            # any plausible earlier value, from the clock.
            return int(time.time() * 1000)
        return int(text)

    def next(self) -> int:
        with self._lock:
            if self._next >= self._reserved:
                self._reserve(self._next + self.block)
            value = self._next
            self._next += 1
            return value

    def _reserve(self, high: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        with tmp.open("w", encoding="ascii") as handle:
            handle.write(f"{high}\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path)
        directory = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
        self._reserved = high
