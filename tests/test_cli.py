"""The `appliance` command line, run as a real process, as an operator would run it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from device.vision.geometry import Box

from .cli_helpers import appliance
from .conftest import DATA, MODELS


def test_detect_json_finds_the_astronaut() -> None:
    result = appliance("detect", str(DATA / "astronaut.png"), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["model"]["id"] == "centernet-coco-float"
    assert report["model"]["accelerator"] == "cpu" and report["model"]["cpu_fallback"] is True
    (image,) = report["results"]
    person = image["detections"][0]
    assert person["label"] == "person" and person["score"] >= 0.5
    assert Box(*person["box"]).iou(Box(3, 34, 374, 509)) >= 0.8


def test_detect_with_the_int8_ssd_text_output() -> None:
    result = appliance("detect", str(DATA / "astronaut.png"), "--model", "ssdlite-person-int8")
    assert result.returncode == 0, result.stderr
    assert "model ssdlite-person-int8 1.0.0 on cpu" in result.stdout
    assert "person" in result.stdout and "0.9" in result.stdout


def test_bad_images_are_reported_and_the_rest_still_processed(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes((DATA / "coffee.png").read_bytes()[:300])
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    missing = tmp_path / "missing.png"
    result = appliance("detect", str(corrupt), str(DATA / "coffee.png"), str(text), str(missing), "--json")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    for bad in (corrupt, text, missing):
        assert str(bad) in result.stderr
    results = {r["image"]: r for r in json.loads(result.stdout)["results"]}
    assert "cup" in [d["label"] for d in results[str(DATA / "coffee.png")]["detections"]]
    assert all("error" in results[str(bad)] for bad in (corrupt, text, missing))


def test_embed_json_gives_the_expected_cosines() -> None:
    flipped = DATA / "astronaut_flipped.png"
    result = appliance(
        "embed",
        str(DATA / "astronaut.png"),
        str(DATA / "astronaut_flipped.png"),
        str(DATA / "coffee.png"),
        str(DATA / "chelsea.png"),
        "--json",
    )
    assert flipped.exists()
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["dim"] == 1280 and all(i["dim"] == 1280 for i in report["images"])
    cosines = {(Path(p["a"]).stem, Path(p["b"]).stem): p["cosine"] for p in report["cosines"]}
    assert len(cosines) == 6
    assert cosines[("astronaut", "astronaut_flipped")] >= 0.9
    others = [v for k, v in cosines.items() if k != ("astronaut", "astronaut_flipped")]
    assert max(others) <= 0.4


def test_embed_text_and_a_bad_image(tmp_path: Path) -> None:
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    result = appliance("embed", str(DATA / "astronaut.png"), str(bad), str(DATA / "rocket.png"))
    assert result.returncode == 1
    assert "dimension 1280" in result.stdout
    assert str(bad) in result.stdout and str(bad) in result.stderr
    assert "Traceback" not in result.stderr


def corrupt_manifest(tmp_path: Path) -> Path:
    shutil.copytree(MODELS, tmp_path / "models", ignore=shutil.ignore_patterns("build*", "*.py"))
    model = tmp_path / "models" / "centernet_mbv3_full_float32.tflite"
    model.chmod(0o644)
    model.write_bytes(model.read_bytes()[:1000])
    return tmp_path / "models" / "manifest.toml"


def test_corrupt_model_is_refused_naming_the_file(tmp_path: Path) -> None:
    manifest = corrupt_manifest(tmp_path)
    env = {"APPLIANCE_MODELS__MANIFEST": str(manifest)}
    result = appliance("detect", str(DATA / "astronaut.png"), env=env)
    assert result.returncode == 65
    assert "centernet_mbv3_full_float32.tflite" in result.stderr and "sha256" in result.stderr
    assert "Traceback" not in result.stderr
    debug = appliance("--debug", "detect", str(DATA / "astronaut.png"), env=env)
    assert debug.returncode == 65 and "Traceback" in debug.stderr


def test_no_traceback_from_a_failed_delegate_load() -> None:
    """LiteRT's Delegate.__del__ raises AttributeError after a failed load; operators must not see it."""
    result = appliance("detect", str(DATA / "coffee.png"), env={"APPLIANCE_RUNTIME__DEVICE": "usb"})
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and "AttributeError" not in result.stderr
    assert result.stderr.count("WARNING") == 1


def test_bad_config_exits_78(tmp_path: Path) -> None:
    result = appliance("detect", str(DATA / "astronaut.png"), env={"APPLIANCE_RUNTIME__DEVICE": "gpu"})
    assert result.returncode == 78
    assert "APPLIANCE_RUNTIME__DEVICE" in result.stderr


def test_console_script_and_module_are_the_same() -> None:
    script = Path(sys.executable).parent / "appliance"
    assert script.exists(), "pip install -e . provides the appliance console script"
    result = subprocess.run([str(script), "--version"], capture_output=True, text=True, check=False)
    assert result.returncode == 0 and result.stdout.startswith("appliance ")
    assert appliance("--version").stdout == result.stdout
