"""Repairs around Keras' ONNX exporters, so transformer-style layers convert on both backends.

On the torch backend, Keras computes LayerNormalization with `F.layer_norm(x, x.shape[axes], ...)`;
traced with a dynamic input size, that shape is a tensor and torch's ONNX exporter fails on it
("Failed to export a node ... onnx::Gather"). During the export, `static_layer_norm` passes the
shape as integers: the shape of the layer's own weights (it is what they normalise), else the
operation written out (mean, variance) so any shape stays dynamic.

On the TensorFlow backend, tf2onnx writes an `Erfc` node for the exact gelu, which is no ONNX
operator; `replace_erfc` rewrites it as 1 - Erf(x), the same function.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import onnx
from onnx import helper, numpy_helper


@contextlib.contextmanager
def static_layer_norm() -> Iterator[None]:
    """Within the block, torch.nn.functional.layer_norm accepts a traced (tensor) normalised shape."""
    import torch
    import torch.nn.functional as functional

    original = functional.layer_norm

    def layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
        if all(isinstance(size, int) for size in normalized_shape):
            return original(x, normalized_shape, weight, bias, eps)
        if weight is not None:
            return original(x, tuple(weight.shape), weight, bias, eps)
        dims = tuple(range(-len(normalized_shape), 0))
        mean = x.mean(dim=dims, keepdim=True)
        variance = ((x - mean) ** 2).mean(dim=dims, keepdim=True)
        out = (x - mean) * torch.rsqrt(variance + eps)
        return out + bias if bias is not None else out

    functional.layer_norm = layer_norm
    try:
        yield
    finally:
        functional.layer_norm = original


def replace_erfc(model: onnx.ModelProto) -> int:
    """Rewrite every float `Erfc(x)` node of the main graph as `1 - Erf(x)`; return how many."""
    graph = model.graph
    standard = ("", "ai.onnx")
    found = [i for i, node in enumerate(graph.node) if node.op_type == "Erfc" and node.domain in standard]
    if not found:
        return 0
    one = _unique(graph, "ens_erfc_one")
    graph.initializer.append(numpy_helper.from_array(np.array(1.0, np.float32), one))
    for i in reversed(found):
        node = graph.node[i]
        erf = _unique(graph, f"{node.output[0]}_erf")
        replacement = [
            helper.make_node("Erf", [node.input[0]], [erf], name=f"{node.name}_erf"),
            helper.make_node("Sub", [one, erf], list(node.output), name=f"{node.name}_sub"),
        ]
        del graph.node[i]
        for offset, new in enumerate(replacement):
            graph.node.insert(i + offset, new)
    return len(found)


def _unique(graph: onnx.GraphProto, name: str) -> str:
    """`name`, suffixed if a tensor of the graph already has it."""
    taken = {init.name for init in graph.initializer} | {out for node in graph.node for out in node.output}
    candidate, n = name, 0
    while candidate in taken:
        n += 1
        candidate = f"{name}_{n}"
    return candidate
