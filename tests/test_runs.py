"""Resumable sharded runs: the CSV assembled from shards is byte-identical to one written in a
single pass, whatever the shard size, format, convention or source; a rerun or --resume reuses only
intact shards of the same settings."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_unchanged, ens, one_line_error, snapshot, write_npz
from onnx_members import make_member
from test_folders import write_folder

from ensemble.data.datafile import open_data
from ensemble.data.folder import open_folder
from ensemble.inference.loop import run
from ensemble.runs.predict import PredictRequest, predict, prepare
from ensemble.runs.resumable import RunOptions
from ensemble.submission.convention import RleConvention


@pytest.fixture
def npz(tmp_path):
    rng = np.random.default_rng(3)
    train = rng.integers(0, 256, (20, 8, 12))
    return write_npz(
        tmp_path / "d.npz", train, rng.integers(0, 5, (20, 8, 12)), rng.integers(0, 256, (23, 8, 12))
    )


def one_pass(request: PredictRequest, path: Path) -> bytes:
    """The CSV of the unsharded pipeline (the single pass `ens predict` made before shards)."""
    ensemble, source, _, _ = prepare(request)
    run(ensemble, source, path, request.fmt, rle=request.rle)
    return path.read_bytes()


def runs_under(cache: Path) -> list[Path]:
    root = cache / "runs"
    return sorted(root.iterdir()) if root.exists() else []


@pytest.mark.parametrize(
    ("fmt", "rle", "split", "shard_size", "batch_size"),
    [
        ("rle", RleConvention(), "test", 4, 3),
        ("flat", RleConvention(), "test", 5, 5),
        ("rle", RleConvention(order="row", start=0, layout="class-column"), "test", 7, 2),
        ("rle", RleConvention(), "val", 2, 3),
        ("flat", RleConvention(), "test", 1024, 64),
    ],  # fmt: skip
)
def test_sharded_csv_is_byte_identical_to_one_pass(
    tmp_path, store, npz, fmt, rle, split, shard_size, batch_size
):
    from ensemble.inference.options import PredictOptions

    request = PredictRequest(
        data=open_data(npz),
        members="a,b",
        store=store,
        split=split,
        min_area="3",
        fmt=fmt,
        rle=rle,
        out=tmp_path / "sharded.csv",
        options=PredictOptions(batch_size=batch_size),
        run=RunOptions(shard_size=shard_size),
    )
    outcome = predict(request)
    assert outcome.csv.read_bytes() == one_pass(request, tmp_path / "whole.csv")
    assert runs_under(Path(os.environ["ENS_CACHE"])) == []  # removed after a successful assembly
    if split == "val":
        assert outcome.result.confusion is not None and outcome.result.confusion.sum() > 0


def test_folder_of_mixed_sizes_and_text_ids_shards_to_the_same_csv(tmp_path):
    make_member(tmp_path / "models" / "a.onnx", channels=3, seed=1)
    sizes = [(8, 8), (6, 10), (8, 8), (6, 10), (6, 10), (8, 8), (5, 7), (8, 8), (6, 10)]
    images, masks = write_folder(tmp_path / "data", sizes, names=[f"n{k}x" for k in range(9)])
    for split, size in [("test", 2), ("test", 4), ("val", 3)]:
        request = PredictRequest(
            data=open_folder(images, masks),
            members="a",
            store=tmp_path / "models",
            split=split,
            out=tmp_path / f"{split}{size}.csv",
            run=RunOptions(shard_size=size),
        )
        assert predict(request).csv.read_bytes() == one_pass(request, tmp_path / "whole.csv")


def test_folder_with_integer_stems_shards_to_the_same_flat_csv(tmp_path):
    make_member(tmp_path / "models" / "a.onnx", channels=3, seed=1)
    images, _ = write_folder(tmp_path / "data", [(6, 9)] * 8, masks=False, names=[str(k) for k in range(8)])
    request = PredictRequest(
        data=open_folder(images),
        members="a",
        store=tmp_path / "models",
        fmt="flat",
        out=tmp_path / "sharded.csv",
        run=RunOptions(shard_size=3),
    )
    assert predict(request).csv.read_bytes() == one_pass(request, tmp_path / "whole.csv")


def test_rerun_resumes_intact_shards_and_recomputes_a_damaged_one(tmp_path, store, npz):
    cache = Path(os.environ["ENS_CACHE"])
    args = ["predict", "--data", npz, "--members", "a,b", "--models-dir", store, "--shard-size", 4]
    first = ens(*args, "--out", tmp_path / "first.csv", "--keep-shards")
    assert first.exit_code == 0, first.output
    assert "resuming" not in first.output
    (run_dir,) = runs_under(cache)
    shards = sorted(run_dir.glob("shard-*.npz"))
    assert len(shards) == 6  # 23 images in shards of 4
    shards[1].unlink()
    shards[3].write_bytes(shards[3].read_bytes()[:50])  # truncated
    second = ens(*args, "--out", tmp_path / "second.csv", "--resume")
    assert second.exit_code == 0, second.output
    assert "resuming: 4 of 6 shards done" in second.output
    assert "shard-000003.npz" in second.output and "recomputing it" in second.output
    assert (tmp_path / "second.csv").read_bytes() == (tmp_path / "first.csv").read_bytes()
    assert runs_under(cache) == []


def test_changed_settings_or_data_never_reuse_shards(tmp_path, store, npz):
    cache = Path(os.environ["ENS_CACHE"])
    base = ["predict", "--members", "a,b", "--models-dir", store, "--shard-size", 4, "--keep-shards"]
    assert ens(*base, "--data", npz, "--out", tmp_path / "a.csv").exit_code == 0
    variants = [
        ["--data", npz, "--min-area", "2"],
        ["--data", npz, "--tta", "none"],
        ["--data", npz, "--format", "flat"],
        ["--data", npz, "--rle-start", "0"],
        ["--data", npz, "--weights", "a=2,b=1"],
    ]
    for k, extra in enumerate(variants):
        result = ens(*base, *extra, "--out", tmp_path / f"v{k}.csv")
        assert result.exit_code == 0, result.output
        assert "resuming" not in result.output, extra
    assert len(runs_under(cache)) == 1 + len(variants)
    # the same command resumes; the same command on changed data does not
    assert "resuming: 6 of 6" in ens(*base, "--data", npz, "--out", tmp_path / "b.csv").output
    rng = np.random.default_rng(9)
    write_npz(
        npz,
        rng.integers(0, 256, (20, 8, 12)),
        rng.integers(0, 5, (20, 8, 12)),
        rng.integers(0, 256, (23, 8, 12)),
    )
    changed = ens(*base, "--data", npz, "--out", tmp_path / "c.csv")
    assert changed.exit_code == 0 and "resuming" not in changed.output
    assert (tmp_path / "c.csv").read_bytes() != (tmp_path / "a.csv").read_bytes()


def test_resume_without_shards_is_one_line_and_writes_nothing(tmp_path, store, npz):
    before = snapshot(tmp_path)
    result = ens(
        "predict",
        "--data",
        npz,
        "--members",
        "a",
        "--models-dir",
        store,
        "--out",
        tmp_path / "s.csv",
        "--resume",
    )
    one_line_error(result, "--resume found no complete shard", "drop --resume")
    assert_unchanged(before, tmp_path)


def test_resume_and_fresh_together_is_one_line(tmp_path, store, npz):
    before = snapshot(tmp_path)
    result = ens("predict", "--data", npz, "--members", "a", "--models-dir", store, "--resume", "--fresh")
    one_line_error(result, "--resume and --fresh")
    assert_unchanged(before, tmp_path)


def test_fresh_discards_earlier_shards(tmp_path, store, npz):
    args = [
        "predict",
        "--data",
        npz,
        "--members",
        "a",
        "--models-dir",
        store,
        "--shard-size",
        8,
        "--keep-shards",
    ]
    assert ens(*args, "--out", tmp_path / "a.csv").exit_code == 0
    result = ens(*args, "--out", tmp_path / "b.csv", "--fresh")
    assert result.exit_code == 0 and "resuming" not in result.output
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()


def test_a_member_on_another_runtime_is_another_run(tmp_path, store, npz):
    """OpenVINO's probabilities differ from ONNX Runtime's by ~1e-6, so its shards are never reused."""
    from dataclasses import replace

    from ensemble.runs.plan import ShardPlan
    from ensemble.runs.runkey import key_fields, run_key

    request = PredictRequest(data=open_data(npz), members="a,b", store=store, out=tmp_path / "s.csv")
    ensemble, source, _, _ = prepare(request)
    ids = source.ids()
    plan = ShardPlan(len(ids), 8)
    before = run_key(key_fields(ensemble, source, ids, plan, "rle", RleConvention(), None))
    assert run_key(key_fields(ensemble, source, ids, plan, "rle", RleConvention(), None)) == before
    ensemble.choices = [replace(ensemble.choices[0], runtime="openvino"), *ensemble.choices[1:]]
    assert run_key(key_fields(ensemble, source, ids, plan, "rle", RleConvention(), None)) != before
