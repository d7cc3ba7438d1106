"""The sequence-number floor: a backstop that keeps seq from ever repeating, even if the outbox
database is lost.

The outbox assigns seq inside the same transaction that stores the message, so in normal operation
seq is gap-free across restarts and crashes. If the database itself has to be quarantined (corrupt,
truncated), its counter goes with it; this small file then says where to continue. Blocks of numbers
are reserved here (written, fsynced, renamed) before the outbox hands any of them out, so one fsync
covers BLOCK messages: after a quarantine the numbering resumes above the reservation, with a visible
gap but never a repeat, which subscribers' deduplication relies on.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

# One fsync per this many messages: at a few messages per second, one disk write every few minutes.
BLOCK = 1000


class SeqFloor:
    def __init__(self, path: Path, block: int = BLOCK) -> None:
        self.path = path
        self.block = block
        self.reserved = self._load()

    def _load(self) -> int:
        try:
            text = self.path.read_text(encoding="ascii").strip()
        except FileNotFoundError:
            return 1
        except OSError:
            text = ""
        if not text.isdigit():
            # Unreadable: continuing at 1 could repeat numbers. Jump past any plausible earlier value,
            # using the clock (ms since the epoch grows faster than any device publishes).
            return int(time.time() * 1000)
        return int(text)

    def allow(self, seq: int) -> None:
        """Make sure `seq` is below the reserved ceiling before it is handed out."""
        if seq >= self.reserved:
            self._reserve(seq + self.block)

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
        self.reserved = high
