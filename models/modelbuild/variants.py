"""Every model file build.py writes: its quantisation, what its behaviour is checked against, and
whether it is committed to models/ or stays in the build directory.

The manifest (models/manifest.toml) lists the committed files; build.py writes a manifest of the
whole build (committed and build-only files) next to the built files, so the evaluation and the
report can be pointed at the build-only variants too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Quantization = Literal["float32", "dynamic-range", "int8"]


@dataclass(frozen=True)
class Variant:
    quantization: Quantization
    # The committed file whose outputs this one is compared with: itself for the originals, the
    # float32 or int8 original for a variant.
    reference: str
    committed: bool = True
    # Why a failing behaviour check is expected: the variant is built and measured in every build,
    # reported, and neither committed nor allowed to fail the build.
    known_broken: str = ""


SSD_FLOAT = "ssdlite_mbv2_person_float32.tflite"
CENTERNET_FLOAT = "centernet_mbv3_full_float32.tflite"
EMBEDDER_INT8 = "efficientnet_lite0_int8_embedder.tflite"

VARIANTS: dict[str, Variant] = {
    SSD_FLOAT: Variant("float32", SSD_FLOAT),
    "ssdlite_mbv2_person_int8.tflite": Variant("int8", "ssdlite_mbv2_person_int8.tflite"),
    "ssdlite_mbv2_person_dynamic.tflite": Variant("dynamic-range", SSD_FLOAT),
    CENTERNET_FLOAT: Variant("float32", CENTERNET_FLOAT),
    "centernet_mbv3_head_float32.tflite": Variant("float32", "centernet_mbv3_head_float32.tflite"),
    "centernet_mbv3_full_dynamic.tflite": Variant("dynamic-range", CENTERNET_FLOAT),
    "centernet_mbv3_full_int8.tflite": Variant(
        "int8",
        CENTERNET_FLOAT,
        committed=False,
        known_broken="post-training int8 breaks CenterNet's heatmap head (MODELS.md, models/README.md)",
    ),
    EMBEDDER_INT8: Variant("int8", EMBEDDER_INT8),
    "efficientnet_lite0_float32_embedder.tflite": Variant("float32", EMBEDDER_INT8, committed=False),
    "efficientnet_lite0_dynamic_embedder.tflite": Variant("dynamic-range", EMBEDDER_INT8),
}


def committed(filename: str) -> bool:
    """Labels and other non-model files are committed; model files as the table says."""
    variant = VARIANTS.get(filename)
    return variant is None or variant.committed
