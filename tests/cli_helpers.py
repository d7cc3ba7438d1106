"""Running `python -m device` as a real process, as an operator would."""

from __future__ import annotations

import os
import subprocess
import sys

from .conftest import ROOT


def appliance(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run the CLI with a clean APPLIANCE_* environment plus `env`."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "device", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=environ,
        timeout=timeout,
        check=False,
    )
