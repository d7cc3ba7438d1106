"""The outbox: object messages on disk (SQLite, WAL) between the pipeline and the MQTT link.

A message counts as produced only once it is committed here, and it is deleted only when the broker
acknowledges it (PUBACK). Its seq is assigned in the same transaction that stores it, so seq never
repeats and has no gaps, across reconnects, restarts and kill -9. See docs/outbox.md for the
durability of each `synchronous` setting, the bounds, and what happens when the disk is full or the
file is corrupt.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from device.clock import Clock
from device.config import OutboxConfig
from device.link.outbox_store import open_store, quarantine
from device.link.sequence import SeqFloor
from device.metrics import Percentiles
from device.wire import ObjectMessage, encode

log = logging.getLogger(__name__)

# Errors that mean the file itself is broken (as opposed to a full disk or a busy lock).
CORRUPT_MARKERS = ("malformed", "not a database", "file is encrypted", "disk image")


@dataclass(frozen=True)
class OutboxStats:
    depth: int
    bytes: int
    oldest_age_s: float
    drops: dict[str, int]  # by reason: oldest_evicted, full, expired, disk_full, corrupt
    enqueue_p99_ms: float | None
    quarantined: list[str]
    last_error: str


@dataclass(frozen=True)
class Pending:
    seq: int
    payload: bytes


class Outbox:
    def __init__(self, path: Path, config: OutboxConfig, clock: Clock) -> None:
        self.path = path
        self.config = config
        self.clock = clock
        self.floor = SeqFloor(path.with_name(path.name + ".seq-floor"))
        self.drops: Counter[str] = Counter()
        self.quarantined: list[str] = []
        self.last_error = ""
        self.enqueue_ms = Percentiles()
        self._lock = threading.Lock()
        self._db = self._open()
        self._count, self._bytes = self._totals()

    # -- opening and recovery ----------------------------------------------------------------------
    def _open(self) -> sqlite3.Connection:
        try:
            return open_store(self.path, self.config.synchronous)
        except sqlite3.DatabaseError as exc:
            return self._recover(exc)

    def _recover(self, exc: sqlite3.DatabaseError) -> sqlite3.Connection:
        moved = quarantine(self.path, self.clock.time())
        self.quarantined.append(str(moved))
        self.last_error = f"outbox {self.path} was unreadable ({exc}); moved to {moved}, started a fresh one"
        log.error("%s", self.last_error)
        return open_store(self.path, self.config.synchronous)

    def _totals(self) -> tuple[int, int]:
        count, size = self._db.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM outbox").fetchone()
        return int(count), int(size)

    def _next_seq(self) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key = 'next_seq'").fetchone()
        # A fresh file (new device, or after a quarantine) continues above the floor's reservation.
        return int(row[0]) if row else self.floor.reserved

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """One atomic unit. The connection is in autocommit mode (isolation_level=None), so a `with
        connection:` block would not group statements: a full disk between the INSERT and the seq update
        would then leave them inconsistent."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # -- the per-frame path ------------------------------------------------------------------------
    def add(self, message: ObjectMessage) -> ObjectMessage | None:
        """Store `message` under the next seq and return it with that seq; None if it was not stored
        (outbox full with reject_new, disk full, or storage error), which is counted in drops."""
        started = time.perf_counter()
        with self._lock:
            stored = self._add_locked(message)
        self.enqueue_ms.add((time.perf_counter() - started) * 1e3)
        return stored

    def _add_locked(self, message: ObjectMessage) -> ObjectMessage | None:
        try:
            seq = self._next_seq()
            stored = replace(message, seq=seq)
            payload = encode(stored)
            if not self._make_room(len(payload)):
                self._drop("full", f"outbox full ({self._bytes} bytes); rejecting new messages")
                return None
            self.floor.allow(seq)
            with self._transaction():
                self._db.execute(
                    "INSERT INTO outbox (seq, created, size, payload) VALUES (?, ?, ?, ?)",
                    (seq, self.clock.time(), len(payload), payload),
                )
                self._db.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('next_seq', ?)", (seq + 1,)
                )
        except sqlite3.DatabaseError as exc:
            self._storage_failed(exc)
            return None
        except OSError as exc:  # the seq floor file: same disk, same causes
            self._drop("disk_full", f"cannot reserve sequence numbers: {exc.strerror}")
            return None
        self._count += 1
        self._bytes += len(payload)
        return stored

    def _make_room(self, size: int) -> bool:
        if self._bytes + size <= self.config.max_bytes:
            return True
        if self.config.when_full == "reject_new":
            return False
        while self._count and self._bytes + size > self.config.max_bytes:
            oldest = self._db.execute("SELECT seq, size FROM outbox ORDER BY seq LIMIT 1").fetchone()
            with self._transaction():
                self._db.execute("DELETE FROM outbox WHERE seq = ?", (oldest[0],))
            self._count -= 1
            self._bytes -= int(oldest[1])
            self.drops["oldest_evicted"] += 1
        return True

    def _storage_failed(self, exc: sqlite3.DatabaseError) -> None:
        text = str(exc).lower()
        if any(marker in text for marker in CORRUPT_MARKERS):
            self.drops["corrupt"] += 1
            self._db.close()
            self._db = self._recover(exc)
            self._count, self._bytes = self._totals()
        else:
            # "database or disk is full", "disk I/O error": keep running; the message is lost, and says so.
            self._drop("disk_full", f"outbox cannot store a message: {exc}")

    def _drop(self, reason: str, message: str) -> None:
        self.drops[reason] += 1
        self.last_error = message
        # Once per power of two, so a full disk at 15 messages/s does not flood the journal.
        if (self.drops[reason] & (self.drops[reason] - 1)) == 0:
            log.error("%s (dropped so far: %d)", message, self.drops[reason])

    # -- the link's side ---------------------------------------------------------------------------
    def pending(self, after: int, limit: int) -> list[Pending]:
        """Stored messages with seq > `after`, oldest first."""
        with self._lock:
            try:
                rows = self._db.execute(
                    "SELECT seq, payload FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?", (after, limit)
                ).fetchall()
            except sqlite3.DatabaseError as exc:
                self._storage_failed(exc)
                return []
        return [Pending(int(seq), bytes(payload)) for seq, payload in rows]

    def ack(self, seq: int) -> None:
        """The broker has the message: forget it."""
        with self._lock:
            try:
                with self._transaction():
                    row = self._db.execute(
                        "DELETE FROM outbox WHERE seq = ? RETURNING size", (seq,)
                    ).fetchone()
            except sqlite3.DatabaseError as exc:
                self._storage_failed(exc)
                return
            if row is not None:
                self._count -= 1
                self._bytes -= int(row[0])

    def expire(self) -> int:
        """Delete messages older than max_age_s; returns how many."""
        cutoff = self.clock.time() - self.config.max_age_s
        with self._lock:
            try:
                with self._transaction():
                    rows = self._db.execute(
                        "DELETE FROM outbox WHERE created < ? RETURNING size", (cutoff,)
                    ).fetchall()
            except sqlite3.DatabaseError as exc:
                self._storage_failed(exc)
                return 0
            self._count -= len(rows)
            self._bytes -= sum(int(r[0]) for r in rows)
        self.drops["expired"] += len(rows)
        return len(rows)

    def newest_seq(self) -> int:
        with self._lock:
            row = self._db.execute("SELECT MAX(seq) FROM outbox").fetchone()
        return int(row[0] or 0)

    def stats(self) -> OutboxStats:
        with self._lock:
            try:
                oldest = self._db.execute("SELECT MIN(created) FROM outbox").fetchone()[0]
            except sqlite3.DatabaseError:
                oldest = None
        p99 = self.enqueue_ms.get(99)
        return OutboxStats(
            depth=self._count,
            bytes=self._bytes,
            oldest_age_s=round(self.clock.time() - oldest, 1) if oldest is not None else 0.0,
            drops=dict(self.drops),
            enqueue_p99_ms=None if p99 is None else round(p99, 3),
            quarantined=list(self.quarantined),
            last_error=self.last_error,
        )

    def close(self) -> None:
        with self._lock:
            self._db.close()
