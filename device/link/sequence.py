"""The sequence-number floor: a backstop that keeps seq from ever repeating, even if the outbox
database is lost.

The outbox assigns seq inside the same transaction that stores the message, so in normal operation
seq is gap-free across restarts and crashes. If the database itself has to be quarantined (corrupt,
truncated), its counter goes with it; this small file then says where to continue. Blocks of numbers
are reserved here (written, fsynced, renamed) before the outbox hands any of them out, so one fsync
covers BLOCK messages: after a quarantine the numbering resumes above the reservation, with a visible
gap but never a repeat, which subscribers' deduplication relies on.

The file also holds the device's sequence *epoch*: 16 random hex digits drawn when the file is created.
Numbering can only start again at 1 when this file is gone too (a wiped state folder, a re-flashed
card), and then the epoch is new as well, so subscribers start a new window for the device instead of
dropping its messages as repeats (device/dedupe.py; the epoch travels as an MQTT v5 user property).

File format: one line, "<reserved ceiling> <epoch>" (older files hold the ceiling alone).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from pathlib import Path

# One fsync per this many messages: at a few messages per second, one disk write every few minutes.
BLOCK = 1000


class SeqFloor:
    def __init__(self, path: Path, block: int = BLOCK) -> None:
        self.path = path
        self.block = block
        self.reserved, epoch = self._load()
        self.epoch = epoch or secrets.token_hex(8)
        if epoch is None:
            # A new device, an older file, or an unreadable one: record the new epoch now, before any
            # message (stored ones included) goes out under it. A full disk is retried at the next
            # reservation, where the outbox counts it.
            with contextlib.suppress(OSError):
                self._reserve(self.reserved)

    def _load(self) -> tuple[int, str | None]:
        try:
            text = self.path.read_text(encoding="ascii").strip()
        except FileNotFoundError:
            return 1, None
        except (OSError, UnicodeDecodeError):
            text = ""
        ceiling, _, epoch = text.partition(" ")
        if not ceiling.isdigit():
            # Unreadable: continuing at 1 could repeat numbers. Jump past any plausible earlier value,
            # using the clock (ms since the epoch grows faster than any device publishes).
            return int(time.time() * 1000), None
        return int(ceiling), epoch if _is_epoch(epoch) else None

    def allow(self, seq: int) -> None:
        """Make sure `seq` is below the reserved ceiling before it is handed out."""
        if seq >= self.reserved:
            self._reserve(seq + self.block)

    def _reserve(self, high: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        with tmp.open("w", encoding="ascii") as handle:
            handle.write(f"{high} {self.epoch}\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path)
        directory = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
        self.reserved = high


def _is_epoch(text: str) -> bool:
    return len(text) == 16 and all(c in "0123456789abcdef" for c in text)
