"""Finding Edge TPUs from sysfs, without pycoral and without opening them.

- A USB Accelerator shows up under /sys/bus/usb/devices with USB id 1a6e:089a (Global Unichip) until
  libedgetpu first opens it and loads its firmware; after that it re-enumerates as 18d1:9302 (Google).
- A PCIe or M.2 card shows up as /sys/class/apex/apex_N (the gasket/apex kernel driver), with its die
  temperature in millidegrees Celsius in `temp`. After a fault the driver reports about -89 °C, so a
  reading that low means the TPU is dead, not cold.

All paths hang off an injectable sysfs root so that tests use fake trees.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path

USB_IDS = {
    ("1a6e", "089a"): "uninitialised",  # before libedgetpu has loaded its firmware
    ("18d1", "9302"): "ready",
}
USB_DEVICES = Path("bus/usb/devices")
APEX_CLASS = Path("class/apex")
# A working TPU never reads below ambient; the driver's fault value is about -89 °C. Anything under
# -70 °C is therefore a fault, with margin for sensor noise around the fault value.
DEAD_BELOW_C = -70.0


@dataclass(frozen=True)
class TpuInfo:
    kind: str  # "usb" or "pci"
    index: int  # N in the device spec `usb:N` / `pci:N`
    spec: str
    path: str
    state: str  # "ready", "uninitialised", "failed" or "unknown"
    temperature_c: float | None = None

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def list_tpus(sysfs_root: Path = Path("/sys")) -> list[TpuInfo]:
    """Every Edge TPU visible in sysfs: USB ones first, then PCIe, each in their enumeration order."""
    return _usb_tpus(sysfs_root / USB_DEVICES) + _pci_tpus(sysfs_root / APEX_CLASS)


def read_apex_temperature(apex_dir: Path) -> float | None:
    """Degrees Celsius from `apex_dir/temp`, or None when there is no readable sensor."""
    text = _read(apex_dir / "temp")
    try:
        return int(text) / 1000.0 if text is not None else None
    except ValueError:
        return None


def _usb_tpus(root: Path) -> list[TpuInfo]:
    found: list[TpuInfo] = []
    for entry in _sorted_entries(root):
        ids = (_read(entry / "idVendor"), _read(entry / "idProduct"))
        state = USB_IDS.get((ids[0] or "", ids[1] or ""))
        if state is not None:
            index = len(found)
            found.append(TpuInfo("usb", index, f"usb:{index}", str(entry), state))
    return found


def _pci_tpus(root: Path) -> list[TpuInfo]:
    found: list[TpuInfo] = []
    for entry in _sorted_entries(root):
        match = re.fullmatch(r"apex_(\d+)", entry.name)
        if match is None:
            continue
        temperature = read_apex_temperature(entry)
        state = _apex_state(temperature)
        index = int(match.group(1))
        found.append(TpuInfo("pci", index, f"pci:{index}", str(entry), state, temperature))
    return found


def _apex_state(temperature: float | None) -> str:
    if temperature is None:
        return "unknown"
    return "failed" if temperature < DEAD_BELOW_C else "ready"


def _sorted_entries(root: Path) -> list[Path]:
    try:
        return sorted(root.iterdir(), key=_natural_key)
    except OSError:
        return []


def _natural_key(path: Path) -> list[object]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii").strip().lower()
    except (OSError, UnicodeDecodeError):
        return None
