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
    single-group ConvTranspose's) output into its weights and bias; returns how many were folded.

    One pass over the nodes: a convolution absorbs the chain of such operations after it.
    """
    overridable = {value.name for value in graph.input}  # an initializer that is also an input
    arrays = {init.name: init for init in graph.initializer if init.name not in overridable}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    outputs = {value.name for value in graph.output}
    names = (
        overridable | {init.name for init in graph.initializer} | {o for n in graph.node for o in n.output}
    )
    folded: list[onnx.NodeProto] = []
    for conv in graph.node:
        while (op := _foldable_reader(conv, arrays, readers, outputs)) is not None:
            if not _absorb(graph, conv, op, arrays, names):
                break
            conv.output[0] = op.output[0]
            folded.append(op)
    for op in folded:
        graph.node.remove(op)
    used = {name for node in graph.node for name in node.input}
    kept = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    return len(folded)


def _foldable_reader(conv, arrays, readers, outputs) -> onnx.NodeProto | None:
    """The one node reading `conv`'s output, when it is a convolution's output and that node an
    affine operation by a constant; None otherwise."""
    if conv.op_type not in CONVOLUTIONS or len(conv.input) < 2 or conv.input[1] not in arrays:
        return None
    if conv.op_type == "ConvTranspose" and any(a.name == "group" and a.i != 1 for a in conv.attribute):
        return None
    out = conv.output[0]
    if out in outputs or len(readers.get(out, [])) != 1:
        return None
    op = readers[out][0]
    if op.op_type not in AFFINE or len(op.input) != 2 or op.input[0] != out or op.input[1] not in arrays:
        return None
    return op


def _absorb(
    graph: onnx.GraphProto, conv: onnx.NodeProto, op: onnx.NodeProto, arrays: dict, names: set[str]
) -> bool:
    """Fold `op`'s constant into `conv`'s weights and bias; False (nothing changed) when it is not
    one float32 value per output channel."""
    weight = numpy_helper.to_array(arrays[conv.input[1]])
    axis = 1 if conv.op_type == "ConvTranspose" else 0  # ConvTranspose weights are (C_in, C_out, ...)
    channels = _per_channel(numpy_helper.to_array(arrays[op.input[1]]), weight.shape[axis], weight.ndim)
    has_bias = len(conv.input) > 2 and conv.input[2] != ""
    if weight.dtype != np.float32 or channels is None or (has_bias and conv.input[2] not in arrays):
        return False
    bias = numpy_helper.to_array(arrays[conv.input[2]]) if has_bias else np.zeros(weight.shape[axis])
    weight, bias = _apply(op.op_type, weight, bias.astype(np.float32), channels, axis)
    for index, array, suffix in ((1, weight, "w"), (2, bias, "b")):
        _set(graph, conv, index, array, f"{conv.name or conv.output[0]}_folded_{suffix}", arrays, names)
    return True


def _per_channel(constant: np.ndarray, channels: int, rank: int) -> np.ndarray | None:
    """The constant as one float32 value per output channel, when it is a scalar or broadcasts
    along the channel axis of the convolution's (N, C, ...) output of `rank` dimensions only,
    leaving its shape as it is."""
    if constant.dtype != np.float32 or constant.ndim > rank:
        return None
    if constant.size == 1:
        return np.full(channels, constant.reshape(()), np.float32)
    shape = (1,) * (rank - constant.ndim) + constant.shape
    if shape[0] == 1 and shape[1] == channels and all(size == 1 for size in shape[2:]):
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


def _set(
    graph: onnx.GraphProto,
    conv: onnx.NodeProto,
    index: int,
    array: np.ndarray,
    name: str,
    arrays: dict,
    names: set[str],
) -> None:
    """Point input `index` of `conv` at a new initializer holding `array`, under a name no tensor of
    the graph has (added to `arrays` and `names`)."""
    unique, n = name, 0
    while unique in names:
        n += 1
        unique = f"{name}_{n}"
    names.add(unique)
    arrays[unique] = numpy_helper.from_array(array.astype(np.float32), unique)
    graph.initializer.append(arrays[unique])
    if len(conv.input) > index:
        conv.input[index] = unique
    else:
        conv.input.append(unique)
