"""`ens fit`, `ens score --val` and `ens predict` with an ensemble file, end to end on tiny members."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import ens, one_line_error
from onnx_members import make_member

from ensemble.data.datafile import open_data
from ensemble.data.sources import make_source
from ensemble.data.tta import HFLIP, IDENTITY
from ensemble.demo.synthetic import DemoSpec, write_demo
from ensemble.fitting.cache import ProbCache
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


def common(demo, store, tmp_path):
    return ["--data", demo, "--models-dir", store, "--cache-dir", tmp_path / "cache", "--val-fraction", "0.5"]


def test_fit_then_score_then_predict_agree(tmp_path, demo, store):
    result = ens("fit", *common(demo, store, tmp_path), "--folds", "3")
    assert result.exit_code == 0, result.output
    assert "3-fold CV" in result.output and "CV gain:" in result.output
    spec = json.loads((store / "ensemble.json").read_text())
    assert spec["members"] == ["a", "b", "c"] and spec["tta"] == "flip"
    assert np.allclose(np.sum(spec["weights"], axis=0), 1.0, atol=1e-5)
    assert spec["fit"]["cv"]["weight_gain"] == pytest.approx(
        spec["fit"]["cv"]["learned"] - spec["fit"]["cv"]["equal"]
    )
    chosen = spec["fit"]["weights_per"]
    assert (
        spec["fit"]["folds"] == 3 and chosen["asked"] == "auto" and set(chosen["cv"]) == {"member", "class"}
    )
    assert (
        chosen["cv"][chosen["chosen"]]
        == max(chosen["cv"].values())
        == spec["fit"]["selection_cv"]["learned+gains+cleanup"]
    )

    report = tmp_path / "ablation.json"
    result = ens(
        "score", "--val", *common(demo, store, tmp_path), "--json", report, "--plots", tmp_path / "plots"
    )
    assert result.exit_code == 0, result.output
    rows = json.loads(report.read_text())["rows"]
    names = [row["name"] for row in rows]
    assert names[:6] == ["a", "b", "c", "equal fusion", "learned fusion", "+ TTA flip"]
    assert ("+ cleanup" in names) == any(spec["min_area"])
    assert ("+ class gains" in names) == any(g != 1 for g in spec["class_gain"])
    assert set(rows[0]["per_class"]) == {"soil", "bedrock", "sand", "big rock"}
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == [
        "confusion.png",
        "gallery.png",
        "iou_per_class.png",
    ]
    assert "confusion matrix" in result.output

    # the last ablation row is what `ens predict` writes with the same ensemble file, up to the float16
    # rounding of the cached probabilities the ablation reads
    csv = tmp_path / "val.csv"
    result = ens("predict", "--split", "val", "--out", csv, *common(demo, store, tmp_path)[:4],
                 "--val-fraction", "0.5")  # fmt: skip
    assert result.exit_code == 0, result.output
    manifest = json.loads(csv.with_suffix(".manifest.json").read_text())
    assert manifest["ensemble_file"] == str(store / "ensemble.json")
    scored = tmp_path / "scored.json"
    result = ens("score", csv, "--truth", demo, "--split", "val", "--json", scored)
    assert result.exit_code == 0, result.output
    assert json.loads(scored.read_text())["miou"] == pytest.approx(rows[-1]["miou"], abs=2e-3)


def test_score_val_without_ensemble_file_has_no_learned_rows(tmp_path, demo, store):
    report = tmp_path / "a.json"
    result = ens("score", "--val", *common(demo, store, tmp_path), "--members", "a,b", "--tta", "none",
                 "--json", report)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert [row["name"] for row in json.loads(report.read_text())["rows"]] == ["a", "b", "equal fusion"]
    assert "run `ens fit`" in result.output


def test_cache_is_reused_and_invalidated(tmp_path, demo, store):
    source = make_source(open_data(demo), "val")
    cache = ProbCache(source, tmp_path / "cache")
    first = np.array(cache.get(get_member("a", store), IDENTITY))
    cache.get(get_member("a", store), IDENTITY)
    cache.get(get_member("a", store), HFLIP)
    assert len(cache.computed) == 2
    make_member(store / "a.onnx", seed=99)  # the member file changes
    changed = np.array(cache.get(get_member("a", store), IDENTITY))
    assert len(cache.computed) == 3 and not np.array_equal(first, changed)
    write_demo(demo, DemoSpec(seed=4, n_train=40, n_test=12, height=16, width=32, n_aliens=0))
    fresh = ProbCache(make_source(open_data(demo), "val"), tmp_path / "cache")
    fresh.get(get_member("a", store), IDENTITY)
    assert fresh.computed, "a changed data file must miss the cache"
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 4


def test_cached_probabilities_equal_a_fresh_run(tmp_path, demo, store):
    source = make_source(open_data(demo), "val")
    cached = ProbCache(source, tmp_path / "cache").get(get_member("b", store), HFLIP)
    again = ProbCache(source, tmp_path / "other").get(get_member("b", store), HFLIP)
    np.testing.assert_array_equal(cached, again)
    assert cached.dtype == np.float16 and cached.shape == (source.n_images, 5, 16, 32)


def test_errors_are_one_line(tmp_path, demo, store):
    one_line_error(ens("score"), "--val")
    one_line_error(ens("score", "--val", "--truth", demo), "pick one")
    missing = tmp_path / "none.json"
    one_line_error(
        ens("predict", "--ensemble", missing, "--data", demo, "--models-dir", store),
        "does not exist",
        "ens fit",
    )
    assert ens("fit", *common(demo, store, tmp_path), "--members", "a,b", "--folds", "0").exit_code == 0
    spec = store / "ensemble.json"
    mismatch = ens("predict", "--members", "a,c", "--ensemble", spec, "--data", demo, "--models-dir", store)
    one_line_error(mismatch, "differs from the members")
    make_member(store / "b.onnx", seed=42)
    one_line_error(ens("predict", "--data", demo, "--models-dir", store), "changed since", "re-run `ens fit`")
    spec.write_text("{}")
    one_line_error(ens("score", "--val", "--data", demo, "--models-dir", store), "not an ens ensemble file")
    unknown = ens("fit", "--data", demo, "--models-dir", store, "--metric", "nope")  # a choice, as for --tta
    one_line_error(unknown, "--metric got 'nope'", "allowed: 'course'")
