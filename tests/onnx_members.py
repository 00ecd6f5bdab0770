"""Tiny contract members built directly with onnx.helper, so inference tests need no torch.

Each is a real ONNX graph (scale, 3x3 conv, softmax over classes) run by real ONNX Runtime.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ensemble.course import CLASS_NAMES
from ensemble.members.contract import CONTRACT_VERSION, INPUT_NAME, OUTPUT_NAME, MemberInfo, metadata_dict


def make_member(
    path: Path,
    n_classes: int = 5,
    seed: int = 0,
    height: int | str = "H",
    width: int | str = "W",
    class_names: tuple[str, ...] | None = None,
    metadata: bool = True,
    nan: bool = False,
    channels: int = 1,
    size_multiple: int = 1,
) -> Path:
    """Write a small conv + softmax member with the full contract metadata."""
    rng = np.random.default_rng(seed)
    weight = rng.normal(0, 1.0, (n_classes, channels, 3, 3)).astype(np.float32)
    bias = rng.normal(0, 0.5, (n_classes,)).astype(np.float32)
    scale = np.array(1 / 255.0 if not nan else np.nan, np.float32)
    nodes = [
        helper.make_node("Mul", [INPUT_NAME, "scale"], ["scaled"]),
        helper.make_node("Conv", ["scaled", "weight", "bias"], ["logits"], pads=[1, 1, 1, 1]),
        helper.make_node("Mul", ["logits", "gain"], ["sharp"]),
        helper.make_node("Softmax", ["sharp"], [OUTPUT_NAME], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        f"tiny_{seed}",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", channels, height, width])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["N", n_classes, height, width])],
        [
            numpy_helper.from_array(scale, "scale"),
            numpy_helper.from_array(weight, "weight"),
            numpy_helper.from_array(bias, "bias"),
            numpy_helper.from_array(np.array(3.0, np.float32), "gain"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if metadata:
        info = MemberInfo(
            contract_version=CONTRACT_VERSION,
            class_names=class_names or CLASS_NAMES[:n_classes]
            if n_classes <= 5
            else tuple(f"c{i}" for i in range(n_classes)),
            source_framework="onnx",
            source_file="tests",
            source_sha256="0" * 64,
            exporter_versions=(("onnx", onnx.__version__),),
            parity_max_abs_err=0.0,
            opset=17,
            preprocessing="x/255",
            input_hw=(height if isinstance(height, int) else None, width if isinstance(width, int) else None),
            input_channels=channels,
            size_multiple=size_multiple,
        )
        onnx.helper.set_model_props(model, metadata_dict(info))
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path
