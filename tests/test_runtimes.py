"""Batch-parallel workers and per-member runtimes (`--workers`, `--runtime`) on real ONNX Runtime and
OpenVINO sessions of tiny members: byte-identical CSVs across worker counts, OpenVINO parity and its
fallback, the `auto` choice's cache and its key."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import assert_unchanged, ens, one_line_error, snapshot, write_npz
from onnx_members import make_member

from ensemble.data.datasets import open_dataset
from ensemble.data.sources import make_source
from ensemble.inference.options import PredictOptions
from ensemble.inference.pipeline import PipelineScorer, open_pipeline
from ensemble.members.member import load_member
from ensemble.runtimes import openvino as ov_runtime
from ensemble.submission.io import read_submission

N_TEST = 37  # not a multiple of any batch below: the last batch is partial


@pytest.fixture
def store(tmp_path):
    for seed, name in enumerate(["a", "b", "c"]):
        make_member(tmp_path / "models" / f"{name}.onnx", seed=seed)
    return tmp_path / "models"


@pytest.fixture
def data(tmp_path):
    rng = np.random.default_rng(5)
    train = rng.integers(0, 256, (4, 16, 24))
    masks = rng.integers(0, 5, (4, 16, 24))
    return write_npz(tmp_path / "data.npz", train, masks, rng.integers(0, 256, (N_TEST, 16, 24)))


def predict(tmp_path, store, data, name, *args):
    out = tmp_path / f"{name}.csv"
    result = ens(
        "predict", "--members", "a,b,c", "--models-dir", store, "--data", data, "--tta", "flip",
        "--min-area", "3", "--batch-size", "8", "--out", out, *args,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return out, json.loads(out.with_name(f"{name}.manifest.json").read_text())


def ensemble_of(store, members="abc", source=None, runtime=None, choosing=None, **options) -> PipelineScorer:
    """The pipeline of `members`, on the runtimes `runtime` chooses on `source` (ONNX Runtime without)."""
    found = [load_member(store / f"{name}.onnx") for name in members]
    options = PredictOptions(batch_size=8, device="cpu", **options)
    return open_pipeline(found, options, source, runtime=runtime, **(choosing or {}))


def test_workers_keep_the_csv_byte_identical(tmp_path, store, data):
    one, manifest_one = predict(tmp_path, store, data, "one", "--runtime", "ort", "--workers", "1")
    assert manifest_one["runtime"]["workers"] == 1
    for workers in (2, 3):
        out, manifest = predict(
            tmp_path, store, data, f"w{workers}", "--runtime", "ort", "--workers", workers
        )
        assert out.read_bytes() == one.read_bytes()
        assert manifest["runtime"]["workers"] == workers
        assert manifest["runtime"]["worker_batch"] == -(-8 // workers)
        assert manifest["runtime"]["threads"] == 1
        assert {m["runtime"]["runtime"] for m in manifest["members"]} == {"onnxruntime"}
    threads, manifest = predict(tmp_path, store, data, "threads", "--runtime", "ort", "--threads", "2")
    assert threads.read_bytes() == one.read_bytes()
    assert manifest["runtime"]["workers"] == 1


def test_the_pool_returns_batches_in_order(store, data):
    from ensemble.inference.batchpool import ordered_batches

    ensemble = ensemble_of(store, workers=3)
    source = make_source(open_dataset(data), "test")
    reference = ensemble_of(store, workers=1)
    got = list(ordered_batches(ensemble.score, source.batches(3), ensemble.workers, ensemble.timings))
    want = list(ordered_batches(reference.score, source.batches(3), 1, reference.timings))
    assert [ids.tolist() for ids, _ in got] == [ids.tolist() for ids, _ in want]
    for (_, probs), (_, expected) in zip(got, want, strict=True):
        assert np.array_equal(probs.scores, expected.scores)
    assert ensemble.timings.seconds["inference"] > 0  # the workers' timings are added up


def test_runtime_openvino_without_the_package_is_one_line_error(tmp_path, store, data, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)
    ov_runtime.core.cache_clear()
    try:
        before = snapshot(tmp_path)
        result = ens(
            "predict", "--members", "a,b,c", "--models-dir", store, "--data", data, "--runtime", "openvino",
            "--out", tmp_path / "x.csv",
        )  # fmt: skip
        one_line_error(result, "openvino", "pip install 'ens[openvino]'")
        assert_unchanged(before, tmp_path)
        source = make_source(open_dataset(data), "test")
        ensemble = ensemble_of(store, source=source, runtime="auto", choosing=dict(min_images=0))
        assert all(c.runtime == "onnxruntime" and "not installed" in c.note for c in ensemble.choices)
    finally:
        ov_runtime.core.cache_clear()


def test_openvino_is_not_imported_on_the_default_path(tmp_path, store, data):
    code = (
        "import sys\n"
        "from ensemble.cli import app\n"
        "import ensemble.api, ensemble.runs.predict, ensemble.runtimes.choice\n"
        "assert 'openvino' not in sys.modules, 'openvino imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


def test_openvino_members_match_onnx_runtime(tmp_path, store, data):
    pytest.importorskip("openvino")
    ort_csv, _ = predict(tmp_path, store, data, "ort", "--runtime", "ort")
    ov_csv, manifest = predict(tmp_path, store, data, "ov", "--runtime", "openvino", "--workers", "2")
    for member in manifest["members"]:
        assert member["runtime"]["runtime"] == "openvino"
        assert member["runtime"]["how"] == "requested"
        assert member["runtime"]["parity_max_abs_err"] <= 1e-4
        assert member["providers"] == ["OpenVINO"]
    ids, ort_labels, _ = read_submission(ort_csv, (16, 24), 5)
    ov_ids, ov_labels, _ = read_submission(ov_csv, (16, 24), 5)
    assert np.array_equal(ids, ov_ids) and len(ids) == N_TEST
    assert (ort_labels == ov_labels).mean() >= 0.9999


def test_openvino_parity_failure_falls_back_to_onnx_runtime(store, data):
    pytest.importorskip("openvino")
    source = make_source(open_dataset(data), "test")
    ensemble = ensemble_of(store, workers=2, source=source, runtime="openvino")
    assert [c.runtime for c in ensemble.choices] == ["openvino"] * 3
    assert not ensemble.warnings
    strict = ensemble_of(
        store, workers=2, source=source, runtime="openvino", choosing=dict(tolerance=-1.0)
    )  # no difference passes
    assert [c.runtime for c in strict.choices] == ["onnxruntime"] * 3
    assert all(r is o for r, o in zip(strict.runners, strict.ort_runners, strict=True))
    assert len(strict.warnings) == 3 and all("differs from ONNX Runtime" in w for w in strict.warnings)
    assert all(c.parity_max_abs_err is not None for c in strict.choices)


def test_auto_measures_once_then_reuses_the_cache(tmp_path, store, data):
    pytest.importorskip("openvino")
    source = make_source(open_dataset(data), "test")
    cache = tmp_path / "cache" / "runtimes.json"
    few = ensemble_of(
        store, workers=2, source=source, runtime="auto", choosing=dict(cache=cache)
    )  # 37 images: too few to time
    assert [c.how for c in few.choices] == ["default"] * 3 and not cache.exists()

    notes = []
    first = ensemble_of(
        store,
        workers=2,
        source=source,
        runtime="auto",
        choosing=dict(cache=cache, min_images=0, on_timing=notes.append),
    )
    assert [c.how for c in first.choices] == ["measured"] * 3
    assert len(notes) == 3 and all("timing member" in n and str(cache) in n for n in notes)
    assert all(c.seconds is not None and min(c.seconds.values()) > 0 for c in first.choices)
    entries = json.loads(cache.read_text())
    assert len(entries) == 3
    written = cache.read_bytes()

    again = ensemble_of(
        store,
        workers=2,
        source=source,
        runtime="auto",
        choosing=dict(cache=cache, min_images=0, on_timing=notes.append),
    )
    assert [c.how for c in again.choices] == ["cached"] * 3 and len(notes) == 3  # nothing timed
    assert [c.runtime for c in again.choices] == [c.runtime for c in first.choices]
    assert [c.seconds for c in again.choices] == [c.seconds for c in first.choices]
    assert cache.read_bytes() == written

    # the key changes with the workers, the batch shape and the member's bytes
    other_workers = ensemble_of(
        store, workers=1, source=source, runtime="auto", choosing=dict(cache=cache, min_images=0)
    )
    assert [c.how for c in other_workers.choices] == ["measured"] * 3
    other_batch = open_pipeline(
        other_workers.members, PredictOptions(batch_size=4, device="cpu", workers=2), source,
        runtime="auto", cache=cache, min_images=0,
    )  # fmt: skip
    assert [c.how for c in other_batch.choices] == ["measured"] * 3
    make_member(store / "a.onnx", seed=9)
    changed = ensemble_of(
        store, workers=2, source=source, runtime="auto", choosing=dict(cache=cache, min_images=0)
    )
    assert [c.how for c in changed.choices] == ["measured", "cached", "cached"]
    assert len(json.loads(cache.read_text())) == 10


def test_a_huge_worker_count_is_capped_to_the_batch_size(tmp_path, store, data):
    """--workers 1000000 would start a million threads and hold the whole data set in flight."""
    one, _ = predict(tmp_path, store, data, "one", "--runtime", "ort", "--workers", "1")
    result = ens(
        "predict", "--members", "a,b,c", "--models-dir", store, "--data", data, "--tta", "flip",
        "--min-area", "3", "--batch-size", "8", "--out", tmp_path / "many.csv", "--workers", "1000000",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "--workers 1000000 capped to --batch-size 8" in result.output
    manifest = json.loads((tmp_path / "many.manifest.json").read_text())
    assert manifest["runtime"]["workers"] == 8 and manifest["runtime"]["worker_batch"] == 1
    assert (tmp_path / "many.csv").read_bytes() == one.read_bytes()


def test_the_default_is_auto_and_reads_the_cache_dir_of_the_run(tmp_path, store, data, monkeypatch):
    """Without --runtime, a first short run stays on ONNX Runtime (the CSV is exactly ONNX Runtime's);
    once $ENS_CACHE holds a measurement for these members, the run reuses it."""
    pytest.importorskip("openvino")
    monkeypatch.setenv("ENS_CACHE", str(tmp_path / "own-cache"))
    ort_csv, _ = predict(tmp_path, store, data, "ort", "--runtime", "ort", "--workers", "2")
    default_csv, manifest = predict(tmp_path, store, data, "default", "--workers", "2")
    assert manifest["runtime"]["runtime"] == "auto"
    assert [m["runtime"]["how"] for m in manifest["members"]] == ["default"] * 3
    assert default_csv.read_bytes() == ort_csv.read_bytes()

    source = make_source(open_dataset(data), "test")
    ensemble = ensemble_of(store, workers=2, source=source, runtime="auto", choosing=dict(min_images=0))
    assert (tmp_path / "own-cache" / "runtimes.json").exists()
    _, cached = predict(tmp_path, store, data, "cached", "--workers", "2")
    assert [m["runtime"]["how"] for m in cached["members"]] == ["cached"] * 3
    assert [m["runtime"]["runtime"] for m in cached["members"]] == [c.runtime for c in ensemble.choices]


@pytest.mark.parametrize(
    "damage",
    [
        "not an entry",
        {"seconds": "fast"},
        {"seconds": {"ort": 1.0}},
        {"seconds": {"ort": 1.0, "openvino": "0.5"}},
        {"seconds": {"ort": 1.0, "openvino": -1.0}},
        {"seconds": {"ort": 1.0, "openvino": True}},
        {"seconds": {"ort": 1.0, "openvino": 0.5, "gpu": 0.1}},
    ],
)
def test_a_damaged_runtime_cache_entry_is_measured_again(tmp_path, store, data, damage):
    """A hand-edited or damaged runtimes.json (from a teammate, say) never decides a choice."""
    pytest.importorskip("openvino")
    source = make_source(open_dataset(data), "test")
    cache = tmp_path / "runtimes.json"
    ensemble_of(store, workers=2, source=source, runtime="auto", choosing=dict(cache=cache, min_images=0))
    cache.write_text(json.dumps({key: damage for key in json.loads(cache.read_text())}))
    again = ensemble_of(
        store, workers=2, source=source, runtime="auto", choosing=dict(cache=cache, min_images=0)
    )
    assert [c.how for c in again.choices] == ["measured"] * 3
    assert all(min(c.seconds.values()) > 0 for c in again.choices)
    assert all(isinstance(e["seconds"], dict) for e in json.loads(cache.read_text()).values())
