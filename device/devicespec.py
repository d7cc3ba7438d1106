"""The Edge TPU device spec: `auto | usb | usb:N | pci | pci:N | cpu`.

The same strings that libedgetpu takes in its `device` delegate option (and that pycoral's
make_interpreter passes through), plus `auto` (any TPU, CPU if none) and `cpu` (never a TPU).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_SPEC = re.compile(r"^(?P<kind>auto|cpu|usb|pci)(?::(?P<index>\d{1,3}))?$")


@dataclass(frozen=True)
class DeviceSpec:
    kind: str  # "auto", "cpu", "usb" or "pci"
    index: int | None = None

    @property
    def wants_tpu(self) -> bool:
        return self.kind != "cpu"

    def delegate_options(self) -> dict[str, str]:
        """Options for load_delegate; `auto` passes none so libedgetpu picks the first TPU it finds."""
        if self.kind in ("auto", "cpu"):
            return {}
        return {"device": str(self)}

    def __str__(self) -> str:
        return self.kind if self.index is None else f"{self.kind}:{self.index}"


def parse_device_spec(text: str) -> DeviceSpec:
    match = _SPEC.match(text.strip().lower())
    if match is None or (match["index"] is not None and match["kind"] in ("auto", "cpu")):
        raise ValueError(
            f"device spec {text!r} is not one of auto, cpu, usb, usb:N, pci, pci:N "
            "(N is the TPU's index as listed by `appliance tpus`)"
        )
    index = None if match["index"] is None else int(match["index"])
    return DeviceSpec(kind=match["kind"], index=index)
