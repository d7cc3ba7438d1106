"""Float32 and dynamic-range variants of an int8 model, by a flatbuffer edit (no TensorFlow).

The embedder's only source is Google's int8 EfficientNet-Lite0; no registry package ships its float
weights. So its float32 variant is the int8 graph re-expressed in float: every constant is
dequantised with its own scale and zero point, every activation becomes float32, and the QUANTIZE
op in front is dropped (the input becomes the float value the int8 input stood for). Its weights are
still the int8 ones, so it shows what int8 *activations* cost, not what int8 weights cost.

With keep_weights the convolution and fully-connected weights stay int8 (per-channel, zero point
0), which is TFLite's dynamic-range ("hybrid") form: int8 weights, float activations.
"""

from __future__ import annotations

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as fb

from .errors import BuildError

_NUMPY = {fb.TensorType.INT8: np.int8, fb.TensorType.UINT8: np.uint8, fb.TensorType.INT32: np.int32}
_WEIGHTED = {
    fb.BuiltinOperator.CONV_2D,
    fb.BuiltinOperator.DEPTHWISE_CONV_2D,
    fb.BuiltinOperator.FULLY_CONNECTED,
}
DESCRIPTION = {False: b"float32 (dequantised int8 embedder)", True: b"dynamic-range (int8 weights, float32)"}


def _op_code(model: fb.ModelT, op: fb.OperatorT) -> int:
    code = model.operatorCodes[op.opcodeIndex]
    # Old files keep small op codes in the deprecated field only.
    return int(max(code.builtinCode, code.deprecatedBuiltinCode))


def _real(tensor: fb.TensorT, raw: np.ndarray) -> np.ndarray:
    """A quantised constant as float32, per tensor or per channel."""
    quant = tensor.quantization
    values = raw.view(_NUMPY[tensor.type]).astype(np.float32).reshape(tensor.shape)
    scale = np.asarray(quant.scale, np.float32)
    zero = np.asarray(quant.zeroPoint, np.float32)
    if scale.size > 1:  # per channel: broadcast along the quantised dimension
        shape = [1] * values.ndim
        shape[quant.quantizedDimension] = scale.size
        scale, zero = scale.reshape(shape), zero.reshape(shape)
    return np.asarray((values - zero) * scale, np.float32)


def _drop_input_quantize(model: fb.ModelT, graph: fb.SubGraphT) -> None:
    """Remove the QUANTIZE op that feeds the graph input to the network; rewire its consumers."""
    first = graph.operators[0]
    if _op_code(model, first) != fb.BuiltinOperator.QUANTIZE or list(first.inputs) != list(graph.inputs):
        raise BuildError("dequantise: expected the graph to start with QUANTIZE of its input")
    source, target = int(first.inputs[0]), int(first.outputs[0])
    graph.operators = graph.operators[1:]
    for op in graph.operators:
        op.inputs = [source if i == target else int(i) for i in op.inputs]


def dequantise(int8_model: bytes, *, keep_weights: bool) -> bytes:
    """The float32 (or, with keep_weights, dynamic-range) re-expression of an int8 model."""
    model = fb.ModelT.InitFromObj(fb.Model.GetRootAsModel(int8_model, 0))
    graph = model.subgraphs[0]
    _drop_input_quantize(model, graph)
    used = {int(i) for op in graph.operators for i in [*op.inputs, *op.outputs]} | {
        *graph.inputs,
        *graph.outputs,
    }
    kept = set()
    if keep_weights:
        kept = {int(op.inputs[1]) for op in graph.operators if _op_code(model, op) in _WEIGHTED}
    for index, tensor in enumerate(graph.tensors):
        if index not in used:
            # The classifier head's weights, left behind by the cut: empty them rather than grow
            # them fourfold as float.
            model.buffers[tensor.buffer].data = None
            continue
        quant = tensor.quantization
        quantised = quant is not None and quant.scale is not None and len(quant.scale) > 0
        if not quantised or index in kept:
            if index in kept and np.any(np.asarray(quant.zeroPoint) != 0):
                raise BuildError(f"dequantise: weights {tensor.name!r} are not symmetric (zero point != 0)")
            continue
        data = model.buffers[tensor.buffer].data
        if data is not None and len(data) > 0:
            real = _real(tensor, np.asarray(data, np.uint8))
            model.buffers[tensor.buffer].data = np.frombuffer(real.tobytes(), np.uint8)
        tensor.type = fb.TensorType.FLOAT32
        tensor.quantization = None
    model.description = DESCRIPTION[keep_weights]
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())
