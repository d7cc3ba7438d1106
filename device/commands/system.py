"""`appliance tpus` and `appliance config check`."""

from __future__ import annotations

import json
from pathlib import Path

from device.config import load_config
from device.edgetpu import list_tpus


def tpus(sysfs_root: str, as_json: bool) -> int:
    found = list_tpus(Path(sysfs_root))
    if as_json:
        print(json.dumps([t.to_dict() for t in found], indent=2))
    elif not found:
        print("no Edge TPU found (USB 1a6e:089a / 18d1:9302, or /sys/class/apex)")
    else:
        for tpu in found:
            temp = "" if tpu.temperature_c is None else f"  {tpu.temperature_c:.1f} °C"
            print(f"{tpu.spec:<7} {tpu.state:<13} {tpu.path}{temp}")
    return 0


def config_check(path: str, as_json: bool) -> int:
    """Validate a config file; a ConfigError propagates and exits 78 through the CLI."""
    config = load_config(Path(path))
    if as_json:
        print(config.model_dump_json(indent=2))
    else:
        print(
            f"{path}: OK (device {config.device_id}, runtime {config.runtime.device}, "
            f"detector {config.models.detector}, embedder {config.models.embedder})"
        )
    return 0
