"""Build the whole ensemble as one ONNX graph: pixels -> TTA views -> every member -> views
un-flipped and averaged -> weights x class gains -> argmax -> uint8 labels (+ the fused scores).

Each member's nodes and tensors are copied under a prefix `m{i}/`, after converting every member
to one default-domain opset (the highest among them, at least 13). The 1/V of the view average is
folded into the (C, 1, 1) weight constants; that is exact only when 1/V is a power of two (1, 2
or 4 views), so the graph's scores equal the pipeline's float32 scores bit for bit.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper, version_converter

from ensemble.errors import EnsError
from ensemble.members.member import Member

INPUT = "pixels"
LABELS = "labels"
SCORES = "scores"
MIN_OPSET = 13  # Split without a `split` input, ArgMax select_last_index, Slice steps
INT64_MIN = -(2**63)
VIEW_AXES = {"identity": (), "hflip": (3,), "vflip": (2,), "hvflip": (2, 3)}
DEFAULT_DOMAINS = ("", "ai.onnx")


def build_graph(
    members: Sequence[Member],
    merge_weights: np.ndarray,
    views: Sequence[str],
    allow_background: bool = False,
) -> onnx.ModelProto:
    """The compiled ensemble of `members` (in fusion order) with (M, C) float32 `merge_weights`
    (normalised weights times class gains), the named TTA `views` and the decoding rule."""
    n_views, n_classes = len(views), merge_weights.shape[1]
    if n_views & (n_views - 1):
        raise EnsError(
            f"{n_views} TTA views cannot be compiled exactly (1/{n_views} is not a power of two); "
            "use --tta none, flip or hv"
        )
    unknown = [v for v in views if v not in VIEW_AXES]
    if unknown:
        raise EnsError(f"TTA view {unknown[0]!r} cannot be compiled; the graph knows {', '.join(VIEW_AXES)}")
    models, ir_version, domains = aligned([load_model(m) for m in members], [m.name for m in members])
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    view_inputs = [_flip(INPUT, VIEW_AXES[v], f"view{k}", nodes, inits) for k, v in enumerate(views)]
    batch = view_inputs[0]
    if n_views > 1:
        nodes.append(helper.make_node("Concat", view_inputs, ["views"], axis=0, name="concat_views"))
        batch = "views"
    fused = None
    for index, model in enumerate(models):
        prefix = f"m{index}/"
        probs = _copy_member(model.graph, prefix, batch, nodes, inits, members[index].name)
        parts = [probs]
        if n_views > 1:
            parts = [f"{prefix}view{k}" for k in range(n_views)]
            extra = {"num_outputs": n_views} if domains[""] >= 18 else {}
            nodes.append(helper.make_node("Split", [probs], parts, axis=0, name=f"{prefix}split", **extra))
        total = _flip(parts[0], VIEW_AXES[views[0]], f"{prefix}unflip0", nodes, inits)
        for k in range(1, n_views):
            part = _flip(parts[k], VIEW_AXES[views[k]], f"{prefix}unflip{k}", nodes, inits)
            nodes.append(helper.make_node("Add", [total, part], [f"{prefix}sum{k}"], name=f"{prefix}add{k}"))
            total = f"{prefix}sum{k}"
        weight = np.asarray(merge_weights[index], np.float32) * np.float32(1.0 / n_views)
        inits.append(numpy_helper.from_array(weight.reshape(n_classes, 1, 1), f"weight{index}"))
        nodes.append(
            helper.make_node("Mul", [total, f"weight{index}"], [f"weighted{index}"], name=f"weigh{index}")
        )
        if fused is None:
            fused = f"weighted{index}"
        else:
            nodes.append(
                helper.make_node("Add", [fused, f"weighted{index}"], [f"fused{index}"], name=f"fuse{index}")
            )
            fused = f"fused{index}"
    _decode(fused, n_classes, allow_background, nodes, inits)
    channels = members[0].channels
    graph = helper.make_graph(
        nodes,
        "ens_compiled_ensemble",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["N", channels, "H", "W"])],
        [
            helper.make_tensor_value_info(LABELS, TensorProto.UINT8, ["N", "H", "W"]),
            helper.make_tensor_value_info(SCORES, TensorProto.FLOAT, ["N", n_classes, "H", "W"]),
        ],
        inits,
    )
    opsets = [helper.make_opsetid(domain, version) for domain, version in sorted(domains.items())]
    model = helper.make_model(graph, opset_imports=opsets, producer_name="ens compile")
    model.ir_version = ir_version
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise EnsError(
            f"the compiled graph fails onnx.checker ({str(exc).splitlines()[0]}); use --graph pipeline"
        ) from exc
    return model


def load_model(member: Member) -> onnx.ModelProto:
    """A member's model with its external data and local functions inlined into one graph."""
    model = onnx.load(str(member.path))
    if model.functions:
        model = onnx.inliner.inline_local_functions(model)
    return model


def default_opset(model: onnx.ModelProto) -> int:
    return max((o.version for o in model.opset_import if o.domain in DEFAULT_DOMAINS), default=1)


def aligned(
    models: list[onnx.ModelProto], names: Sequence[str]
) -> tuple[list[onnx.ModelProto], int, dict[str, int]]:
    """Every model converted to the highest default-domain opset among them (at least MIN_OPSET);
    the IR version and each other domain's opset are the highest found."""
    target = max(MIN_OPSET, *(default_opset(m) for m in models))
    out = []
    for model, name in zip(models, names, strict=True):
        if default_opset(model) != target:
            try:
                model = version_converter.convert_version(model, target)
            except Exception as exc:  # the converter raises bare RuntimeErrors and more
                reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise EnsError(
                    f"member {name!r} (opset {default_opset(model)}) cannot be converted to opset {target} "
                    f"to merge with the others ({reason}); "
                    "re-export it at that opset, or use --graph pipeline"
                ) from exc
        out.append(model)
    domains: dict[str, int] = {"": target}
    for model in out:
        for opset in model.opset_import:
            if opset.domain not in DEFAULT_DOMAINS:
                domains[opset.domain] = max(domains.get(opset.domain, 0), opset.version)
    return out, max(m.ir_version for m in out), domains


def _copy_member(
    graph: onnx.GraphProto,
    prefix: str,
    source: str,
    nodes: list[onnx.NodeProto],
    inits: list[onnx.TensorProto],
    name: str,
) -> str:
    """Append the member's nodes and initializers, every name under `prefix` and its one input fed
    from `source`; returns the name of its output."""
    init_names = {t.name for t in graph.initializer}
    inputs = [i.name for i in graph.input if i.name not in init_names]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise EnsError(
            f"member {name!r} has {len(inputs)} inputs and {len(graph.output)} outputs; the contract is one "
            "of each; re-export it with `ens export`"
        )

    def rename(tensor: str) -> str:
        if not tensor:
            return tensor  # an omitted optional input
        return source if tensor == inputs[0] else prefix + tensor

    for tensor in graph.initializer:
        copy = onnx.TensorProto()
        copy.CopyFrom(tensor)
        copy.name = rename(tensor.name)
        inits.append(copy)
    for position, node in enumerate(graph.node):
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
            raise EnsError(
                f"member {name!r} has a {node.op_type} node with a subgraph, which the compiled graph "
                "does not merge; use --graph pipeline"
            )
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        copy.name = prefix + (node.name or f"{node.op_type}_{position}")
        copy.input[:] = [rename(t) for t in node.input]
        copy.output[:] = [rename(t) for t in node.output]
        nodes.append(copy)
    return rename(graph.output[0].name)


def _constant(inits: list[onnx.TensorProto], name: str, values) -> str:
    """An int64 initializer `name` (added once)."""
    if not any(t.name == name for t in inits):
        inits.append(numpy_helper.from_array(np.array(values, np.int64), name))
    return name


def _flip(x: str, axes: tuple[int, ...], out: str, nodes: list, inits: list) -> str:
    """`x` reversed along `axes` by a Slice with step -1 (its own inverse); `x` itself for none."""
    if not axes:
        return x
    key = "_".join(map(str, axes))
    n = len(axes)
    args = [
        _constant(inits, f"flip{key}_starts", [-1] * n),
        _constant(inits, f"flip{key}_ends", [INT64_MIN] * n),
        _constant(inits, f"flip{key}_axes", list(axes)),
        _constant(inits, f"flip{key}_steps", [-1] * n),
    ]
    nodes.append(helper.make_node("Slice", [x, *args], [out], name=f"flip_{out}"))
    return out


def _decode(fused: str, n_classes: int, allow_background: bool, nodes: list, inits: list) -> None:
    """ArgMax over classes 1..C-1 (+1), or 0..C-1 with allow_background; the first maximum wins, as
    `decode`'s strict comparison does. Appends the `labels` and `scores` outputs."""
    candidates, best = fused, "best"
    if not allow_background:
        args = [
            _constant(inits, name, value)
            for name, value in (("c_first", [1]), ("c_end", [n_classes]), ("c_axis", [1]))
        ]
        nodes.append(helper.make_node("Slice", [fused, *args], ["candidates"], name="candidates"))
        candidates = "candidates"
    nodes.append(
        helper.make_node(
            "ArgMax", [candidates], [best], axis=1, keepdims=0, select_last_index=0, name="argmax"
        )
    )
    if not allow_background:
        nodes.append(
            helper.make_node("Add", [best, _constant(inits, "c_offset", 1)], ["best_class"], name="offset")
        )
        best = "best_class"
    nodes.append(helper.make_node("Cast", [best], [LABELS], to=TensorProto.UINT8, name="to_uint8"))
    nodes.append(helper.make_node("Identity", [fused], [SCORES], name="scores"))
