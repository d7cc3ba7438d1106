"""The fleet benchmark's results, kept in SQLite so that a new model is compared with the last run.

One row per (request, device, model). A "run" is one `appliance fleet bench` invocation (its
request_id); figures per device kind are the medians over the devices of that kind in the run, so one
slow device does not move the kind's figure and one fast one does not hide the rest.

Written by `appliance fleet bench` (device/fleetbench/client.py); read by it (the change against the
previous run) and by `appliance models report` (`latest_by_kind`). WAL, so a report can read while a
bench writes.
"""

from __future__ import annotations

import sqlite3
import statistics
from collections.abc import Iterable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    request_id  TEXT NOT NULL,
    device_id   TEXT NOT NULL,
    device_kind TEXT NOT NULL,
    accelerator TEXT NOT NULL,
    backend     TEXT NOT NULL,
    model       TEXT NOT NULL,
    threads     INTEGER NOT NULL,
    runs        INTEGER NOT NULL,
    p50_ms      REAL NOT NULL,
    p90_ms      REAL NOT NULL,
    fps         REAL NOT NULL,
    at          REAL NOT NULL,
    PRIMARY KEY (request_id, device_id, model)
);
CREATE INDEX IF NOT EXISTS results_key ON results (device_kind, accelerator, backend, model, threads, at);
"""

# (device_kind, accelerator, backend, model, threads): what figures are compared across runs by.
Key = tuple[str, str, str, str, int]


@dataclass(frozen=True)
class DeviceResult:
    """One device's figures for one model in one run."""

    request_id: str
    device_id: str
    device_kind: str
    accelerator: str  # "cpu", "edgetpu-usb", "edgetpu-pci"
    backend: str  # "litert-cpu-xnnpack", "edgetpu"
    model: str
    threads: int
    runs: int
    p50_ms: float
    p90_ms: float
    fps: float
    at: float


@dataclass(frozen=True)
class KindFigures:
    device_kind: str  # e.g. "Raspberry Pi 4 Model B Rev 1.4" or "x86_64 <cpu model>"
    accelerator: str  # "cpu", "edgetpu-usb", "edgetpu-pci"
    backend: str  # e.g. "litert-cpu-xnnpack", "edgetpu"
    model: str  # manifest model id
    threads: int
    p50_ms: float
    p90_ms: float
    fps: float
    devices: int  # how many devices the figures come from
    at: float  # unix time of the newest result

    @property
    def key(self) -> Key:
        return (self.device_kind, self.accelerator, self.backend, self.model, self.threads)


@contextmanager
def _connect(db: Path) -> Iterator[sqlite3.Connection]:
    db.parent.mkdir(parents=True, exist_ok=True)
    with closing(sqlite3.connect(db, timeout=10.0)) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, SCHEMA_VERSION):
            raise ValueError(
                f"{db} holds bench results in schema {version}, this version reads {SCHEMA_VERSION}: "
                "pass another --bench-db or upgrade the tools"
            )
        with conn:
            conn.executescript(_SCHEMA)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        yield conn


def record(db: Path, results: Iterable[DeviceResult]) -> None:
    """Store one run's results, all or none (a re-sent result of the same run replaces its row)."""
    rows = [
        (
            r.request_id,
            r.device_id,
            r.device_kind,
            r.accelerator,
            r.backend,
            r.model,
            r.threads,
            r.runs,
            r.p50_ms,
            r.p90_ms,
            r.fps,
            r.at,
        )
        for r in results
    ]
    with _connect(db) as conn, conn:
        conn.executemany("INSERT OR REPLACE INTO results VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", rows)


def _load(conn: sqlite3.Connection, where: str = "", args: tuple[object, ...] = ()) -> list[DeviceResult]:
    # `where` is this module's own text; values go in as parameters
    cursor = conn.execute(f"SELECT * FROM results {where} ORDER BY at", args)
    return [DeviceResult(*row) for row in cursor.fetchall()]


def _by_run(rows: Iterable[DeviceResult]) -> dict[tuple[Key, str], list[DeviceResult]]:
    groups: dict[tuple[Key, str], list[DeviceResult]] = {}
    for r in rows:
        key = (r.device_kind, r.accelerator, r.backend, r.model, r.threads)
        groups.setdefault((key, r.request_id), []).append(r)
    return groups


def _figures(key: Key, rows: list[DeviceResult]) -> KindFigures:
    return KindFigures(
        *key[:4],
        threads=key[4],
        p50_ms=statistics.median(r.p50_ms for r in rows),
        p90_ms=statistics.median(r.p90_ms for r in rows),
        fps=statistics.median(r.fps for r in rows),
        devices=len({r.device_id for r in rows}),
        at=max(r.at for r in rows),
    )


def run_figures(db: Path, request_id: str) -> list[KindFigures]:
    """The figures per device kind of one run."""
    with _connect(db) as conn:
        rows = _load(conn, "WHERE request_id = ?", (request_id,))
    return sorted((_figures(k, g) for (k, _), g in _by_run(rows).items()), key=lambda f: f.key)


def previous_figures(db: Path, request_id: str) -> dict[Key, KindFigures]:
    """For each key, the figures of the newest run before `request_id` that measured it."""
    with _connect(db) as conn:
        rows = _load(conn, "WHERE request_id != ?", (request_id,))
        first = conn.execute("SELECT MIN(at) FROM results WHERE request_id = ?", (request_id,)).fetchone()[0]
    if first is not None:
        rows = [r for r in rows if r.at < first]
    return _newest(rows)


def latest_by_kind(db: Path) -> list[KindFigures]:
    """The newest run per (kind, accelerator, backend, model, threads); [] if there is no database yet."""
    if not Path(db).is_file():
        return []  # a report without any fleet bench run yet: no latency columns, not an error
    with _connect(Path(db)) as conn:
        rows = _load(conn)
    return sorted(_newest(rows).values(), key=lambda f: f.key)


def _newest(rows: list[DeviceResult]) -> dict[Key, KindFigures]:
    newest: dict[Key, KindFigures] = {}
    for (key, _), group in _by_run(rows).items():
        figures = _figures(key, group)
        if key not in newest or figures.at > newest[key].at:
            newest[key] = figures
    return newest
