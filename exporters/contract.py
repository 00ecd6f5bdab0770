"""Fold a framework's conventions into an ONNX graph so it obeys the member contract.

One wrapper serves every framework: the raw graph's single input is fed from `pixels`
(float32 (N, C_in, H, W), raw 0..255, RGB when C_in is 3) through a copy of a gray channel into
R, G and B for an RGB net that joins grayscale members (`--gray-to-rgb`), a channel reversal for
BGR nets, the normalisation (per channel when given so) and an NCHW->NHWC transpose when the net is
channels-last; its chosen output goes through NHWC->NCHW, a bilinear resize to the input size when
it is smaller by an integer factor, and a softmax over classes when the net emits logits, into `probs`.
Unused outputs and the nodes feeding only them are dropped.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ensemble.errors import EnsError
from ensemble.members.contract import INPUT_NAME, OUTPUT_NAME, PREFIX, MemberInfo, metadata_dict
from exporters.preprocessing import Normalisation
from exporters.upsample import resize_nodes

MIN_OPSET = 13  # Softmax over one axis (earlier opsets flatten the trailing dimensions)
SUM_TOLERANCE = 1e-3


def is_probabilities(scores: np.ndarray) -> bool:
    """True when (N, C, H, W) scores are non-negative and sum to 1 over C at every pixel."""
    if not np.isfinite(scores).all() or scores.min() < -1e-6:
        return False
    return bool(np.abs(scores.sum(axis=1, dtype=np.float64) - 1.0).max() <= SUM_TOLERANCE)


def softmax(scores: np.ndarray, axis: int = 1) -> np.ndarray:
    """Numerically stable softmax in float32, the reference for a softmax appended to the graph."""
    shifted = scores - scores.max(axis=axis, keepdims=True)
    exp = np.exp(shifted)
    return (exp / exp.sum(axis=axis, keepdims=True)).astype(np.float32)


def opset_of(model: onnx.ModelProto) -> int:
    """The default-domain opset a graph was exported with."""
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def wrap_to_contract(
    raw: onnx.ModelProto,
    *,
    channels_last: bool,
    normalisation: Normalisation,
    add_softmax: bool,
    output_key: int,
    n_classes: int,
    hw: tuple[int, int],
    dynamic_hw: bool,
    channels: int = 1,
    upsample: int = 1,
    gray_to_rgb: bool = False,
) -> onnx.ModelProto:
    """Return a copy of `raw` with contract input/output names, layout, scaling, the resize of an
    output `upsample` times smaller than the input, and softmax."""
    if opset_of(raw) < MIN_OPSET:
        raise EnsError(
            f"the exported graph uses opset {opset_of(raw)}; members need opset >= {MIN_OPSET} "
            "(Softmax over one axis); upgrade the exporter"
        )
    model = onnx.ModelProto()
    model.CopyFrom(raw)
    graph = model.graph
    initializers = {init.name for init in graph.initializer}
    inputs = [value for value in graph.input if value.name not in initializers]
    if len(inputs) != 1:
        raise EnsError(
            f"the exported graph has {len(inputs)} inputs {[v.name for v in inputs]}; a member takes "
            "one image batch, so export a model with a single input"
        )
    if not 0 <= output_key < len(graph.output):
        raise EnsError(f"the exported graph has {len(graph.output)} outputs, none at index {output_key}")
    source_in, source_out = inputs[0].name, graph.output[output_key].name
    taken = _all_names(graph)
    for name in (INPUT_NAME, OUTPUT_NAME):
        if name in taken:
            raise EnsError(
                f"the exported graph already uses the tensor name {name!r}; rename it in the source"
            )

    kept_output = onnx.ValueInfoProto()
    kept_output.CopyFrom(graph.output[output_key])
    del graph.output[:]
    graph.output.append(kept_output)
    _prune(graph)
    graph.input.remove(inputs[0])

    fresh = _Namer(taken)
    pre, consts = _pre_nodes(source_in, normalisation, channels_last, fresh, gray_to_rgb)
    post, post_consts = _post_nodes(source_out, channels_last, add_softmax, upsample, fresh)
    nodes = pre + list(graph.node) + post
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(consts + post_consts)
    del graph.value_info[:]
    height, width = ("H", "W") if dynamic_hw else hw
    del graph.output[:]
    graph.input.insert(
        0, helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", channels, height, width])
    )
    graph.output.append(
        helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["N", n_classes, height, width])
    )
    return model


def attach_metadata(model: onnx.ModelProto, info: MemberInfo, extra: dict[str, str]) -> None:
    """Write the contract metadata (and extra `ens.` provenance entries) into metadata_props."""
    props = metadata_dict(info)
    props.update({PREFIX + key: value for key, value in extra.items() if value})
    helper.set_model_props(model, props)


def _pre_nodes(source_in, norm: Normalisation, channels_last: bool, fresh, gray_to_rgb=False) -> tuple:
    nodes, consts = [], []
    current = INPUT_NAME
    if gray_to_rgb:
        nodes.append(helper.make_node("Concat", [current] * 3, [fresh("ens_rgb")], axis=1))
        current = nodes[-1].output[0]
    if norm.channel_order == "bgr":
        const = fresh("ens_bgr")
        consts.append(numpy_helper.from_array(np.array([2, 1, 0], np.int64), const))
        nodes.append(helper.make_node("Gather", [current, const], [fresh("ens_pre")], axis=1))
        current = nodes[-1].output[0]
    for op, value in norm.steps():
        const = fresh("ens_const")
        array = np.array(value, np.float32)
        consts.append(numpy_helper.from_array(array.reshape(1, -1, 1, 1) if array.ndim else array, const))
        nodes.append(helper.make_node(op, [current, const], [fresh("ens_pre")]))
        current = nodes[-1].output[0]
    if channels_last:
        nodes.append(helper.make_node("Transpose", [current], [fresh("ens_nhwc")], perm=[0, 2, 3, 1]))
    if not nodes:
        nodes.append(helper.make_node("Identity", [current], [source_in]))
    nodes[-1].output[0] = source_in
    return nodes, consts


def _post_nodes(
    source_out, channels_last: bool, add_softmax: bool, upsample: int, fresh
) -> tuple[list, list]:
    nodes, consts = [], []
    current = source_out
    if channels_last:
        nodes.append(helper.make_node("Transpose", [current], [fresh("ens_nchw")], perm=[0, 3, 1, 2]))
        current = nodes[-1].output[0]
    if upsample > 1:  # logits are resized before the softmax, as the libraries' post-processing does
        resize, consts = resize_nodes(current, fresh("ens_upsampled"), upsample, fresh)
        nodes.extend(resize)
        current = nodes[-1].output[0]
    if add_softmax:
        nodes.append(helper.make_node("Softmax", [current], [fresh("ens_probs")], axis=1))
    if not nodes:
        nodes.append(helper.make_node("Identity", [current], [OUTPUT_NAME]))
    nodes[-1].output[0] = OUTPUT_NAME
    return nodes, consts


class _Namer:
    """Fresh tensor names that cannot collide with the graph's own."""

    def __init__(self, taken: set[str]) -> None:
        self.taken = set(taken)

    def __call__(self, stem: str) -> str:
        index = 0
        while f"{stem}_{index}" in self.taken:
            index += 1
        self.taken.add(f"{stem}_{index}")
        return f"{stem}_{index}"


def _node_inputs(node: onnx.NodeProto) -> set[str]:
    """Inputs of a node, including outer-scope names read by its subgraphs (If/Loop/Scan)."""
    names = set(node.input)
    for attr in node.attribute:
        for sub in list(attr.g.node if attr.HasField("g") else []) + [n for g in attr.graphs for n in g.node]:
            names |= _node_inputs(sub)
    return names


def _all_names(graph: onnx.GraphProto) -> set[str]:
    names = {v.name for v in graph.input} | {v.name for v in graph.output}
    names |= {init.name for init in graph.initializer}
    for node in graph.node:
        names |= _node_inputs(node) | set(node.output)
    return names


def _prune(graph: onnx.GraphProto) -> None:
    """Drop nodes and initializers that no kept output depends on."""
    needed = {v.name for v in graph.output}
    kept = []
    for node in reversed(graph.node):
        if needed & set(node.output):
            kept.append(node)
            needed |= _node_inputs(node)
    kept.reverse()
    del graph.node[:]
    graph.node.extend(kept)
    unused = [init for init in graph.initializer if init.name not in needed]
    for init in unused:
        graph.initializer.remove(init)
    for value in [v for v in graph.input if v.name not in needed and v.name in {i.name for i in unused}]:
        graph.input.remove(value)
