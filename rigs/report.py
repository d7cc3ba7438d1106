"""Benchmark reports: budget checks, the machine they ran on and how busy it was."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

import numpy as np

PRESSURE_CPU = Path("/proc/pressure/cpu")


def machine_basics() -> dict[str, Any]:
    """What every report says of its machine; each bench adds the libraries it measures."""
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
    }


def machine_load() -> dict[str, Any]:
    """How busy the machine is right now: the load average and the CPU pressure (the share of time some
    runnable task waited for a CPU, /proc/pressure/cpu "some"). On a shared 2-core machine a two-thread
    figure swings by 2x when another process holds a core; this says whether it did."""
    one, five, fifteen = os.getloadavg()
    return {
        "loadavg_1_5_15": [round(one, 2), round(five, 2), round(fifteen, 2)],
        "cpu_pressure_some_pct": _cpu_pressure(PRESSURE_CPU),
    }


def _cpu_pressure(path: Path) -> dict[str, float] | None:
    """avg10 and avg60 of the "some" line, in percent; None where the kernel has no PSI."""
    try:
        text = path.read_text()
    except OSError:
        return None
    return parse_pressure(text)


def parse_pressure(text: str) -> dict[str, float] | None:
    for line in text.splitlines():
        kind, _, fields = line.partition(" ")
        if kind == "some":
            values = dict(f.split("=", 1) for f in fields.split())
            return {"avg10": float(values["avg10"]), "avg60": float(values["avg60"])}
    return None


class LoadSpan:
    """The machine's load at the start of a benchmark and, on `report()`, at its end: every report
    carries both beside its figures, so a reader can tell a quiet run from one that shared the CPUs."""

    def __init__(self) -> None:
        self.start = machine_load()

    def report(self) -> dict[str, Any]:
        return {"start": self.start, "end": machine_load()}


def load_line(span: dict[str, Any]) -> str:
    """One text line for a LoadSpan report."""

    def one(load: dict[str, Any]) -> str:
        psi = load["cpu_pressure_some_pct"]
        pressure = f"cpu pressure some avg10 {psi['avg10']}% avg60 {psi['avg60']}%" if psi else "no PSI"
        return f"load {'/'.join(str(v) for v in load['loadavg_1_5_15'])}, {pressure}"

    return f"machine at start: {one(span['start'])}; at end: {one(span['end'])}"


def check(name: str, value: float, op: str, budget: float) -> dict[str, Any]:
    """One budget line of a benchmark report: `op` is ">=" or "<="."""
    ok = value >= budget if op == ">=" else value <= budget
    return {"check": name, "value": round(value, 4), "budget": f"{op} {budget}", "ok": bool(ok)}


def check_lines(checks: list[dict[str, Any]]) -> str:
    return "\n".join(
        f"{'OK ' if c['ok'] else 'FAIL'} {c['check']}: {c['value']} ({c['budget']})" for c in checks
    )


def report_out(report: dict[str, Any], as_json: bool, figures: tuple[str, ...] = ()) -> int:
    """Print a benchmark report (JSON, or the `figures` keys as one JSON line, the machine's load and
    the budget lines); exit 0 only if every budget is met."""
    checks: list[dict[str, Any]] = report["checks"]
    text = check_lines(checks)
    if "machine_load" in report:
        text = f"{load_line(report['machine_load'])}\n{text}"
    if figures:
        text = f"{json.dumps({k: report[k] for k in figures})}\n{text}"
    print(json.dumps(report, indent=2) if as_json else text)
    return 0 if all(c["ok"] for c in checks) else 1
