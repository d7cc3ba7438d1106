"""The report's latency columns: one per (device kind, accelerator, back end, threads), from the fleet
bench results (device/fleetbench/results.py, the newest run per kind), or from a local run of the
`bench models` measurement when there is no results database."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from device.errors import UsageError
from device.fleetbench.results import latest_by_kind


@dataclass(frozen=True, order=True)
class Column:
    device_kind: str
    accelerator: str
    backend: str
    threads: int
    local: bool = False  # measured by this report's own run, not by `appliance fleet bench`

    def title(self) -> str:
        where = "this machine, local run" if self.local else "fleet bench"
        return f"{self.device_kind} · {self.accelerator} · {self.backend} · {self.threads} thr ({where})"


@dataclass(frozen=True)
class Latency:
    p50_ms: float
    p90_ms: float
    devices: int  # 1 for the local run


# column -> model id -> figures
LatencyTable = dict[Column, dict[str, Latency]]


def from_bench_db(db: Path) -> LatencyTable:
    """The newest fleet figures per device kind; {} when the database has no results yet."""
    try:
        figures = latest_by_kind(db)
    except (sqlite3.DatabaseError, ValueError) as exc:
        raise UsageError(
            f"bench database {db} cannot be read ({exc}); pass the file `appliance fleet bench` writes "
            "(<state_dir>/bench.sqlite), or leave --bench-db out to time the models locally"
        ) from None
    table: LatencyTable = {}
    for f in figures:
        column = Column(f.device_kind, f.accelerator, f.backend, f.threads)
        table.setdefault(column, {})[f.model] = Latency(f.p50_ms, f.p90_ms, f.devices)
    return dict(sorted(table.items()))
