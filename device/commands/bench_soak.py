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

from device.commands.bench_broker import local_broker

ROOT = Path(__file__).resolve().parents[2]
# RSS is compared from this point on, once caches, allocator pools and XNNPack's packed weights have
# settled; growth after it is what a leak would look like.
WARMUP_S = 60.0
SAMPLE_S = 5.0


def soak(seconds: float) -> dict[str, Any]:
    with local_broker() as port:
        state = Path(tempfile.mkdtemp(prefix="appliance-soak-"))
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
    settled = [rss for t, rss in samples if t >= min(WARMUP_S, seconds / 2)] or [rss for _, rss in samples]
    return {
        "seconds": round(seconds),
        "samples": len(samples),
        "exit_code": process.returncode,
        "rss_mb_after_warmup": round(settled[0], 1),
        "rss_mb_end": round(settled[-1], 1),
        "rss_mb_max": round(max(settled), 1),
        "growth_mb": round(settled[-1] - settled[0], 1),
    }


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
