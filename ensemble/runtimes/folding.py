"""A member's per-channel affine operations folded into the convolution before them.

Keras exports batch normalisation as Sub, Mul and Add on a convolution's output, and ONNX Runtime
fuses none of them into the Conv: every layer then leaves its blocked (NCHWc) layout and comes back,
and the Relu stays a separate pass. Folding the constants into the weights and bias gives the same
function as plain Conv(+Relu) layers, rounded differently (about 1e-7 relative), which ONNX Runtime
runs much faster. The graph folded is the one ONNX Runtime's basic, hardware-independent
optimisations leave (constants folded, transposes cancelled), so the layout of the export does not
matter. Pure graph work on the model's arrays: nothing is run.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from ensemble.capture import quiet

AFFINE = ("Add", "Sub", "Mul", "Div")
CONVOLUTIONS = ("Conv", "ConvTranspose")


def folded_model(path: Path) -> tuple[bytes, int] | None:
    """The serialised member at `path` with its affine operations folded into its convolutions, and
    how many were folded; None when there is none to fold (or the model cannot be read)."""
    try:
        model = basic_optimised(path)
    except (OSError, ValueError, RuntimeError, onnx.onnx_cpp2py_export.checker.ValidationError):
        return None
    count = fold_affine(model.graph)
    return (model.SerializeToString(), count) if count else None


def basic_optimised(path: Path) -> onnx.ModelProto:
    """The model as ONNX Runtime's basic optimisations leave it (portable across machines)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.log_severity_level = 3
    with tempfile.TemporaryDirectory(prefix="ens-fold-") as scratch:
        options.optimized_model_filepath = str(Path(scratch) / "basic.onnx")
        with quiet():
            ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return onnx.load(options.optimized_model_filepath)


def fold_affine(graph: onnx.GraphProto) -> int:
    """Fold, in place, every Add/Sub/Mul/Div by a per-channel constant that alone reads a Conv's (or a
    single-group ConvTranspose's) output into its weights and bias; returns how many were folded."""
    folded = 0
    while (step := _fold_one(graph)) is not None:
        folded += step
    used = {name for node in graph.node for name in node.input}
    kept = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    return folded


def _fold_one(graph: onnx.GraphProto) -> int | None:
    """Fold the first foldable pair found; None when there is none."""
    arrays = {init.name: init for init in graph.initializer}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    outputs = {value.name for value in graph.output}
    overridable = {value.name for value in graph.input}  # an initializer that is also an input
    arrays = {name: init for name, init in arrays.items() if name not in overridable}
    for conv in graph.node:
        if conv.op_type not in CONVOLUTIONS or len(conv.input) < 2 or conv.input[1] not in arrays:
            continue
        transposed = conv.op_type == "ConvTranspose"
        if transposed and any(a.name == "group" and a.i != 1 for a in conv.attribute):
            continue
        out = conv.output[0]
        if out in outputs or len(readers.get(out, [])) != 1:
            continue
        op = readers[out][0]
        if op.op_type not in AFFINE or len(op.input) != 2 or op.input[0] != out or op.input[1] not in arrays:
            continue
        weight = numpy_helper.to_array(arrays[conv.input[1]])
        out_axis = 1 if transposed else 0  # ConvTranspose weights are (C_in, C_out, kH, kW)
        channels = _per_channel(numpy_helper.to_array(arrays[op.input[1]]), weight.shape[out_axis])
        if weight.dtype != np.float32 or channels is None:
            continue
        has_bias = len(conv.input) > 2 and conv.input[2] != ""
        if has_bias and conv.input[2] not in arrays:
            continue
        bias = (
            numpy_helper.to_array(arrays[conv.input[2]])
            if has_bias
            else np.zeros(weight.shape[out_axis], np.float32)
        )
        weight, bias = _apply(op.op_type, weight, bias.astype(np.float32), channels, out_axis)
        _set(graph, conv, 1, weight, f"{conv.name or out}_folded_w")
        _set(graph, conv, 2, bias, f"{conv.name or out}_folded_b")
        conv.output[0] = op.output[0]
        graph.node.remove(op)
        return 1
    return None


def _per_channel(constant: np.ndarray, channels: int) -> np.ndarray | None:
    """The constant as one float32 value per output channel, when it is a scalar or broadcasts
    along the channel axis of an (N, C, H, W) tensor only."""
    if constant.dtype != np.float32 or constant.ndim > 4:
        return None
    if constant.size == 1:
        return np.full(channels, constant.reshape(()), np.float32)
    shape = (1,) * (4 - constant.ndim) + constant.shape
    if shape[0] == 1 and shape[1] == channels and shape[2:] == (1, 1):
        return constant.reshape(channels)
    return None


def _apply(
    op: str, weight: np.ndarray, bias: np.ndarray, c: np.ndarray, axis: int
) -> tuple[np.ndarray, np.ndarray]:
    """Weights and bias of a convolution followed by `op` with the per-channel constant `c`, the
    output channels on `axis` of the weights."""
    scale = c.reshape((1,) * axis + (-1,) + (1,) * (weight.ndim - 1 - axis))
    if op == "Add":
        return weight, bias + c
    if op == "Sub":
        return weight, bias - c
    if op == "Mul":
        return weight * scale, bias * c
    return weight / scale, bias / c


def _set(graph: onnx.GraphProto, conv: onnx.NodeProto, index: int, array: np.ndarray, name: str) -> None:
    """Point input `index` of `conv` at a new initializer holding `array`."""
    taken = {init.name for init in graph.initializer}
    unique, n = name, 0
    while unique in taken:
        n += 1
        unique = f"{name}_{n}"
    graph.initializer.append(numpy_helper.from_array(array.astype(np.float32), unique))
    if len(conv.input) > index:
        conv.input[index] = unique
    else:
        conv.input.append(unique)
