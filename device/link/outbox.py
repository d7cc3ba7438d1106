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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from device.clock import Clock
from device.config import OutboxConfig
from device.link.outbox_store import open_reader, open_store, quarantine
from device.link.sequence import SeqFloor
from device.metrics import Percentiles
from device.ratelog import log_rarely
from device.wire import ObjectMessage, WireError, encode

log = logging.getLogger(__name__)

# Errors that mean the file itself is broken (as opposed to a full disk or a busy lock).
CORRUPT_MARKERS = ("malformed", "not a database", "file is encrypted", "disk image")
# Rows inserted or deleted between checkpoints (about 2-3 WAL pages each): near SQLite's default of 1000.
CHECKPOINT_ROWS = 400


@dataclass(frozen=True)
class OutboxStats:
    depth: int
    bytes: int
    oldest_age_s: float
    drops: dict[str, int]  # by reason: oldest_evicted, full, expired, disk_full, corrupt, invalid
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
        self._lock = threading.Lock()  # the writer connection: the pipeline's inserts, the link's deletes
        self._read_lock = threading.Lock()
        self._reader: sqlite3.Connection | None = None
        self._changed = 0  # rows inserted or deleted since the last checkpoint
        self._generation = 0  # bumped when the file is replaced, so the reader reopens
        self._reader_generation = -1
        self._db = self._open()
        self._count, self._bytes = self._totals()
        self._next = self._load_next()

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
        self._generation += 1
        return open_store(self.path, self.config.synchronous)

    def _totals(self) -> tuple[int, int]:
        count, size = self._db.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM outbox").fetchone()
        return int(count), int(size)

    def _load_next(self) -> int:
        """The next seq: above every stored message and every deleted one (meta records those)."""
        meta = self._db.execute("SELECT value FROM meta WHERE key = 'next_seq'").fetchone()
        newest = self._db.execute("SELECT MAX(seq) FROM outbox").fetchone()[0]
        known = ([int(meta[0])] if meta else []) + ([int(newest) + 1] if newest is not None else [])
        # A fresh file (new device, or after a quarantine) continues above the floor's reservation.
        return max(known) if known else self.floor.reserved

    def _record_deleted(self, newest_deleted: int) -> None:
        """Inside a deleting transaction: remember the deleted seqs, so they are never handed out again
        even when the table is empty."""
        self._db.execute(
            "INSERT INTO meta (key, value) VALUES ('next_seq', ?) "
            "ON CONFLICT (key) DO UPDATE SET value = MAX(value, excluded.value)",
            (newest_deleted + 1,),
        )

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
        (outbox full with reject_new, disk full, storage error, or a value the wire refuses), which is
        counted in drops. A batch of one: the same path, statement and counting as add_many."""
        return self.add_many([message])[0]

    def add_many(self, messages: list[ObjectMessage]) -> list[ObjectMessage | None]:
        """Store a frame's objects in one transaction: one commit (one fsync with FULL, one WAL frame
        write) and one lock hold instead of one per object. All or nothing: on a full disk or a storage
        error none is stored, and no seq is spent, so numbering stays gap-free. A message no receiver
        would take is dropped alone (as `add` does) and the rest are stored."""
        started = time.perf_counter()
        with self._lock:
            stored = self._add_many_locked(messages)
        self.enqueue_ms.add((time.perf_counter() - started) * 1e3)
        return stored

    def _add_many_locked(self, messages: list[ObjectMessage]) -> list[ObjectMessage | None]:
        out: list[ObjectMessage | None] = [None] * len(messages)
        rows: list[tuple[int, int, bytes]] = []  # (index in messages, seq, payload)
        for index, message in enumerate(messages):
            seq = self._next + len(rows)
            try:
                numbered = message.with_seq(seq)
                payload = encode(numbered)
            except WireError as exc:
                self._drop("invalid", f"object message not stored: {exc}")
                continue
            out[index] = numbered
            rows.append((index, seq, payload))
        if not rows:
            return out
        size = sum(len(payload) for _, _, payload in rows)
        try:
            if not self._make_room(size):
                return self._lose(
                    out, rows, "full", f"outbox full ({self._bytes} bytes); rejecting new messages"
                )
            self.floor.allow(rows[-1][1])
            now = self.clock.time()
            # One statement with a row per message: atomic on its own (an implicit transaction), and one
            # sqlite3_step, so the frame thread gives up the GIL once per frame, not once per statement
            # (each release can cost a whole switch interval while the link's thread is busy).
            values = ",".join(["(?, ?, ?, ?)"] * len(rows))
            args = [a for _, seq, payload in rows for a in (seq, now, len(payload), payload)]
            self._db.execute(f"INSERT INTO outbox (seq, created, size, payload) VALUES {values}", args)
        except sqlite3.DatabaseError as exc:
            self._storage_failed(exc, len(rows))
            return self._lose(out, rows)
        except OSError as exc:
            return self._lose(out, rows, "disk_full", f"cannot reserve sequence numbers: {exc.strerror}")
        self._next = rows[-1][1] + 1
        self._changed += len(rows)
        self._count += len(rows)
        self._bytes += size
        return out

    def _lose(
        self,
        out: list[ObjectMessage | None],
        rows: list[tuple[int, int, bytes]],
        reason: str = "",
        text: str = "",
    ) -> list[ObjectMessage | None]:
        """A batch that was not stored: none of its messages counts as produced (drops already counted
        when `reason` is empty)."""
        for index, _, _ in rows:
            out[index] = None
            if reason:
                self._drop(reason, text)
        return out

    def _make_room(self, size: int) -> bool:
        if self._bytes + size <= self.config.max_bytes:
            return True
        if self.config.when_full == "reject_new":
            return False
        while self._count and self._bytes + size > self.config.max_bytes:
            oldest = self._db.execute("SELECT seq, size FROM outbox ORDER BY seq LIMIT 1").fetchone()
            with self._transaction():
                self._db.execute("DELETE FROM outbox WHERE seq = ?", (oldest[0],))
                self._record_deleted(int(oldest[0]))
            self._count -= 1
            self._bytes -= int(oldest[1])
            self.drops["oldest_evicted"] += 1
        return True

    def _storage_failed(self, exc: sqlite3.DatabaseError, lost: int = 1) -> None:
        text = str(exc).lower()
        if any(marker in text for marker in CORRUPT_MARKERS):
            self.drops["corrupt"] += lost
            self._db.close()
            self._db = self._recover(exc)
            self._count, self._bytes = self._totals()
            self._next = self._load_next()
        else:
            # "database or disk is full", "disk I/O error": keep running; the message is lost, and says so.
            for _ in range(lost):
                self._drop("disk_full", f"outbox cannot store a message: {exc}")

    def _drop(self, reason: str, message: str) -> None:
        self.drops[reason] += 1
        self.last_error = message
        log_rarely(log, logging.ERROR, self.drops[reason], f"{message}; dropped")

    # -- the link's side ---------------------------------------------------------------------------
    def pending(self, after: int, limit: int) -> list[Pending]:
        """Stored messages with seq > `after`, oldest first (the link's thread)."""
        rows = self._read(
            "SELECT seq, payload FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?", (after, limit)
        )
        return [Pending(int(seq), bytes(payload)) for seq, payload in rows]

    def _read(self, sql: str, args: tuple[int, ...] = ()) -> list[tuple[Any, ...]]:
        """Reads go through their own connection: in WAL mode they never wait for the writer, so the link
        does not queue behind the pipeline's inserts for the write lock (a convoy under the GIL)."""
        with self._read_lock:
            try:
                return list(self._reading().execute(sql, args).fetchall())
            except sqlite3.DatabaseError as exc:
                failure = exc
        with self._lock:
            self._storage_failed(failure)
        return []

    def _reading(self) -> sqlite3.Connection:
        """The reader connection (under _read_lock), reopened after the file was replaced."""
        if self._reader is None or self._reader_generation != self._generation:
            self._reader = open_reader(self.path)
            self._reader_generation = self._generation
        return self._reader

    def ack(self, *seqs: int) -> None:
        """The broker has these messages: forget them, in one transaction (acks arrive in bursts)."""
        if not seqs:
            return
        marks = ",".join("?" * len(seqs))
        with self._lock:
            try:
                with self._transaction():
                    rows = self._db.execute(f"DELETE FROM outbox WHERE seq IN ({marks}) RETURNING size", seqs)
                    sizes = [int(r[0]) for r in rows.fetchall()]
                    self._record_deleted(max(seqs))
            except sqlite3.DatabaseError as exc:
                self._storage_failed(exc)
                return
            self._count -= len(sizes)
            self._bytes -= sum(sizes)
            self._changed += len(sizes)

    def checkpoint(self) -> bool:
        """Copy the WAL back into the database file once enough has changed, from the reader connection
        and without the write lock: PASSIVE never blocks the pipeline's inserts, and the frame thread no
        longer pays for it (the link's thread calls this after its deletes, the app's every stats
        interval). Returns whether it ran."""
        if self._changed < CHECKPOINT_ROWS:
            return False
        self._changed = 0
        with self._read_lock:
            try:
                self._reading().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            except sqlite3.DatabaseError as exc:  # no message is lost: the next insert or read will tell
                log.warning("outbox checkpoint failed (%s); SQLite's own will run later", exc)
        return True

    def expire(self) -> int:
        """Delete messages older than max_age_s; returns how many."""
        cutoff = self.clock.time() - self.config.max_age_s
        with self._lock:
            try:
                with self._transaction():
                    rows = self._db.execute(
                        "DELETE FROM outbox WHERE created < ? RETURNING size, seq", (cutoff,)
                    ).fetchall()
                    if rows:
                        self._record_deleted(max(int(r[1]) for r in rows))
            except sqlite3.DatabaseError as exc:
                self._storage_failed(exc)
                return 0
            self._count -= len(rows)
            self._bytes -= sum(int(r[0]) for r in rows)
        self.drops["expired"] += len(rows)
        self._changed += len(rows)
        self.checkpoint()  # the app thread: keeps the WAL short while the link is down, too
        return len(rows)

    def newest_seq(self) -> int:
        """The last seq handed out (0 before the first): kept in memory, so the link can ask every loop
        whether anything new was stored without a query."""
        return self._next - 1

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
        with self._read_lock:
            if self._reader is not None:
                self._reader.close()
