"""Checks that need the real hardware: a Raspberry Pi camera and a Coral Edge TPU.

Deselected everywhere else (`-m 'not device'` in pyproject.toml). On a provisioned device run them with
`.venv/bin/python -m pytest -m device tests/test_on_device.py`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from device.camera.picamera2_source import Picamera2Source
from device.config import DetectorConfig, RuntimeConfig
from device.edgetpu import list_tpus
from device.images import read_image
from device.vision.manifest import Manifest
from device.vision.models import make_detector
from device.vision.runtime import InterpreterFactory

from .conftest import DATA

pytestmark = pytest.mark.device


def test_an_edge_tpu_is_listed_and_healthy() -> None:
    tpus = list_tpus(Path("/sys"))
    assert tpus, "no Edge TPU found in sysfs"
    assert all(t.state in ("ready", "uninitialised") for t in tpus), tpus


def test_the_real_delegate_runs_a_model_on_the_tpu(manifest: Manifest) -> None:
    factory = InterpreterFactory(RuntimeConfig(device="auto", fallback="fail"))
    loaded = factory.load(manifest, "ssdlite-person-int8")
    assert loaded.placement.accelerator == "edgetpu" and not loaded.placement.cpu_fallback
    found = make_detector(loaded, DetectorConfig()).detect(read_image(DATA / "astronaut.png"))
    assert found and found[0].label == "person"


def test_the_pi_camera_delivers_main_and_lores() -> None:
    source = Picamera2Source(width=640, height=480, lores_size=(300, 300))
    source.open()
    try:
        frame = source.read()
    finally:
        source.close()
    assert (
        frame.image.shape == (480, 640, 3) and frame.lores is not None and frame.lores.shape == (300, 300, 3)
    )
