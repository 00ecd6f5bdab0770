"""Pools of members: members fitted at weight 0 are left out of the ensemble file and never run, the
fit reports its progress, its CV estimate is nested, and `ens score --val` shows it beside in-sample."""

from __future__ import annotations

import json

import numpy as np
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


def common(demo, store, tmp_path):
    return ["--data", demo, "--models-dir", store, "--cache-dir", tmp_path / "cache", "--val-fraction", "0.5"]


def test_fit_reports_each_fit_with_the_total_so_an_eta_can_be_shown(tmp_path, demo, store):
    from ensemble.data.datasets import open_dataset
    from ensemble.data.split import SplitSpec
    from ensemble.fitting.job import FitRequest, fit
    from ensemble.fitting.settings import FitSettings

    steps = []
    request = FitRequest(
        data=open_dataset(demo),
        store=store,
        split_spec=SplitSpec(val_fraction=0.5),
        settings=FitSettings(folds=2),
        cache_dir=tmp_path / "cache",
    )
    fit(request, on_step=lambda what, done, total: steps.append((what, done, total)))
    # selection CV (2 weightings x 2 folds) + final fit, then per outer fold: its own CV + its fit
    assert [done for _, done, _ in steps] == list(range(15))
    assert {total for _, _, total in steps} == {15}
    assert steps[4][0] == "final fit on all images"
    assert steps[-1][0] == "outer fold 2/2: fit on the other folds"
    assert sum("outer fold 1/2: fold" in what for what, _, _ in steps) == 4


def test_the_cv_estimate_is_nested_no_fold_sees_its_held_out_images():
    from fit_fixtures import member, random_truth

    import ensemble.fitting.fit as fitting

    rng = np.random.default_rng(5)
    truth = random_truth(rng, n=12)
    probs = [member(rng, truth, confidence=2.0, noise=1.0), member(rng, truth, confidence=1.0, noise=1.5)]
    current, seen = ["start"], []
    real_fit, real_choose = fitting.fit_once, fitting._choose

    def spy_fit(pool, index, per, use=(True, True, True)):
        seen.append((current[0], set(index.tolist())))
        return real_fit(pool, index, per, use)

    def spy_choose(pool, index, steps, where):
        seen.append((f"choose {where}", set(index.tolist())))
        return real_choose(pool, index, steps, where)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(fitting, "fit_once", spy_fit)
        patch.setattr(fitting, "_choose", spy_choose)
        result = fitting.fit_ensemble(
            probs, truth, fitting.FitSettings(folds=3), lambda w, d, t: current.__setitem__(0, w)
        )
    outer = fitting._fold_of(np.arange(12), 3, 0)
    for k in range(3):
        held = set(np.flatnonzero(outer == k).tolist())
        inside = [images for what, images in seen if f"outer fold {k + 1}/3" in what]
        assert len(inside) == 2 * 3 + 2  # its own choice, 2 weightings x 3 inner folds, its fit
        assert all(images and not images & held for images in inside)
    assert result.cv is not None and result.selection is not None


def test_score_val_shows_the_nested_cv_estimate_beside_in_sample(tmp_path, demo, store):
    assert ens("fit", *common(demo, store, tmp_path), "--folds", "2").exit_code == 0
    fit = json.loads((store / "ensemble.json").read_text())["fit"]
    report = tmp_path / "ablation.json"
    result = ens("score", "--val", *common(demo, store, tmp_path), "--json", report)
    assert result.exit_code == 0, result.output
    assert "nested 2-fold CV" in result.output and "CV − in-sample" in result.output
    rows = json.loads(report.read_text())["fit_estimate"]
    stages = ["equal weights", "learned weights", "+ class gains", "+ cleanup"]
    assert [row["stage"] for row in rows] == stages
    assert rows[-1]["in_sample"] == fit["in_sample"]["learned+gains+cleanup"]
    assert rows[-1]["cv"] == fit["cv"]["learned+gains+cleanup"]
    assert f"{fit['cv']['learned+gains+cleanup']:.4f}" in result.output


def _intensity_member(path, centres):
    """A real ONNX member whose class c scores -(x - centres[c])^2 up to a constant, x = pixel/255
    (classes without a centre never win): it predicts the class whose centre is nearest."""
    import onnx
    from onnx import numpy_helper

    make_member(path)
    model = onnx.load(str(path))
    weight, bias = np.zeros((5, 1, 3, 3), np.float32), np.full(5, -100.0, np.float32)
    for c, centre in centres.items():
        weight[c, 0, 1, 1], bias[c] = 40 * centre, -20 * centre**2
    for init in model.graph.initializer:
        if init.name in ("weight", "bias"):
            init.CopyFrom(numpy_helper.from_array(weight if init.name == "weight" else bias, init.name))
    onnx.save(model, str(path))
    return path


def _quality_of(tmp_path, centres, batchnorm=False):
    from conftest import write_npz

    from ensemble.data.split import SplitSpec
    from ensemble.members.session import build_session
    from exporters.preprocessing import Normalisation
    from exporters.quality import measure_quality

    rng = np.random.default_rng(0)
    masks = rng.integers(1, 5, (24, 8, 12)).astype(np.uint8)  # four classes, about a quarter each
    images = (masks * 50).astype(np.float64)
    write_npz(tmp_path / "d.npz", images, masks, images[:4])
    member = get_member(str(_intensity_member(tmp_path / "m.onnx", centres)))
    quality, _ = measure_quality(
        build_session(member, "cpu"), tmp_path / "d.npz", SplitSpec(val_fraction=0.5), 5
    )
    return quality, quality.problem(member.info.class_names, Normalisation("0-255"), batchnorm)


def test_quality_guard_refuses_a_member_whose_predictions_collapse_onto_two_classes(tmp_path):
    # like the member: 'sand' and 'soil' only, while the labels spread over four classes
    quality, problem = _quality_of(tmp_path, {1: 50 / 255, 3: 150 / 255})
    assert quality.val_miou > quality.baseline_miou and quality.top_share < 0.95  # the old checks pass it
    assert "2 classes cover over 95% of its predictions" in problem and "spread over 4" in problem
    assert problem.index("preprocessing") < problem.index("BatchNorm statistics")
    _, with_batchnorm = _quality_of(tmp_path, {1: 50 / 255, 3: 150 / 255}, batchnorm=True)
    assert with_batchnorm.index("BatchNorm statistics") < with_batchnorm.index("preprocessing")


def test_quality_guard_passes_a_member_that_predicts_every_labelled_class(tmp_path):
    quality, problem = _quality_of(tmp_path, {c: c * 50 / 255 for c in range(1, 5)})
    assert problem is None and quality.val_miou > 0.99


def test_batchnorm_is_found_in_torch_nets_also_when_scripted():
    import torch

    from exporters.source import has_batchnorm

    plain = torch.nn.Sequential(torch.nn.Conv2d(1, 5, 3))
    normed = torch.nn.Sequential(torch.nn.Conv2d(1, 5, 3), torch.nn.BatchNorm2d(5))
    assert not has_batchnorm(plain) and has_batchnorm(normed)
    assert has_batchnorm(torch.jit.script(normed)) and not has_batchnorm(torch.jit.script(plain))
