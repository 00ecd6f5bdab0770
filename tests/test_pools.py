"""Pools of members: members fitted at weight 0 are left out of the ensemble file and never run, the
fit reports its progress, its CV estimate is nested, and `ens score --val` shows it beside in-sample."""

from __future__ import annotations

import json

import pytest
from conftest import ens
from onnx_members import make_member

from ensemble.demo.synthetic import DemoSpec, write_demo
from ensemble.members.ensemblefile import EnsembleSpec, read_spec, write_spec
from ensemble.members.store import get_member


@pytest.fixture
def demo(tmp_path):
    path = tmp_path / "demo.npz"
    write_demo(path, DemoSpec(seed=3, n_train=40, n_test=12, height=16, width=32, n_aliens=0))
    return path


@pytest.fixture
def store(tmp_path):
    for seed, name in enumerate(["a", "b", "c"]):
        make_member(tmp_path / "models" / f"{name}.onnx", seed=seed + 10)
    return tmp_path / "models"


def spec_of(store, names, weights) -> EnsembleSpec:
    members = [get_member(str(store / f"{n}.onnx")) for n in names]
    return EnsembleSpec(
        members=tuple(names),
        member_sha256=tuple(m.sha256 for m in members),
        weights=tuple(tuple(row) for row in weights),
        tta="flip",
        min_area=(0, 4, 0, 8, 0),
        class_gain=(1.0, 1.0, 2.0, 1.0, 1.0),
    )


def predict(demo, store, tmp_path, ensemble, out):
    result = ens(
        "predict", "--data", demo, "--models-dir", store, "--ensemble", ensemble, "--out", tmp_path / out
    )
    assert result.exit_code == 0, result.output
    return (tmp_path / out).read_bytes(), json.loads(
        (tmp_path / out.replace(".csv", ".manifest.json")).read_text()
    )


def test_members_at_weight_0_are_not_run_and_the_csv_is_byte_identical(tmp_path, demo, store):
    per_class = [[0.5, 0.2, 0.7, 0.1, 0.3], [0.0] * 5, [0.5, 0.8, 0.3, 0.9, 0.7]]
    write_spec(tmp_path / "all.json", spec_of(store, ["a", "b", "c"], per_class))
    write_spec(tmp_path / "weighted.json", spec_of(store, ["a", "c"], [per_class[0], per_class[2]]))
    alone, alone_manifest = predict(demo, store, tmp_path, tmp_path / "weighted.json", "alone.csv")
    (store / "b.onnx").write_bytes(b"not a model: the member at weight 0 must never be opened")
    pooled, manifest = predict(demo, store, tmp_path, tmp_path / "all.json", "pooled.csv")
    assert pooled == alone
    assert [m["name"] for m in manifest["members"]] == ["a", "c"]
    assert manifest["dropped_members"] == ["b"] and alone_manifest["dropped_members"] == []
    assert read_spec(tmp_path / "all.json").without_idle().dropped == ("b",)


def test_a_member_zero_in_some_classes_only_still_runs(tmp_path, store):
    spec = spec_of(store, ["a", "b", "c"], [[1.0] * 5, [0.0, 0.0, 1.0, 0.0, 0.0], [1.0] * 5])
    assert spec.without_idle() == spec
    everyone_idle = spec_of(store, ["a", "b"], [[0.0] * 5, [0.0] * 5])
    assert everyone_idle.without_idle() == everyone_idle


def test_fit_leaves_out_a_member_it_gives_weight_0(tmp_path, demo, store, monkeypatch):
    import ensemble.fitting.job as job

    real = job.fit_parts

    def zero_b(parts, settings, on_step=None):
        result = real(parts, settings, on_step)
        result.fitted.weights[1] = 0.0
        return result

    monkeypatch.setattr(job, "fit_parts", zero_b)
    args = ["--data", demo, "--models-dir", store, "--cache-dir", tmp_path / "cache", "--val-fraction", "0.5"]
    result = ens("fit", *args, "--folds", "2")
    assert result.exit_code == 0, result.output
    assert "left out at weight 0" in result.output
    raw = json.loads((store / "ensemble.json").read_text())
    assert raw["members"] == ["a", "c"] and raw["dropped"] == ["b"] and len(raw["weights"]) == 2
