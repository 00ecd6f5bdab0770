"""The compiled ensemble graph (`ens compile`, `ens predict --graph`): a mixed torch + Keras ensemble
with per-class weights and class gains gives the pipeline's CSV byte for byte; stale graphs and
overrides fall back to the pipeline with a note; bad requests are one-line errors."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("keras")

from conftest import assert_unchanged, ens, one_line_error, snapshot
from export_checks import images_npz
from onnx_members import make_member
from tiny_nets import TinyNet, keras_net, trained_like

from ensemble.compiled.compiler import compile_ensemble
from ensemble.compiled.scorer import open_compiled
from ensemble.compiled.stamp import graph_path, read_stamp
from ensemble.inference.options import PredictOptions, resolve_options
from ensemble.inference.pipeline import open_pipeline
from ensemble.inference.scorer import Scored, final_labels
from ensemble.members.ensemblefile import EnsembleSpec, read_spec, write_spec
from ensemble.members.store import resolve_members

WEIGHTS = ((0.7, 0.2, 0.5, 0.6, 0.1), (0.3, 0.8, 0.5, 0.4, 0.6), (0.2, 0.5, 1.0, 0.3, 0.5))
GAINS = (1.0, 1.0, 1.4, 0.8, 3.0)


def write_ensemble(store, names, tta="flip", min_area=(0, 3, 3, 3, 3), gains=GAINS, weights=WEIGHTS):
    """models/ensemble.json for `names` with per-class weights and gains, as `ens fit` writes it."""
    members = resolve_members(list(names), store)
    spec = EnsembleSpec(
        members=tuple(names),
        member_sha256=tuple(m.sha256 for m in members),
        weights=weights[: len(names)],
        tta=tta,
        min_area=min_area,
        class_gain=gains,
    )
    return write_spec(store / "ensemble.json", spec)


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """A store of a PyTorch, a Keras and a plain-ONNX (opset 17) member, their ensemble file, and data."""
    root = tmp_path_factory.mktemp("compiled")
    data = images_npz(root / "data.npz", (32, 48), n_test=24)
    store = root / "models"
    torch.save(trained_like(TinyNet(), seed=3).state_dict(), root / "net.pt")
    result = ens("export", root / "net.pt", "--name", "torch_net", "--factory", "tiny_nets:TinyNet",
                 "--input-range", "0-1", "--data", data, "--out-dir", store)  # fmt: skip
    assert result.exit_code == 0, result.output
    keras_net(rescaling=False, softmax=True).save(root / "net.keras")
    result = ens("export", root / "net.keras", "--name", "keras_net", "--input-range", "0-1",
                 "--data", data, "--out-dir", store)  # fmt: skip
    assert result.exit_code == 0, result.output
    make_member(store / "plain.onnx", seed=5)
    write_ensemble(store, ("torch_net", "keras_net", "plain"))
    return root, store, data


def predict(store, data, out, *extra):
    result = ens("predict", "--models-dir", store, "--data", data, "--out", out, "--batch-size", 8, *extra)
    assert result.exit_code == 0, result.output
    manifest = json.loads(out.with_name(out.stem + ".manifest.json").read_text())
    return result, manifest


def test_mixed_torch_keras_graph_gives_the_pipeline_csv(mixed, tmp_path):
    root, store, data = mixed
    result = ens("compile", "--models-dir", store)
    assert result.exit_code == 0, result.output
    graph = graph_path(store / "ensemble.json")
    assert graph == store / "compiled" / "ensemble.onnx" and graph.is_file(), result.output
    stamp = read_stamp(graph)
    assert stamp.members == ("torch_net", "keras_net", "plain") and stamp.class_gain == GAINS
    assert ens("members", "--models-dir", store).exit_code == 0  # the graph is not taken for a member

    _, pipeline = predict(store, data, tmp_path / "pipeline.csv", "--graph", "pipeline")
    result, compiled = predict(store, data, tmp_path / "compiled.csv", "--graph", "compiled")
    assert pipeline["graph"]["name"] == "pipeline" and compiled["graph"]["name"] == "compiled", result.output
    assert compiled["graph"]["graph"] == str(graph) and "compiled graph" in result.output
    # on CPU, auto runs the pipeline (its per-member runtimes are the faster there), with a note
    result, auto = predict(store, data, tmp_path / "auto.csv")
    assert auto["graph"]["name"] == "pipeline" and "the compiled graph is used on a GPU" in result.output
    assert (tmp_path / "compiled.csv").read_bytes() == (tmp_path / "pipeline.csv").read_bytes()
    assert compiled["cleanup"]["min_area"] == [0, 3, 3, 3, 3]

    # the labels before cleanup, batch by batch, through the library: equal, and not all one class
    members = resolve_members(["torch_net", "keras_net", "plain"], store)
    options = resolve_options(members, read_spec(store / "ensemble.json"), PredictOptions(min_area=0))
    options = replace(options, min_area=np.zeros(5, np.int64))
    images = np.load(data)["test_set"].astype(np.uint8)
    ids = np.arange(len(images))
    reference = open_pipeline(members, options)
    engine = open_compiled(members, options, graph, want_scores=True)
    scored, output = (
        reference.score(ids, images, reference.timings),
        engine.score(ids, images, engine.timings),
    )
    np.testing.assert_array_equal(output.scores, scored.scores)
    np.testing.assert_array_equal(
        output.labels, final_labels(reference.description, scored, reference.timings)
    )
    assert len(np.unique(output.labels)) > 1


def test_save_probs_allow_background_and_hv(mixed, tmp_path):
    root, store, data = mixed
    graph = graph_path(store / "ensemble.json")
    assert ens("compile", "--models-dir", store, "--allow-background", "--tta", "hv").exit_code == 0
    outputs = {}
    for engine in ("pipeline", "compiled"):
        out = tmp_path / engine / "sub.csv"
        _, manifest = predict(store, data, out, "--graph", engine, "--allow-background", "--tta", "hv",
                              "--save-probs", tmp_path / engine / "probs")  # fmt: skip
        assert manifest["graph"]["name"] == engine
        outputs[engine] = [
            out.read_bytes(),
            *((tmp_path / engine / "probs" / f).read_bytes() for f in ("probs.npy", "ids.npy")),
        ]
    assert outputs["compiled"] == outputs["pipeline"]
    # the same graph does not serve a run without --allow-background: the pipeline runs, with a note
    result, manifest = predict(store, data, tmp_path / "plain.csv", "--tta", "hv")
    assert manifest["graph"]["name"] == "pipeline"
    assert "--allow-background is off in the run, on in the graph; running the pipeline" in result.output
    assert manifest["graph"]["notes"] and str(graph) in manifest["graph"]["notes"][0]


def test_stale_graph_is_not_used(mixed, tmp_path):
    root, store, data = mixed
    assert ens("compile", "--models-dir", store).exit_code == 0
    graph = graph_path(store / "ensemble.json")
    result, manifest = predict(
        store, data, tmp_path / "weights.csv", "--weights", "torch_net=1,keras_net=1,plain=1"
    )
    assert manifest["graph"]["name"] == "pipeline" and "weights differ" in result.output
    spec_text = (store / "ensemble.json").read_text()
    try:
        write_ensemble(store, ("torch_net", "keras_net", "plain"), min_area=(0, 5, 5, 5, 5))
        result, manifest = predict(store, data, tmp_path / "stale.csv")
        assert manifest["graph"]["name"] == "pipeline", result.output
        assert "the ensemble file changed since the graph was compiled; running the pipeline" in result.output
        before = snapshot(store, tmp_path)
        refused = ens(
            "predict",
            "--models-dir",
            store,
            "--data",
            data,
            "--out",
            tmp_path / "x.csv",
            "--graph",
            "compiled",
        )
        one_line_error(refused, "--graph compiled", "ensemble file changed", "`ens compile --ensemble")
        assert_unchanged(before, store, tmp_path)
    finally:
        (store / "ensemble.json").write_text(spec_text)
    stamp = read_stamp(graph)
    changed = replace(stamp, member_sha256=(stamp.member_sha256[0], "f" * 64, stamp.member_sha256[2]))
    assert stamp.mismatch(changed) == "member 'keras_net' changed since the graph was compiled"
    assert stamp.mismatch(stamp) is None


def test_compiled_engine_without_a_graph_and_overwrites_are_refused(mixed, tmp_path):
    root, store, data = mixed
    other = tmp_path / "models"
    other.mkdir()
    for name in ("torch_net.onnx", "keras_net.onnx", "plain.onnx", "ensemble.json"):
        (other / name).write_bytes((store / name).read_bytes())
    before = snapshot(other, tmp_path)
    args = ("predict", "--models-dir", other, "--data", data, "--out", tmp_path / "x.csv")
    one_line_error(ens(*args, "--graph", "compiled"), "no compiled graph at", "ens compile")
    one_line_error(
        ens(*args, "--members", "plain", "--graph", "compiled"), "no ensemble file", "--graph pipeline"
    )
    for target, label in (
        (other / "plain.onnx", "member 'plain'"),
        (other / "ensemble.json", "the ensemble file"),
    ):
        one_line_error(ens("compile", "--models-dir", other, "--out", target), "is the same file as", label)
    one_line_error(ens("compile", "--models-dir", tmp_path / "none"), "does not exist")
    assert_unchanged(before, other, tmp_path)
    (other / "compiled").mkdir()
    (other / "compiled" / "ensemble.onnx").write_bytes(b"not a graph")  # damaged: noted, not used
    result, manifest = predict(other, data, tmp_path / "sub.csv")
    assert manifest["graph"]["name"] == "pipeline" and "re-create it with `ens compile`" in result.output
    one_line_error(ens(*args, "--graph", "compiled"), "--graph compiled: cannot read compiled graph")


def test_members_needing_padding_fall_back_and_rgb_members_compile(tmp_path, tiny_npz):
    store = tmp_path / "models"
    make_member(store / "a.onnx", seed=1, size_multiple=16)
    make_member(store / "b.onnx", seed=2)
    write_ensemble(store, ("a", "b"))
    assert ens("compile", "--models-dir", store).exit_code == 0  # checked at 64x128, a multiple of 16
    result, manifest = predict(store, tiny_npz, tmp_path / "sub.csv")  # 8x12 images, padded to 16x16 for a
    assert manifest["graph"]["name"] == "pipeline"
    assert "member 'a' needs 8x12 images padded to 16x16" in result.output
    args = (
        "predict",
        "--models-dir",
        store,
        "--data",
        tiny_npz,
        "--out",
        tmp_path / "y.csv",
        "--graph",
        "compiled",
    )
    one_line_error(ens(*args), "needs 8x12 images padded to 16x16", "--graph pipeline")

    rgb = tmp_path / "rgb"
    make_member(rgb / "c.onnx", seed=3, channels=3)
    make_member(rgb / "d.onnx", seed=4, channels=3)
    write_ensemble(rgb, ("c", "d"))
    compiled = compile_ensemble(store=rgb)  # compares the graph with the pipeline on random RGB images
    assert compiled.stamp.channels == 3 and compiled.max_score_diff <= 1e-6
    members = resolve_members(["c", "d"], rgb)
    options = resolve_options(members, read_spec(rgb / "ensemble.json"))
    images = np.random.default_rng(0).integers(0, 256, (5, 20, 28, 3), dtype=np.uint8)
    ids = np.arange(5)
    reference = open_pipeline(members, options)
    engine = open_compiled(members, options, compiled.path)
    labels = final_labels(engine.description, engine.score(ids, images, engine.timings), engine.timings)
    expected = reference.score(ids, images, reference.timings)
    assert expected.labels is None and isinstance(expected, Scored)
    np.testing.assert_array_equal(labels, final_labels(reference.description, expected, reference.timings))
