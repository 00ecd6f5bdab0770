"""`ens predict` end to end on tiny members, checked against an independent recomputation."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
from onnx_members import make_member
from typer.testing import CliRunner

from ensemble.cli import app
from ensemble.submission.io import read_submission

runner = CliRunner()


@pytest.fixture
def store(tmp_path):
    for seed, name in enumerate(["a", "b", "c"]):
        make_member(tmp_path / "models" / f"{name}.onnx", seed=seed)
    return tmp_path / "models"


def independent_probs(store, names, weights, images, flip=True):
    """ORT per member, manual flips, weighted mean."""
    x = images.astype(np.float32)[:, None]
    fused = 0.0
    for name, weight in zip(names, weights, strict=True):
        session = ort.InferenceSession(str(store / f"{name}.onnx"), providers=["CPUExecutionProvider"])
        probs = session.run(None, {"pixels": x})[0].astype(np.float64)
        if flip:
            flipped = session.run(None, {"pixels": np.ascontiguousarray(x[..., ::-1])})[0]
            probs = (probs + flipped[..., ::-1]) / 2
        fused = fused + weight * probs
    return fused / sum(weights)


def independent_labels(store, names, weights, images, flip=True):
    """Argmax over classes 1..C-1 of the independent fused probabilities."""
    return np.argmax(independent_probs(store, names, weights, images, flip)[:, 1:], axis=1) + 1


def predict(args):
    result = runner.invoke(app, ["predict", *args])
    assert result.exit_code == 0, result.output
    return result


@pytest.mark.parametrize("fmt", ["rle", "flat"])
def test_matches_independent_recomputation(tmp_path, tiny_npz, store, fmt):
    out = tmp_path / "sub.csv"
    predict(
        [
            "--members",
            "a,b,c",
            "--weights",
            "a=0.5,b=0.3,c=0.2",
            "--tta",
            "flip",
            "--min-area",
            "0",
            "--data",
            str(tiny_npz),
            "--models-dir",
            str(store),
            "--format",
            fmt,
            "--out",
            str(out),
            "--batch-size",
            "4",
        ]
    )
    ids, labels, detected = read_submission(out, (8, 12), 5)
    assert detected == fmt
    images = np.load(tiny_npz)["test_set"]
    np.testing.assert_array_equal(ids, np.arange(len(images)))
    np.testing.assert_array_equal(labels, independent_labels(store, "abc", [0.5, 0.3, 0.2], images))
    manifest = json.loads((tmp_path / "sub.manifest.json").read_text())
    assert [m["name"] for m in manifest["members"]] == ["a", "b", "c"]
    assert manifest["weights"]["a"][0] == pytest.approx(0.5)
    assert manifest["tta"] == "flip" and manifest["data"]["n_images"] == 6


def test_class_gains_scale_scores_before_the_argmax(tmp_path, tiny_npz, store):
    out = tmp_path / "gain.csv"
    args = ["--members", "a,b", "--tta", "none", "--class-gain", "4=3,2=0.5", "--save-probs", tmp_path / "p"]
    predict([str(a) for a in args] + ["--data", str(tiny_npz), "--models-dir", str(store), "--out", str(out)])
    _, labels, _ = read_submission(out, (8, 12), 5)
    images = np.load(tiny_npz)["test_set"]
    probs = independent_probs(store, "ab", [1, 1], images, flip=False)
    gained = probs * np.array([1, 1, 0.5, 1, 3])[None, :, None, None]
    np.testing.assert_array_equal(labels, np.argmax(gained[:, 1:], axis=1) + 1)
    assert not np.array_equal(labels, np.argmax(probs[:, 1:], axis=1) + 1), "gains must change some labels"
    np.testing.assert_allclose(np.load(tmp_path / "p" / "probs.npy"), probs, atol=1e-3)
    manifest = json.loads((tmp_path / "gain.manifest.json").read_text())
    assert manifest["decode"]["class_gain"] == [1, 1, 0.5, 1, 3]


def test_rerun_is_byte_identical(tmp_path, tiny_npz, store):
    args = ["--data", str(tiny_npz), "--models-dir", str(store), "--min-area", "3"]
    predict([*args, "--out", str(tmp_path / "one.csv")])
    predict([*args, "--out", str(tmp_path / "two.csv"), "--batch-size", "5"])
    assert (tmp_path / "one.csv").read_bytes() == (tmp_path / "two.csv").read_bytes()


def test_validation_split_and_saved_probabilities(tmp_path, tiny_npz, store):
    out = tmp_path / "val.csv"
    predict(
        [
            "--data",
            str(tiny_npz),
            "--models-dir",
            str(store),
            "--split",
            "val",
            "--val-fraction",
            "0.5",
            "--tta",
            "none",
            "--out",
            str(out),
            "--save-probs",
            str(tmp_path / "probs"),
        ]
    )
    ids, labels, _ = read_submission(out, (8, 12), 5)
    assert len(ids) == 6 and np.all(np.diff(ids) > 0)
    images = np.load(tiny_npz)["training_set"][ids, 0]
    np.testing.assert_array_equal(labels, independent_labels(store, "abc", [1, 1, 1], images, flip=False))
    saved_ids = np.load(tmp_path / "probs" / "ids.npy")
    probs = np.load(tmp_path / "probs" / "probs.npy")
    assert probs.dtype == np.float16 and probs.shape == (6, 5, 8, 12)
    np.testing.assert_array_equal(saved_ids, ids)
    expected = independent_probs(store, "abc", [1, 1, 1], images, flip=False)
    np.testing.assert_allclose(probs, expected, atol=1e-3)


def run_error(args):
    result = runner.invoke(app, ["predict", *args])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    return lines[0]


def test_unknown_member_lists_available(tmp_path, tiny_npz, store):
    line = run_error(["--members", "a,zzz", "--data", str(tiny_npz), "--models-dir", str(store)])
    assert "unknown member 'zzz'" in line and "available: a, b, c" in line


def test_members_with_different_class_counts(tmp_path, tiny_npz, store):
    make_member(store / "four.onnx", n_classes=4)
    line = run_error(["--members", "a,four", "--data", str(tiny_npz), "--models-dir", str(store)])
    assert "predicts 4 classes" in line


def test_member_smaller_than_the_images_is_refused(tmp_path, tiny_npz, store):
    make_member(store / "fixed.onnx", height=4, width=16)
    line = run_error(["--members", "fixed", "--data", str(tiny_npz), "--models-dir", str(store)])
    assert "height 4 at most" in line and "8x12 images" in line and "dynamic H and W" in line


def test_nan_output_leaves_no_csv(tmp_path, tiny_npz, store):
    make_member(store / "broken.onnx", nan=True)
    out = tmp_path / "sub.csv"
    line = run_error(
        [
            "--members",
            "a,broken",
            "--data",
            str(tiny_npz),
            "--models-dir",
            str(store),
            "--out",
            str(out),
        ]
    )
    assert "'broken' produced NaN" in line
    assert not out.exists() and list(tmp_path.glob("*.csv*")) == []


def test_unwritable_output_path(tmp_path, tiny_npz, store):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    line = run_error(["--data", str(tiny_npz), "--models-dir", str(store), "--out", str(blocker / "s.csv")])
    assert "cannot write" in line


def test_bad_option_values(tmp_path, tiny_npz, store):
    base = ["--data", str(tiny_npz), "--models-dir", str(store)]
    assert "give NAME=WEIGHT" in run_error([*base, "--weights", "a=1,b=x,c=1"])
    assert "CLASS=AREA" in run_error([*base, "--min-area", "big"])
    assert "does not exist" in run_error(["--data", str(tmp_path / "none.npz"), "--models-dir", str(store)])
