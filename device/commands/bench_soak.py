"""The steady-run memory check: the real daemon (`appliance run`) on the paced demo source, talking to a
local broker, with its RSS sampled from outside every few seconds."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from rigs.broker import local_broker
from rigs.report import check

ROOT = Path(__file__).resolve().parents[2]
# RSS is compared from this point on, once caches, allocator pools and XNNPack's packed weights have
# settled; growth after it is what a leak would look like.
WARMUP_S = 60.0
SAMPLE_S = 5.0


def soak(seconds: float) -> dict[str, Any]:
    with local_broker() as port, tempfile.TemporaryDirectory(prefix="appliance-soak-") as folder:
        state = Path(folder)
        env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
        env.update(
            {
                "APPLIANCE_MQTT__PORT": str(port),
                "APPLIANCE_STATE_DIR": str(state),
                "APPLIANCE_CAMERA__SOURCE": f"images:{ROOT / 'demo'}?fps=15",
                "APPLIANCE_LOG_LEVEL": "WARNING",
            }
        )
        process = subprocess.Popen(
            [sys.executable, "-m", "device", "run", "--duration", str(seconds)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        samples = _sample(psutil.Process(process.pid), process, seconds)
        process.wait(30)
    return soak_figures(samples, seconds, process.returncode)


def soak_figures(samples: list[tuple[float, float]], seconds: float, exit_code: int | None) -> dict[str, Any]:
    """Each RSS figure named for when it was taken: the first sample, the first once warmed up, the last,
    the largest from warm-up on, and the growth from warm-up to the end (what a leak would show)."""
    warm = min(WARMUP_S, seconds / 2)
    settled = [rss for t, rss in samples if t >= warm] or [rss for _, rss in samples] or [0.0]
    return {
        "seconds": round(seconds),
        "warmup_s": round(warm, 1),
        "samples": len(samples),
        "exit_code": exit_code,
        "rss_mb_start": round(samples[0][1], 1) if samples else 0.0,
        "rss_mb_after_warmup": round(settled[0], 1),
        "rss_mb_end": round(settled[-1], 1),
        "rss_mb_max_after_warmup": round(max(settled), 1),
        "growth_mb": round(settled[-1] - settled[0], 1),
    }


def soak_checks(figures: dict[str, Any]) -> list[dict[str, Any]]:
    """The budgets; tests/test_bench.py feeds these a bad measurement to show each can fail."""
    return [
        # A daemon that died early would show no growth: the run counts only if it ran to the end.
        check(
            "daemon ran the whole soak and exited 0 (1 = it did not)",
            float(figures["exit_code"] != 0),
            "<=",
            0,
        ),
        check("daemon RSS, largest from warm-up to end, MB", figures["rss_mb_max_after_warmup"], "<=", 250),
        check("daemon RSS growth from warm-up to end, MB", figures["growth_mb"], "<=", 10),
    ]


def _sample(
    target: psutil.Process, process: subprocess.Popen[bytes], seconds: float
) -> list[tuple[float, float]]:
    start = time.monotonic()
    samples = []
    while process.poll() is None and time.monotonic() - start < seconds + 30:
        try:
            samples.append((time.monotonic() - start, target.memory_info().rss / 2**20))
        except psutil.NoSuchProcess:
            break
        time.sleep(SAMPLE_S)
    return samples
