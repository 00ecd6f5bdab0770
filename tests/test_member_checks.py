"""Members and their run time refused when they are not what they claim: non-probability outputs,
forged metadata, empty or oversized files, duplicates, external data, damaged cache entries,
ONNX Runtime's own log, thread counts and unbounded CSV shapes. Every bad input is built here."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import onnx
import pytest
from conftest import assert_unchanged, ens, one_line_error, snapshot, write_npz
from onnx import TensorProto, helper, numpy_helper
from onnx_members import make_member

from ensemble.demo.synthetic import DemoSpec, write_demo
from ensemble.members.contract import INPUT_NAME, OUTPUT_NAME, PREFIX
from ensemble.members.ensemblefile import EnsembleSpec, write_spec
from ensemble.members.member import load_member


def swap_softmax(path, op: str):
    """Replace the member's final softmax by `op` (Identity: logits, Sigmoid: per-class scores)."""
    model = onnx.load(path)
    final = model.graph.node[-1]
    assert final.op_type == "Softmax"
    model.graph.node[-1].CopyFrom(helper.make_node(op, list(final.input), [OUTPUT_NAME]))
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def set_metadata(path, key: str, value: str | None):
    """Overwrite (or with None drop) one `ens.` metadata entry of a member file."""
    model = onnx.load(path)
    props = {p.key: p.value for p in model.metadata_props}
    props.pop(PREFIX + key, None)
    if value is not None:
        props[PREFIX + key] = value
    del model.metadata_props[:]
    helper.set_model_props(model, props)
    onnx.save(model, path)
    return path


def predict_args(store, data, out):
    return ["predict", "--data", data, "--models-dir", store, "--out", out, "--device", "cpu"]


# Item 5: outputs that are not probabilities


@pytest.mark.parametrize(("op", "seen"), [("Identity", "below 0"), ("Sigmoid", "class sums from")])
def test_predict_refuses_logit_and_sigmoid_members(tmp_path, tiny_npz, store, op, seen):
    swap_softmax(make_member(store / "scores.onnx", seed=5), op)
    before = snapshot(tmp_path)
    result = ens(*predict_args(store, tiny_npz, tmp_path / "sub.csv"), "--members", "a,scores")
    one_line_error(result, "member 'scores' does not output probabilities", seen, "ens export")
    assert_unchanged(before, tmp_path)


def test_members_shows_the_contract_check(tmp_path, store):
    swap_softmax(make_member(store / "logits.onnx", seed=5), "Identity")
    make_member(store / "fixed.onnx", seed=6, height=16, width=24)
    before = snapshot(tmp_path)
    result = ens("members", "--models-dir", store)
    assert result.exit_code == 0, result.output
    rows = {line.split("│")[1].strip(): line for line in result.output.splitlines() if line.count("│") > 5}
    assert "ok" in rows["a"] and "ok" in rows["fixed"] and "FAIL" in rows["logits"]
    (line,) = [line for line in result.output.splitlines() if line.startswith("contract:")]
    assert "'logits' on two random 64x128 images" in line and "below 0" in line
    assert_unchanged(before, tmp_path)


@pytest.fixture
def demo(tmp_path):
    path = tmp_path / "demo.npz"
    write_demo(path, DemoSpec(seed=3, n_train=24, n_test=6, height=16, width=32, n_aliens=0))
    return path


def fit_args(demo, store, tmp_path):
    cache = tmp_path / "cache"
    return [
        "--data",
        demo,
        "--models-dir",
        store,
        "--cache-dir",
        cache,
        "--val-fraction",
        "0.5",
        "--device",
        "cpu",
    ]


@pytest.mark.parametrize("command", ["fit", "score"])
def test_fit_and_score_refuse_non_probability_members(tmp_path, demo, store, command):
    swap_softmax(make_member(store / "sig.onnx", seed=5), "Sigmoid")
    before = snapshot(tmp_path)
    extra = ["--val"] if command == "score" else []
    result = ens(command, *extra, *fit_args(demo, store, tmp_path), "--members", "a,sig")
    one_line_error(result, "member 'sig' does not output probabilities", "class sums from")
    after = snapshot(tmp_path)
    assert not [path for path in after if path not in before and path.parent.name != "cache"]
    assert not [path for path in after if path.name.startswith("sig-")]  # nothing cached for it


# Item 11: damaged probability cache entries


def damage(path, kind: str) -> None:
    if kind == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif kind == "object":
        np.save(path, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    elif kind == "shape":
        np.save(path, np.zeros((2, 3), np.float16))
    elif kind == "nan":
        array = np.load(path)
        array[0, 1, 2, 3] = np.nan
        np.save(path, array)
    elif kind == "garbage":
        path.write_bytes(b"\x93NUMPY garbage")


@pytest.mark.parametrize("kind", ["truncated", "object", "shape", "nan", "garbage"])
def test_damaged_cache_entry_is_recomputed_with_a_warning(tmp_path, demo, store, kind):
    args = fit_args(demo, store, tmp_path)
    assert ens("fit", *args, "--folds", "0").exit_code == 0
    spec = (store / "ensemble.json").read_bytes()
    entry = sorted((tmp_path / "cache").glob("b-*.npy"))[0]
    clean = entry.read_bytes()
    damage(entry, kind)
    result = ens("fit", *args, "--folds", "0")
    assert result.exit_code == 0, result.output
    assert "warning:" in result.output and entry.name in result.output and "recomputing" in result.output
    assert entry.read_bytes() == clean and (store / "ensemble.json").read_bytes() == spec


# Items 9 and 21: metadata that `ens export` did not write


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("class_names", "not json"),
        ("class_names", "7"),
        ("class_names", '[["a", "b"], ["c"]]'),
        ("class_names", '"abcde"'),
        ("class_names", '["soil", "soil"]'),
        ("class_names", None),
        ("class_names", "[" * 100_000),
        ("exporter_versions", '["onnx", "1.17"]'),
        ("exporter_versions", '{"onnx": 1.17}'),
        ("parity_max_abs_err", "tiny"),
        ("parity_max_abs_err", "-1"),
        ("opset", "seventeen"),
        ("opset", "9" * 5000),
        ("val_miou", "1.5"),
    ],
)
def test_forged_metadata_is_one_line_error(tmp_path, key, value):
    path = set_metadata(make_member(tmp_path / "forged.onnx"), key, value)
    before = snapshot(tmp_path)
    line = one_line_error(ens("members", path), f"ens.{key}", "not written by `ens export`")
    assert len(line) < 400
    assert_unchanged(before, tmp_path)


# Items 12 and 20: empty and oversized files


def test_empty_onnx_is_not_a_model(tmp_path):
    (tmp_path / "empty.onnx").write_bytes(b"")
    before = snapshot(tmp_path)
    one_line_error(ens("members", tmp_path / "empty.onnx"), "'" + str(tmp_path / "empty.onnx"), "is empty")
    assert_unchanged(before, tmp_path)


def test_oversized_onnx_is_refused_before_reading(tmp_path):
    big = tmp_path / "big.onnx"
    with open(big, "wb") as handle:
        handle.truncate(7 << 30)  # sparse: no disk space, and never read
    before = {path: path.stat().st_size for path in tmp_path.iterdir()}
    one_line_error(ens("members", big), "7.0 GiB", "at most 2 GiB")
    assert {path: path.stat().st_size for path in tmp_path.iterdir()} == before


# Item 22: a store that does not exist


def test_missing_store_is_one_line_error(tmp_path, tiny_npz):
    missing = tmp_path / "nonexistent"
    one_line_error(ens("members", "--models-dir", missing), "member store", "does not exist", "--models-dir")
    one_line_error(ens(*predict_args(missing, tiny_npz, tmp_path / "s.csv")), "does not exist")
    assert not missing.exists()


# Item 15: the same member twice


def test_same_member_twice_is_refused(tmp_path, tiny_npz, store):
    shutil.copy(store / "a.onnx", tmp_path / "copy.onnx")
    before = snapshot(tmp_path)
    args = predict_args(store, tiny_npz, tmp_path / "sub.csv")
    one_line_error(ens(*args, "--members", f"a,{store / 'a.onnx'}"), "are the same file")
    one_line_error(ens(*args, "--members", f"a,b,{tmp_path / 'copy.onnx'}"), "have the same content")
    assert_unchanged(before, tmp_path)


def test_ensemble_file_listing_a_member_three_times_is_refused(tmp_path, tiny_npz, store):
    sha = load_member(store / "a.onnx").sha256
    spec = EnsembleSpec(("a", "a", "a"), (sha,) * 3, ((0.2,) * 5,) * 3, "none", (0,) * 5)
    write_spec(store / "ensemble.json", spec)
    before = snapshot(tmp_path)
    one_line_error(
        ens(*predict_args(store, tiny_npz, tmp_path / "sub.csv")), '"a", "a", "a"', "distinct member names"
    )
    assert_unchanged(before, tmp_path)


# Item 18: external data


def with_external_data(tmp_path, location: str | None = None):
    """A member whose weights live in `weights.bin` beside it (or at `location`, moved there)."""
    folder = tmp_path / "models"
    path = make_member(folder / "ext.onnx", seed=3)
    model = onnx.load(path)
    onnx.save_model(
        model, path, save_as_external_data=True, all_tensors_to_one_file=True, location="weights.bin",
        size_threshold=0,
    )  # fmt: skip
    if location is not None:
        target = (folder / location).resolve()
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(folder / "weights.bin", target)
        model = onnx.load(path, load_external_data=False)
        for tensor in model.graph.initializer:
            for entry in tensor.external_data:
                if entry.key == "location":
                    entry.value = location
        onnx.save(model, path)
    return path


def test_editing_external_data_changes_the_member(tmp_path, tiny_npz):
    path = with_external_data(tmp_path)
    member = load_member(path)
    spec = EnsembleSpec(("ext",), (member.sha256,), ((1.0,) * 5,), "none", (0,) * 5)
    write_spec(path.parent / "ensemble.json", spec)
    assert ens(*predict_args(path.parent, tiny_npz, tmp_path / "first.csv")).exit_code == 0
    weights = path.parent / "weights.bin"
    data = bytearray(weights.read_bytes())
    data[-4:] = np.float32(9.0).tobytes()  # the last tensor's last value
    weights.write_bytes(bytes(data))
    before = snapshot(tmp_path)
    result = ens(*predict_args(path.parent, tiny_npz, tmp_path / "second.csv"))
    one_line_error(result, "member 'ext'", "changed since")
    assert_unchanged(before, tmp_path)
    assert load_member(path).external_data == (path.parent.resolve() / "weights.bin",)


@pytest.mark.parametrize("where", ["../outside/weights.bin", "absolute"])
def test_external_data_outside_the_member_folder_is_refused(tmp_path, where):
    location = str(tmp_path / "elsewhere" / "weights.bin") if where == "absolute" else where
    path = with_external_data(tmp_path, location)
    before = snapshot(tmp_path)
    one_line_error(ens("members", path), "external data", "outside the member's folder")
    assert_unchanged(before, tmp_path)


# Item 19: ONNX Runtime's own error log and cut messages


def odd_size_member(path):
    """A contract member that fails on odd image sizes: x + upsample(maxpool(x)) before the softmax."""
    nodes = [
        helper.make_node("MaxPool", [INPUT_NAME], ["pooled"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Resize", ["pooled", "", "scales"], ["up"], mode="nearest"),
        helper.make_node("Add", [INPUT_NAME, "up"], ["sum"]),
        helper.make_node("Conv", ["sum", "weight"], ["logits"]),
        helper.make_node("Softmax", ["logits"], [OUTPUT_NAME], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "odd",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", 1, "H", "W"])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["N", 5, "H", "W"])],
        [
            numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales"),
            numpy_helper.from_array(np.linspace(-1, 1, 5, dtype=np.float32).reshape(5, 1, 1, 1), "weight"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    reference = onnx.load(make_member(path))
    helper.set_model_props(model, {p.key: p.value for p in reference.metadata_props})
    onnx.save(model, path)
    return path


def test_ort_log_stays_off_the_terminal_and_messages_are_whole(tmp_path, store, capfd):
    odd_size_member(store / "odd.onnx")
    rng = np.random.default_rng(0)
    data = write_npz(
        tmp_path / "odd.npz", rng.integers(0, 256, (4, 7, 13)), rng.integers(0, 5, (4, 7, 13)),
        rng.integers(0, 256, (3, 7, 13)),
    )  # fmt: skip
    before = snapshot(tmp_path)
    capfd.readouterr()
    result = ens(*predict_args(store, data, tmp_path / "sub.csv"), "--members", "odd")
    line = one_line_error(result, "member 'odd' failed on input (6, 1, 7, 13)", "Add node")
    assert "onnxruntime_src" not in line and "[ONNXRuntimeError]" not in line
    assert line.endswith("check the member accepts this image size and a dynamic batch")
    captured = capfd.readouterr()
    assert "onnxruntime" not in captured.err + captured.out, captured.err
    assert_unchanged(before, tmp_path)


# Item 13: thread counts beyond the machine


def test_threads_beyond_the_cores_are_capped_with_a_note(tmp_path, tiny_npz, store):
    cores = len(os.sched_getaffinity(0))
    out = tmp_path / "sub.csv"
    result = ens(*predict_args(store, tiny_npz, out), "--members", "a", "--threads", cores + 1)
    assert result.exit_code == 0, result.output
    assert f"--threads {cores + 1} capped to the {cores} cores available" in result.output
    manifest = json.loads(out.with_name("sub.manifest.json").read_text())
    assert manifest["runtime"]["threads"] == cores


# Item 12: `ens check --shape` bounded before allocating


def test_check_refuses_shapes_beyond_the_pixel_bound(tmp_path):
    csv = tmp_path / "sub.csv"
    csv.write_bytes(b"ImageId_ClassId,EncodedPixels\n0_1,1 2\n")
    before = snapshot(tmp_path)
    one_line_error(ens("check", csv, "--shape", "100000x100000", "--n-classes", "2"), "10,000,000,000 pixels")
    one_line_error(ens("check", csv, "--shape", "1x" + "9" * 5000), "is not HxW")
    assert_unchanged(before, tmp_path)


def test_check_refuses_label_maps_beyond_memory(tmp_path):
    csv = tmp_path / "sub.csv"
    rows = b"".join(b"%d_1,\n" % i for i in range(40_000))
    csv.write_bytes(b"ImageId_ClassId,EncodedPixels\n" + rows)
    before = snapshot(tmp_path)
    one_line_error(ens("check", csv, "--shape", "4096x4096", "--n-classes", "2"), "GiB of label maps")
    assert_unchanged(before, tmp_path)


def test_thread_requests_are_capped_in_the_session_factory():
    from ensemble.errors import EnsError
    from ensemble.members.session import session_options, thread_count

    cores = len(os.sched_getaffinity(0))
    assert thread_count(100_000) == (cores, f"--threads 100000 capped to the {cores} cores available")
    assert thread_count(1) == (1, None)
    assert session_options(100_000).intra_op_num_threads == cores
    with pytest.raises(EnsError, match="at least 1"):
        thread_count(0)


def test_ort_messages_are_shortened_between_words():
    from ensemble.members.session import ort_message

    words = [f"word{i}" for i in range(200)]
    text = ort_message(RuntimeError("[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : " + " ".join(words)))
    assert text.endswith(" …") and len(text) <= 240
    assert all(word in words for word in text[:-2].split())
