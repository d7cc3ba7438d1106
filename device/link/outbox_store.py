"""The outbox's SQLite file: schema, pragmas, integrity check, and quarantine of a broken file."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

SAFETY_CHECKPOINT_PAGES = 10_000  # about 40 MB of WAL

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY,
    created REAL NOT NULL,
    size INTEGER NOT NULL,
    payload BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_created ON outbox (created);
"""


def open_store(path: Path, synchronous: str) -> sqlite3.Connection:
    """Open (or create) the outbox file. Raises sqlite3.DatabaseError when the file is not a healthy
    outbox, so the caller can quarantine it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=5.0)
    try:
        # WAL: the pipeline's inserts never wait for the link's reads, and a crash mid-write leaves the
        # main file intact. busy_timeout covers a checkpoint racing an insert.
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={'FULL' if synchronous == 'FULL' else 'NORMAL'}")
        db.execute("PRAGMA busy_timeout=5000")
        # SQLite checkpoints the WAL inside whichever commit crosses the limit: on this connection, the
        # frame thread's insert (7-8 ms with the link draining, the p99 of a frame's hand-off). The
        # link's and the app's threads checkpoint instead (Outbox.checkpoint); this high limit is only
        # the safety net for when neither runs.
        db.execute(f"PRAGMA wal_autocheckpoint={SAFETY_CHECKPOINT_PAGES}")
        # quick_check reads every page: a few ms for a small outbox, and it is what catches a file
        # that was truncated or overwritten while the daemon was down.
        result = db.execute("PRAGMA quick_check").fetchone()[0]
        if result != "ok":
            raise sqlite3.DatabaseError(f"database disk image is malformed: {result}")
        db.executescript(SCHEMA)
    except sqlite3.DatabaseError:
        db.close()
        raise
    return db


def open_reader(path: Path) -> sqlite3.Connection:
    """A second connection for reads only; with WAL it sees every committed write, without waiting."""
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=5.0)
    db.execute("PRAGMA busy_timeout=5000")
    return db


def quarantine(path: Path, now: float) -> Path:
    """Move the broken file (and its WAL and shared-memory files) aside for inspection."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now))
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    for suffix in ("", "-wal", "-shm"):
        source = Path(f"{path}{suffix}")
        if source.exists():
            os.replace(source, Path(f"{target}{suffix}"))
    return target
