"""The interpreter factory: integrity checks, Edge TPU placement through a real (stub) delegate
library, CPU fallback, and the errors an operator sees."""

from __future__ import annotations

import hashlib
import logging
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from device.config import DetectorConfig, RuntimeConfig
from device.devicespec import parse_device_spec
from device.errors import AcceleratorError, ModelError
from device.vision.manifest import Manifest
from device.vision.models import make_detector
from device.vision.preprocess import Image
from device.vision.runtime import InterpreterFactory

from .conftest import DATA, MODELS

EDGETPU_MODEL = DATA / "edgetpu" / "mobilenet_v2_1.0_224_quant_edgetpu.tflite"
Photo = Callable[[str], Image]


def manifest_with(tmp_path: Path, model_file: Path, *, cpu_twin: str | None = None) -> Manifest:
    """A copy of the real manifest plus one classifier-shaped entry `extra` for `model_file`."""
    shutil.copy(model_file, tmp_path / model_file.name)
    text = (MODELS / "manifest.toml").read_text().replace('file = "', f'file = "{MODELS}/')
    text = text.replace('labels = "', f'labels = "{MODELS}/')
    twin = f'cpu_twin = "{cpu_twin}"\n' if cpu_twin else ""
    sha = hashlib.sha256(model_file.read_bytes()).hexdigest()
    text += f"""
[[model]]
id = "extra"
version = "9.9.9"
kind = "embedder"
adapter = "embedder"
file = "{model_file.name}"
sha256 = "{sha}"
licence = "test"
{twin}input = {{ shape = [1, 224, 224, 3], dtype = "uint8" }}
source = {{ package = "test", version = "0" }}
"""
    (tmp_path / "manifest.toml").write_text(text)
    return Manifest.load(tmp_path / "manifest.toml")


def factory(**settings: object) -> InterpreterFactory:
    return InterpreterFactory(RuntimeConfig.model_validate(settings))


def test_sha256_mismatch_is_refused_naming_the_file(tmp_path: Path, manifest: Manifest) -> None:
    bad = manifest_with(tmp_path, MODELS / "efficientnet_lite0_int8_embedder.tflite")
    target = tmp_path / "efficientnet_lite0_int8_embedder.tflite"
    data = bytearray(target.read_bytes())
    data[5000] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(ModelError, match=r"efficientnet_lite0_int8_embedder\.tflite.*sha256"):
        factory(device="cpu").load(bad, "extra")


@pytest.mark.parametrize("content", [b"garbage " * 64, b""], ids=["garbage", "empty"])
def test_garbage_model_file_is_a_model_error_naming_it(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "src" / "broken.tflite"
    path.parent.mkdir()
    path.write_bytes(content)
    bad = manifest_with(tmp_path, path)
    with pytest.raises(ModelError, match=r"broken\.tflite.*cannot be loaded"):
        factory(device="cpu").load(bad, "extra")


def test_truncated_model_file_is_a_model_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "src" / "truncated.tflite"
    path.parent.mkdir()
    path.write_bytes((MODELS / "ssdlite_mbv2_person_int8.tflite").read_bytes()[:200_000])
    bad = manifest_with(tmp_path, path)
    with pytest.raises(ModelError, match=r"truncated\.tflite"):
        factory(device="cpu").load(bad, "extra")


def test_missing_model_file(tmp_path: Path) -> None:
    bad = manifest_with(tmp_path, MODELS / "efficientnet_lite0_int8_embedder.tflite")
    (tmp_path / "efficientnet_lite0_int8_embedder.tflite").unlink()
    with pytest.raises(ModelError, match="does not exist"):
        factory(device="cpu").load(bad, "extra")


def test_unknown_model_id_lists_the_known_ones(manifest: Manifest) -> None:
    with pytest.raises(ModelError, match=r"known models: (\S+, )*centernet-coco-float, "):
        factory(device="cpu").load(manifest, "no-such-model")


def test_edgetpu_model_without_a_tpu_is_refused(tmp_path: Path) -> None:
    with_tpu_model = manifest_with(tmp_path, EDGETPU_MODEL)
    with pytest.raises(ModelError) as info:
        factory(device="auto", delegate_library="libedgetpu-absent.so.1").load(with_tpu_model, "extra")
    message = str(info.value)
    assert "extra" in message and "mobilenet_v2_1.0_224_quant_edgetpu.tflite" in message
    assert "edgetpu-custom-op" in message and "cpu_twin" in message
    assert "libedgetpu-absent.so.1" in message  # says why there is no TPU


def test_edgetpu_model_uses_its_cpu_twin(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    twinned = manifest_with(tmp_path, EDGETPU_MODEL, cpu_twin="efficientnet-lite0-int8")
    with caplog.at_level(logging.WARNING):
        loaded = factory(device="cpu").load(twinned, "extra")
    assert loaded.entry.id == "efficientnet-lite0-int8"
    assert loaded.requested_id == "extra"
    assert "CPU twin efficientnet-lite0-int8" in caplog.text


def test_auto_without_tpu_falls_back_once_with_a_reason(
    manifest: Manifest, caplog: pytest.LogCaptureFixture
) -> None:
    runtime = factory(device="auto", delegate_library="libedgetpu-absent.so.1")
    with caplog.at_level(logging.WARNING):
        first = runtime.load(manifest, "ssdlite-person-int8")
        second = runtime.load(manifest, "efficientnet-lite0-int8")
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "libedgetpu-absent.so.1" in warnings[0].getMessage()
    for loaded in (first, second):
        assert loaded.placement.accelerator == "cpu"
        assert loaded.placement.cpu_fallback is True
        assert "libedgetpu-absent.so.1" in loaded.placement.reason
        assert loaded.status()["cpu_fallback"] is True


def test_fallback_fail_makes_a_missing_tpu_an_error(manifest: Manifest) -> None:
    runtime = factory(device="usb", fallback="fail", delegate_library="libedgetpu-absent.so.1")
    with pytest.raises(AcceleratorError, match="no Edge TPU for device spec usb"):
        runtime.load(manifest, "ssdlite-person-int8")


def test_cpu_spec_never_touches_the_delegate(
    manifest: Manifest, stub_delegate: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "delegate.log"
    monkeypatch.setenv("STUB_DELEGATE_LOG", str(log))
    loaded = factory(device="cpu", delegate_library=str(stub_delegate)).load(manifest, "ssdlite-person-int8")
    assert loaded.placement.accelerator == "cpu" and not loaded.placement.cpu_fallback
    assert not log.exists()


@pytest.mark.parametrize(
    ("spec", "expected_lines"),
    [
        ("usb:1", ["create options=1", "option device=usb:1"]),
        ("pci:0", ["create options=1", "option device=pci:0"]),
        ("usb", ["create options=1", "option device=usb"]),
        ("auto", ["create options=0"]),
    ],
)
def test_device_options_reach_the_delegate(
    manifest: Manifest,
    stub_delegate: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    photo: Photo,
    spec: str,
    expected_lines: list[str],
) -> None:
    log = tmp_path / "delegate.log"
    monkeypatch.setenv("STUB_DELEGATE_LOG", str(log))
    loaded = factory(device=spec, delegate_library=str(stub_delegate)).load(manifest, "ssdlite-person-int8")
    assert loaded.placement.accelerator == "edgetpu"
    assert loaded.placement.device == spec and not loaded.placement.cpu_fallback
    assert log.read_text().splitlines()[: len(expected_lines)] == expected_lines
    # The graph still runs with the delegate attached (the stub leaves every node to the CPU).
    found = make_detector(loaded, DetectorConfig()).detect(photo("astronaut"))
    assert found and found[0].label == "person" and found[0].score >= 0.8


def test_absent_tpu_reported_by_the_delegate_falls_back(
    manifest: Manifest, stub_delegate: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STUB_DELEGATE_LOG", str(tmp_path / "delegate.log"))
    monkeypatch.setenv("STUB_DELEGATE_MISSING", "pci:1")
    loaded = factory(device="pci:1", delegate_library=str(stub_delegate)).load(
        manifest, "ssdlite-person-int8"
    )
    assert loaded.placement.accelerator == "cpu" and loaded.placement.cpu_fallback
    assert "pci:1" in loaded.placement.reason
    with pytest.raises(AcceleratorError):
        factory(device="pci:1", fallback="fail", delegate_library=str(stub_delegate)).load(
            manifest, "ssdlite-person-int8"
        )


def test_warm_up_runs_before_serving(manifest: Manifest) -> None:
    loaded = factory(device="cpu", warmup_runs=2).load(manifest, "efficientnet-lite0-int8")
    assert loaded.warmup_ms > 0
    cold = factory(device="cpu", warmup_runs=0).load(manifest, "efficientnet-lite0-int8")
    assert cold.warmup_ms == 0


@pytest.mark.parametrize("text", ["auto", "cpu", "usb", "usb:0", "usb:12", "pci", "pci:3", "USB:1"])
def test_valid_device_specs(text: str) -> None:
    spec = parse_device_spec(text)
    assert str(spec) == text.lower()


@pytest.mark.parametrize("text", ["gpu", "usb:", "usb:x", "auto:1", "cpu:0", "pci:-1", ""])
def test_invalid_device_specs(text: str) -> None:
    with pytest.raises(ValueError, match="is not one of auto, cpu, usb, usb:N, pci, pci:N"):
        parse_device_spec(text)
