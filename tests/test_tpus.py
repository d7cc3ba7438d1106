"""Edge TPU discovery on fake sysfs trees laid out as the kernel lays them out."""

from __future__ import annotations

import json
from pathlib import Path

from device.edgetpu import list_tpus, read_apex_temperature

from .cli_helpers import appliance


def usb_device(root: Path, name: str, vendor: str, product: str) -> None:
    entry = root / "bus/usb/devices" / name
    entry.mkdir(parents=True)
    (entry / "idVendor").write_text(vendor + "\n")
    (entry / "idProduct").write_text(product + "\n")


def apex(root: Path, index: int, millidegrees: str | None) -> None:
    entry = root / "class/apex" / f"apex_{index}"
    entry.mkdir(parents=True)
    if millidegrees is not None:
        (entry / "temp").write_text(millidegrees + "\n")


def test_empty_tree_lists_nothing(tmp_path: Path) -> None:
    assert list_tpus(tmp_path) == []


def test_usb_accelerators_before_and_after_initialisation(tmp_path: Path) -> None:
    usb_device(tmp_path, "usb1", "1d6b", "0002")  # a root hub
    usb_device(tmp_path, "2-1", "18d1", "9302")  # initialised Coral
    usb_device(tmp_path, "1-1.3", "046d", "0825")  # a webcam
    usb_device(tmp_path, "1-1.2", "1a6e", "089a")  # Coral before libedgetpu loaded its firmware
    (tmp_path / "bus/usb/devices/1-1.2:1.0").mkdir()  # an interface directory, no ids
    found = list_tpus(tmp_path)
    assert [(t.spec, t.state) for t in found] == [("usb:0", "uninitialised"), ("usb:1", "ready")]
    assert found[0].path.endswith("1-1.2") and found[1].path.endswith("2-1")
    assert all(t.temperature_c is None for t in found)  # the USB Accelerator has no sensor


def test_pcie_cards_with_temperature_and_a_dead_one(tmp_path: Path) -> None:
    apex(tmp_path, 0, "47250")
    apex(tmp_path, 1, "-89000")  # the driver's value after a fault
    apex(tmp_path, 2, None)  # no sensor file
    apex(tmp_path, 3, "garbage")
    found = list_tpus(tmp_path)
    assert [(t.spec, t.state, t.temperature_c) for t in found] == [
        ("pci:0", "ready", 47.25),
        ("pci:1", "failed", -89.0),
        ("pci:2", "unknown", None),
        ("pci:3", "unknown", None),
    ]


def test_mixed_usb_and_pcie(tmp_path: Path) -> None:
    usb_device(tmp_path, "3-1", "18d1", "9302")
    apex(tmp_path, 0, "61000")
    assert [t.spec for t in list_tpus(tmp_path)] == ["usb:0", "pci:0"]


def test_temperature_reader(tmp_path: Path) -> None:
    apex(tmp_path, 0, "85500")
    assert read_apex_temperature(tmp_path / "class/apex/apex_0") == 85.5
    assert read_apex_temperature(tmp_path / "nowhere") is None


def test_cli_lists_tpus_as_json(tmp_path: Path) -> None:
    apex(tmp_path, 0, "50000")
    result = appliance("tpus", "--json", "--sysfs-root", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [
        {
            "kind": "pci",
            "index": 0,
            "spec": "pci:0",
            "path": str(tmp_path / "class/apex/apex_0"),
            "state": "ready",
            "temperature_c": 50.0,
        }
    ]


def test_cli_on_the_real_sysfs() -> None:
    """On a machine without an Edge TPU (CI) this is an empty list and exit 0, not an error."""
    result = appliance("tpus", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [t.to_dict() for t in list_tpus(Path("/sys"))]
