"""The Python API at parity with the CLI: `load_ensemble` checks its options through the function
`ens predict` uses (same one-line messages), chooses runtimes as `ens predict --runtime auto` does
(its labels equal the CSV's on the demo members), and `fit` goes through the float16 probability
cache and search of `ens fit` (the same ensemble file)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_unchanged, ens, one_line_error, snapshot, write_npz
from onnx_members import make_member

import ensemble as api
from ensemble.data.datasets import open_dataset
from ensemble.demo.synthetic import DemoSpec, write_demo
from ensemble.errors import EnsError
from ensemble.inference.manifest import manifest_path
from ensemble.inference.memberbench import bench_member
from ensemble.members.store import resolve_members
from ensemble.runs.options import run_options
from ensemble.submission.io import read_submission

MODELS = Path(__file__).resolve().parents[1] / "models"
SHAPE = (32, 64)


@pytest.mark.parametrize(
    ("option", "value", "keyword"),
    [("--workers", "0", {"workers": 0}), ("--runtime", "nope", {"runtime": "nope"})],
)
def test_a_bad_option_reads_the_same_from_the_cli_and_the_api(tmp_path, option, value, keyword):
    store = tmp_path / "models"
    make_member(store / "a.onnx")
    before = snapshot(tmp_path)
    line = one_line_error(ens("predict", "--models-dir", store, option, value, "--out", tmp_path / "s.csv"))
    with pytest.raises(EnsError) as caught:
        api.load_ensemble(["a"], store=store, **keyword)
    assert line == f"error: {caught.value}"
    assert_unchanged(before, tmp_path)


def test_runtime_auto_gives_the_labels_of_the_cli_csv_on_the_demo_members(tmp_path):
    data = tmp_path / "demo.npz"
    write_demo(data, DemoSpec(seed=1, n_train=8, n_test=12, height=SHAPE[0], width=SHAPE[1]))
    settings = {"batch_size": 4, "workers": 2}
    options = run_options(**settings)
    for member in resolve_members(None, MODELS):  # time the runtimes once: `auto` then reads the cache
        bench_member(member, open_dataset(data), options=options)
    out = tmp_path / "s.csv"
    args = ["--data", data, "--models-dir", MODELS, "--batch-size", "4", "--workers", "2", "--out", out]
    assert ens("predict", *args).exit_code == 0
    _, from_cli, _ = read_submission(out, SHAPE, 5)
    model = api.load_ensemble(store=MODELS, runtime="auto", **settings)
    assert model.runtimes == () and model.ensemble_file == MODELS / "ensemble.json"
    labels = api.predict(model, np.load(data)["test_set"]).labels
    np.testing.assert_array_equal(labels, from_cli)
    manifest = json.loads(manifest_path(out).read_text())
    cli_runtimes = [m["runtime"] for m in manifest["members"]]
    assert [c.to_json() for c in model.runtimes] == cli_runtimes
    assert all(c.how == "cached" for c in model.runtimes)


def test_fit_on_arrays_writes_the_ensemble_file_of_ens_fit(tmp_path):
    store = tmp_path / "models"
    for seed, name in enumerate(("a", "b")):
        make_member(store / f"{name}.onnx", seed=seed)
    rng = np.random.default_rng(5)
    train, masks = rng.integers(0, 256, (24, 8, 12)), rng.integers(1, 5, (24, 8, 12))
    data = write_npz(tmp_path / "d.npz", train, masks, rng.integers(0, 256, (2, 8, 12)))
    val = [3, 4, 7, 9, 10, 12, 15, 16, 20, 22]
    ids = tmp_path / "val.txt"
    ids.write_text("\n".join(map(str, val)) + "\n")
    common = ["--members", "a,b", "--models-dir", store, "--folds", "2", "--batch-size", "4"]
    result = ens(
        "fit", "--data", data, *common, "--val-ids", ids, "--keep-outliers",
        "--cache-dir", tmp_path / "cli-cache", "--out", tmp_path / "cli.json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    spec = api.fit(
        ["a", "b"], train[val], masks[val], store=store, settings=api.FitSettings(folds=2),
        batch_size=4, cache_dir=tmp_path / "api-cache", out=tmp_path / "api.json",
    )  # fmt: skip
    cli = json.loads((tmp_path / "cli.json").read_text())
    for key in ("members", "weights", "class_gain", "min_area", "tta", "connectivity", "metric"):
        assert json.loads(spec.to_json())[key] == cli[key], key
    assert json.loads((tmp_path / "api.json").read_text())["weights"] == cli["weights"]
    # the same float16 entries, one per member and view, equal to those of ens fit
    entries = {p.name.rsplit("-", 1)[0]: p for p in (tmp_path / "api-cache").glob("*.npy")}
    assert sorted(entries) == ["a-hflip", "a-identity", "b-hflip", "b-identity"], sorted(entries)
    for name, path in entries.items():
        (twin,) = (tmp_path / "cli-cache").glob(f"{name}-*.npy")
        mine, theirs = np.load(path), np.load(twin)
        assert mine.dtype == np.float16 and np.array_equal(mine, theirs), name
