"""Crash points for the fault-injection tests: `OTA_FAULT_CRASH_AT=<step>` makes the process kill
itself with SIGKILL the moment it reaches that step, exactly as a power cut or the OOM killer would.
Unset (always, in production) it costs one dictionary lookup per step."""

from __future__ import annotations

import os
import signal

STEPS = ("download", "verify", "stage", "activate", "health")


def checkpoint(step: str) -> None:
    if os.environ.get("OTA_FAULT_CRASH_AT") == step:
        os.kill(os.getpid(), signal.SIGKILL)
