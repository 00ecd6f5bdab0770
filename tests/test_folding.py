"""Affine operations folded into convolutions (`ensemble.runtimes.folding`) and `--runtime auto`
running a member's folded graph: real ONNX graphs run by real ONNX Runtime sessions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import ens, write_npz
from onnx import TensorProto, helper, numpy_helper
from onnx_members import make_member

from ensemble.data.datasets import open_dataset
from ensemble.data.sources import make_source
from ensemble.inference.options import PredictOptions
from ensemble.inference.pipeline import open_pipeline
from ensemble.members.contract import INPUT_NAME
from ensemble.members.member import load_member
from ensemble.runtimes.choice import FOLDED, ORT
from ensemble.runtimes.folding import fold_affine, folded_model
from ensemble.submission.io import read_submission

MODELS = Path(__file__).resolve().parents[1] / "models"
RNG = np.random.default_rng(3)


def const(name: str, shape: tuple[int, ...]) -> onnx.TensorProto:
    return numpy_helper.from_array(RNG.normal(1.0, 0.3, shape).astype(np.float32), name)


def write_graph(
    path: Path, nodes: list, initializers: list, out_channels: int = 4, inputs: list | None = None
) -> Path:
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 8, 12]), *(inputs or [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def run(model: Path | bytes, x: np.ndarray) -> np.ndarray:
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def test_batch_norm_after_conv_and_bias_after_conv_transpose_fold_to_the_same_function(tmp_path):
    """Keras's Conv -> Sub -> Mul -> Add -> Relu, and ConvTranspose -> Add -> Div."""
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Sub", ["c", "mean"], ["s"]),
        helper.make_node("Mul", ["s", "scale"], ["m"]),
        helper.make_node("Add", ["m", "beta"], ["a"]),
        helper.make_node("Relu", ["a"], ["r"]),
        helper.make_node("ConvTranspose", ["r", "wt", "bt"], ["t"], strides=[2, 2], kernel_shape=[2, 2]),
        helper.make_node("Add", ["t", "shift"], ["u"]),
        helper.make_node("Div", ["u", "two"], ["y"]),
    ]
    inits = [
        const("w", (4, 2, 3, 3)),
        const("mean", (1, 4, 1, 1)),
        const("scale", (4, 1, 1)),
        const("beta", (1, 4, 1, 1)),
        const("wt", (4, 3, 2, 2)),
        const("bt", (3,)),
        const("shift", (1, 3, 1, 1)),
        numpy_helper.from_array(np.array(2.0, np.float32), "two"),
    ]
    path = write_graph(tmp_path / "bn.onnx", nodes, inits)
    folded = folded_model(path)
    assert folded is not None
    model, count = folded
    assert count == 5
    assert [n.op_type for n in onnx.load_from_string(model).graph.node] == ["Conv", "Relu", "ConvTranspose"]
    x = RNG.uniform(0, 255, (3, 2, 8, 12)).astype(np.float32)
    expected = run(path, x)
    got = run(model, x)
    assert got.shape == expected.shape == (3, 3, 16, 24)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize(
    "case",
    ["constant_first", "spatial_constant", "two_readers", "overridable_constant", "no_convolution"],
)
def test_what_is_not_a_per_channel_affine_of_one_conv_output_is_left_alone(tmp_path, case):
    conv = helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1])
    inits = [const("w", (4, 2, 3, 3)), const("k", (1, 4, 1, 1))]
    inputs = None
    if case == "constant_first":  # k - conv(x) is not an affine of the output with a positive scale
        nodes = [conv, helper.make_node("Sub", ["k", "c"], ["y"])]
    elif case == "spatial_constant":  # varies over the image, not per channel
        inits[1] = const("k", (1, 1, 8, 12))
        nodes = [conv, helper.make_node("Add", ["c", "k"], ["y"])]
    elif case == "two_readers":  # the conv output is used unscaled elsewhere
        nodes = [conv, helper.make_node("Mul", ["c", "k"], ["m"]), helper.make_node("Add", ["m", "c"], ["y"])]
    elif case == "overridable_constant":  # an initializer that is also an input can be fed at run time
        inputs = [helper.make_tensor_value_info("k", TensorProto.FLOAT, [1, 4, 1, 1])]
        nodes = [conv, helper.make_node("Mul", ["c", "k"], ["y"])]
    else:
        nodes = [helper.make_node("Mul", ["x", "k2"], ["y"])]
        inits = [const("k2", (1, 2, 1, 1))]
    path = write_graph(tmp_path / f"{case}.onnx", nodes, inits, inputs=inputs)
    model = onnx.load(str(path))
    assert fold_affine(model.graph) == 0


def test_a_one_dimensional_convolution_folds_and_a_rank_raising_constant_does_not(tmp_path):
    """Per channel means along axis 1 of the convolution's own rank: (1, C, 1) for a 1-D one; a
    scalar of higher rank would broadcast the output to more dimensions and is left alone."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 10])
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1]),
        helper.make_node("Mul", ["c", "k"], ["m"]),
        helper.make_node("Add", ["m", "one"], ["y"]),
    ]
    inits = [
        const("w", (4, 2, 3)),
        const("k", (1, 4, 1)),
        numpy_helper.from_array(np.ones((1, 1, 1, 1), np.float32), "one"),
    ]
    graph = helper.make_graph(
        nodes, "g", [x], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "conv1d.onnx"
    onnx.save(model, str(path))
    folded = onnx.load(str(path))
    assert fold_affine(folded.graph) == 1
    assert [n.op_type for n in folded.graph.node] == ["Conv", "Add"]
    pixels = RNG.uniform(0, 255, (3, 2, 10)).astype(np.float32)
    expected = run(path, pixels)
    got = run(folded.SerializeToString(), pixels)
    assert got.shape == expected.shape == (1, 3, 4, 10)  # the Add raised the rank, as before folding
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)


def test_the_demo_keras_member_folds_and_keeps_its_outputs():
    path = MODELS / "keras_unet.onnx"
    folded = folded_model(path)
    assert folded is not None and folded[1] >= 28  # batch norm (Sub, Mul, Add) after each of its convolutions
    ops = {n.op_type for n in onnx.load_from_string(folded[0]).graph.node}
    assert "Sub" not in ops
    pixels = RNG.uniform(0, 255, (8, 1, 64, 128)).astype(np.float32)
    before = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {INPUT_NAME: pixels}
    )[0]
    after = ort.InferenceSession(folded[0], providers=["CPUExecutionProvider"]).run(
        None, {INPUT_NAME: pixels}
    )[0]
    assert np.abs(after - before).max() < 1e-4
    assert (after.argmax(1) == before.argmax(1)).mean() >= 0.9999
    assert folded_model(MODELS / "unet.onnx") is None  # ONNX Runtime already fuses its convolutions


def make_foldable_member(path: Path, seed: int) -> Path:
    """A contract member whose convolution is followed by a per-channel Sub, as Keras exports do."""
    make_member(path, seed=seed)
    model = onnx.load(str(path))
    graph = model.graph
    for node in graph.node:
        if node.op_type == "Mul" and node.input[0] == "logits":
            node.input[0] = "shifted"
    sub = helper.make_node("Sub", ["logits", "shift"], ["shifted"])
    index = next(i for i, n in enumerate(graph.node) if n.op_type == "Conv") + 1
    graph.node.insert(index, sub)
    shift = np.random.default_rng(seed).normal(0, 0.5, (1, 5, 1, 1)).astype(np.float32)
    graph.initializer.append(numpy_helper.from_array(shift, "shift"))
    onnx.save(model, str(path))
    return path


def test_auto_runs_the_folded_graph_when_it_is_the_fastest(tmp_path, monkeypatch):
    store = tmp_path / "models"
    for seed, name in enumerate("ab"):
        make_foldable_member(store / f"{name}.onnx", seed)
    rng = np.random.default_rng(4)
    data = write_npz(
        tmp_path / "data.npz",
        rng.integers(0, 256, (4, 16, 24)),
        rng.integers(0, 5, (4, 16, 24)),
        rng.integers(0, 256, (21, 16, 24)),
    )
    cache_dir = tmp_path / "cache"
    monkeypatch.setenv("ENS_CACHE", str(cache_dir))
    members = [load_member(store / f"{name}.onnx") for name in "ab"]
    options = PredictOptions(batch_size=8, device="cpu", tta="flip", workers=2)
    source = make_source(open_dataset(data), "test")
    ensemble = open_pipeline(members, options, source, runtime="auto", min_images=0)
    assert all(c.how == "measured" and FOLDED in c.seconds for c in ensemble.choices)
    # as measured on a machine where the folded graph is the faster: the cached times decide
    cache = cache_dir / "runtimes.json"
    entries = json.loads(cache.read_text())
    for entry in entries.values():
        entry["seconds"] = {
            name: (1.0 if name == ORT else 0.5 if name == FOLDED else 2.0) for name in entry["seconds"]
        }
    cache.write_text(json.dumps(entries))

    out = {}
    for runtime in ("ort", "auto"):
        out[runtime] = tmp_path / f"{runtime}.csv"
        result = ens(
            "predict", "--members", "a,b", "--models-dir", store, "--data", data, "--tta", "flip",
            "--batch-size", "8", "--workers", "2", "--runtime", runtime, "--out", out[runtime],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
    manifest = json.loads(out["auto"].with_name("auto.manifest.json").read_text())
    for member in manifest["members"]:
        choice = member["runtime"]
        assert (choice["runtime"], choice["how"], choice["folded"]) == ("onnxruntime", "cached", 2)
        assert choice["parity_max_abs_err"] <= 1e-4
    _, ort_labels, _ = read_submission(out["ort"], (16, 24), 5)
    _, folded_labels, _ = read_submission(out["auto"], (16, 24), 5)
    assert (ort_labels == folded_labels).mean() >= 0.9999
