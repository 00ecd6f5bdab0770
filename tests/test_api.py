"""The notebook API on arrays gives what the commands give on files, and the README's example runs."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from conftest import ens
from onnx_members import make_member

import ensemble as api
from ensemble.data.metrics import confusion_matrix, course_miou
from ensemble.demo.synthetic import DemoSpec, write_demo
from ensemble.errors import EnsError
from ensemble.submission.io import read_submission

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def demo(tmp_path):
    path = tmp_path / "demo.npz"
    write_demo(path, DemoSpec(seed=3, n_train=40, n_test=12, height=16, width=32, n_aliens=0))
    store = tmp_path / "models"
    for seed, name in enumerate(("a", "b")):
        make_member(store / f"{name}.onnx", seed=seed)
    return path, store


def test_predict_on_arrays_equals_ens_predict(demo, tmp_path):
    data, store = demo
    args = ["--members", "a,b", "--weights", "a=0.3,b=0.7", "--min-area", "3", "--class-gain", "4=2"]
    result = ens("predict", "--data", data, "--models-dir", store, "--out", tmp_path / "s.csv", *args)
    assert result.exit_code == 0, result.output
    _, from_cli, _ = read_submission(tmp_path / "s.csv", (16, 32), 5)
    model = api.load_ensemble(
        ["a", "b"], store=store, weights=[0.3, 0.7], min_area=3, class_gain=[1, 1, 1, 1, 2]
    )
    result = api.predict(model, np.load(data)["test_set"], probabilities=True)
    labels, probs = result.labels, result.probs
    np.testing.assert_array_equal(labels, from_cli)
    assert api.predict(model, np.load(data)["test_set"]).probs is None
    assert probs.shape == (12, 5, 16, 32) and np.allclose(probs.sum(1), 1, atol=1e-5)


def test_fit_on_arrays_writes_an_ensemble_file_that_loads(demo, tmp_path):
    data, store = demo
    train = np.load(data)["training_set"]
    out = tmp_path / "fitted.json"
    spec = api.fit(
        ["a", "b"], train[:, 0], train[:, 1], store=store, out=out, settings=api.FitSettings(folds=2)
    )
    assert spec.members == ("a", "b") and np.asarray(spec.weights).shape == (2, 5)
    model = api.load_ensemble(["a", "b"], ensemble_file=out, store=store)
    assert model.options.tta == "flip" and model.options.min_area.tolist() == list(spec.min_area)


def test_score_is_the_course_metric_as_a_table():
    rng = np.random.default_rng(0)
    truth, pred = rng.integers(0, 5, (2, 3, 8, 8))
    table = api.score(pred, truth, 5)
    assert list(table.columns) == ["iou", "true_pixels", "predicted_pixels"] and len(table) == 5
    assert table.attrs["score"] == course_miou(confusion_matrix(truth, pred, 5))
    assert table["true_pixels"].sum() == truth.size


def test_bad_arrays_raise_ens_errors(demo):
    _, store = demo
    model = api.load_ensemble(["a"], store=store)
    with pytest.raises(EnsError, match="must lie in 0..255, found 300"):
        api.predict(model, np.full((1, 8, 8), 300))
    with pytest.raises(EnsError, match=r"expected a numeric \(N, H, W\) array"):
        api.predict(model, np.zeros((8, 8)))


def test_the_readme_notebook_example_runs(tmp_path, monkeypatch):
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Python API") :]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    write_demo(
        tmp_path / "data" / "mars_demo.npz", DemoSpec(seed=1, n_train=8, n_test=70, height=16, width=32)
    )
    (tmp_path / "models").symlink_to(ROOT / "models")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert namespace["labels"].shape == (64, 16, 32) and namespace["result"].probs.shape == (64, 5, 16, 32)
    assert [c.runtime for c in namespace["mine"].runtimes] == ["onnxruntime"] * 2
    assert 0.0 <= namespace["table"].attrs["score"] <= 1.0
    ids, back, fmt = read_submission(tmp_path / "submissions" / "notebook.csv", (16, 32), 5)
    assert fmt == "rle" and (back == namespace["labels"]).all()
