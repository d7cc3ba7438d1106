"""Running `python -m device` as a real process, as an operator would."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .conftest import ROOT


def appliance(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the CLI with a clean APPLIANCE_* environment plus `env`, and `stdin` as its input."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "device", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=environ,
        timeout=timeout,
        check=False,
    )


@dataclass(frozen=True)
class Measured:
    returncode: int
    stdout: str
    stderr: str
    peak_mb: float


# Runs `python -m MODULE ARGS` in-process and, at exit, writes the process's own VmHWM (peak resident
# memory of this program's address space). wait4's ru_maxrss cannot be used: Linux carries the parent's
# peak across fork and exec, so a child of a 400 MB pytest reports at least 400 MB (seen here).
_PEAK_WRAPPER = """
import atexit, os, runpy, sys
def _peak():
    with open('/proc/self/status') as status, open(os.environ['PEAK_FILE'], 'w') as out:
        out.write(next(line for line in status if line.startswith('VmHWM')).split()[1])
atexit.register(_peak)
sys.argv = sys.argv[1:]
runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)
"""


def run_measured(
    module: str, *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> Measured:
    """`python -m MODULE ARGS` with a clean APPLIANCE_* environment plus `env`, and its peak memory."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    with tempfile.TemporaryDirectory() as scratch:
        peak_file = Path(scratch) / "peak"
        environ.update(env or {}, PEAK_FILE=str(peak_file))
        done = subprocess.run(
            [sys.executable, "-c", _PEAK_WRAPPER, module, *args],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env=environ,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        # No file: the process died without running its exit handlers (killed, or out of memory).
        peak_kb = int(peak_file.read_text()) if peak_file.exists() else float("inf")
    return Measured(done.returncode, done.stdout, done.stderr, peak_kb / 1024)
