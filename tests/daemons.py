"""The real daemon as a subprocess, and the safety net that kills any a test leaves running."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

STARTED: list[subprocess.Popen[bytes]] = []  # killed after each test by conftest's reap_daemons


def start_daemon(env: dict[str, str], *args: str, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", "device", "run", *args],
            cwd=ROOT,
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    STARTED.append(process)
    return process


def reap() -> None:
    """Kill every daemon a test started and left running (a failed wait skips the test's own cleanup):
    one left behind would run for ever and slow every later test."""
    while STARTED:
        process = STARTED.pop()
        if process.poll() is None:
            process.kill()
            process.wait(10)
