"""What the benchmarks share: the machine description, demo frames, the hand-off micro-benchmark."""

from __future__ import annotations

import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from device.backoff import Backoff
from device.camera.grabber import FrameGrabber
from device.camera.image_folder import ImageFolderSource
from device.camera.source import Frame
from device.clock import SystemClock
from device.config import OutboxConfig
from device.link.outbox import Outbox
from device.vision.litert import import_litert

DEMO = Path(__file__).resolve().parents[2] / "demo"
PRESSURE_CPU = Path("/proc/pressure/cpu")


def scratch_outbox(config: OutboxConfig) -> Outbox:
    """A real outbox in a throw-away directory (on the same disk as /tmp)."""
    return Outbox(Path(tempfile.mkdtemp(prefix="appliance-bench-")) / "outbox.sqlite", config, SystemClock())


def machine() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "runtime": import_litert().name,
        "opencv": cv2.__version__,
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


def render_frames(count: int, width: int, height: int) -> list[Frame]:
    """`count` frames of the demo sequence, rendered ahead so the benchmark times only the pipeline."""
    seconds = max(1.0, count / 4 / 15)  # the four demo photos, evenly
    source = ImageFolderSource(DEMO, width=width, height=height, fps=0, seconds=seconds)
    source.open()
    return [source.read() for _ in range(count)]


class _OneFrame:
    name = "bench"

    def __init__(self, frame: Frame) -> None:
        self.frame = frame

    def open(self) -> None: ...

    def read(self) -> Frame:
        return self.frame

    def close(self) -> None: ...


def handoff_us(samples: int = 2000) -> float:
    """Median microseconds for one frame through the grabber's latest-frame slot (put, then take)."""
    frame = Frame(np.zeros((480, 640, 3), np.uint8), 0.0, 0)
    grabber = FrameGrabber(_OneFrame(frame), Backoff(1.0, 1.0))  # not started: we drive the slot
    times = []
    for _ in range(samples):
        start = time.perf_counter()
        grabber._put(frame)
        grabber.take(0.0)
        times.append((time.perf_counter() - start) * 1e6)
    return statistics.median(times)


def check(name: str, value: float, op: str, budget: float) -> dict[str, Any]:
    """One budget line of a benchmark report: `op` is ">=" or "<="."""
    ok = value >= budget if op == ">=" else value <= budget
    return {"check": name, "value": round(value, 4), "budget": f"{op} {budget}", "ok": bool(ok)}


def check_lines(checks: list[dict[str, Any]]) -> str:
    return "\n".join(
        f"{'OK ' if c['ok'] else 'FAIL'} {c['check']}: {c['value']} ({c['budget']})" for c in checks
    )


def report_out(report: dict[str, Any], as_json: bool) -> int:
    """Print a benchmark report (JSON, or its budget lines); exit 0 only if every budget is met."""
    checks: list[dict[str, Any]] = report["checks"]
    text = check_lines(checks)
    if "machine_load" in report:
        text = f"{load_line(report['machine_load'])}\n{text}"
    print(json.dumps(report, indent=2) if as_json else text)
    return 0 if all(c["ok"] for c in checks) else 1
