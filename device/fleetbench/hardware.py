"""What a bench result says about the device it ran on: the kind of board, its CPUs, where each model
ran (CPU, USB or PCIe Edge TPU) and with which runtime.

The device kind is what results are grouped by across a fleet, so it must be the same string on every
device of one kind: the board's own name from the device tree on a Pi ("Raspberry Pi 4 Model B Rev
1.4"), else the architecture and the CPU's model name ("x86_64 Intel(R) Xeon(R) ...").
"""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

from device.edgetpu import list_tpus
from device.vision.litert import import_litert
from device.vision.runtime import Placement

DEVICE_TREE_MODEL = Path("/proc/device-tree/model")
CPUINFO = Path("/proc/cpuinfo")
# Keys of /proc/cpuinfo that name the CPU: x86 says "model name", arm64 kernels often say nothing
# (the device tree has the board's name instead), some say "Hardware" or "cpu model".
_CPU_KEYS = ("model name", "cpu model", "hardware", "processor")


def device_kind(model_file: Path = DEVICE_TREE_MODEL, cpuinfo: Path = CPUINFO) -> str:
    try:
        # The device tree's strings end in NUL.
        board = model_file.read_bytes().rstrip(b"\0").decode("utf-8", "replace").strip()
    except OSError:
        board = ""
    return board or f"{platform.machine()} {cpu_model(cpuinfo)}".strip()


def cpu_model(cpuinfo: Path = CPUINFO) -> str:
    try:
        lines = cpuinfo.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    fields: dict[str, str] = {}
    for line in lines:
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() not in fields:
            fields[key.strip().lower()] = value.strip()
    # "processor" is a number on x86 ("0"); a name on some ARM kernels ("ARMv7 Processor rev 3").
    return next((fields[k] for k in _CPU_KEYS if fields.get(k) and not fields[k].isdigit()), "")


def litert() -> dict[str, str]:
    name = import_litert().name
    try:
        version = metadata.version(name)
    except metadata.PackageNotFoundError:
        version = "unknown"
    return {"name": name, "version": version}


def accelerator(placement: Placement, sysfs_root: Path) -> str:
    """ "cpu", "edgetpu-usb" or "edgetpu-pci". With the spec `auto`, libedgetpu took the first TPU it
    found, which is the first one sysfs lists (USB before PCIe, the order `appliance tpus` shows)."""
    if placement.accelerator != "edgetpu":
        return "cpu"
    kind = placement.device.split(":", 1)[0]
    if kind not in ("usb", "pci"):
        tpus = list_tpus(sysfs_root)
        kind = tpus[0].kind if tpus else "unknown"
    return f"edgetpu-{kind}"


def backend(placement: Placement) -> str:
    if placement.accelerator == "edgetpu":
        return "edgetpu"
    # ai-edge-litert runs float and int8 models through XNNPack by default; tflite-runtime is the
    # fallback runtime (device/vision/litert.py).
    return "litert-cpu-xnnpack" if import_litert().name == "ai-edge-litert" else "tflite-runtime-cpu"


def describe(sysfs_root: Path) -> dict[str, Any]:
    return {
        "kind": device_kind(),
        "machine": platform.machine(),
        "cpu_model": cpu_model(),
        "cpus": os.cpu_count() or 1,
        "tpus": [f"{t.spec} {t.state}" for t in list_tpus(sysfs_root)],
        "litert": litert(),
    }
