"""The model families: which files each one writes and how it builds them."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

from .centernet import build_centernet
from .embedder import build_embedder
from .ssd import build_ssd


@dataclass(frozen=True)
class Target:
    name: str
    outputs: tuple[str, ...]
    build: Callable[[argparse.Namespace], None]


TARGETS = (
    Target(
        "embedder",
        (
            "efficientnet_lite0_int8_embedder.tflite",
            "efficientnet_lite0_float32_embedder.tflite",
            "efficientnet_lite0_dynamic_embedder.tflite",
            "efficientnet_lite0_imagenet_labels.txt",
        ),
        lambda a: build_embedder(a.cache, a.out),
    ),
    Target(
        "centernet",
        (
            "centernet_mbv3_full_float32.tflite",
            "centernet_mbv3_head_float32.tflite",
            "centernet_mbv3_full_dynamic.tflite",
            "centernet_mbv3_full_int8.tflite",
            "coco80_labels.txt",
        ),
        lambda a: build_centernet(a.cache, a.out, a.work, a.images),
    ),
    Target(
        "ssd",
        (
            "ssdlite_mbv2_person_float32.tflite",
            "ssdlite_mbv2_person_int8.tflite",
            "ssdlite_mbv2_person_dynamic.tflite",
            "ssdlite_person_labels.txt",
        ),
        lambda a: build_ssd(a.cache, a.out, a.images),
    ),
)
