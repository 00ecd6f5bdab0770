"""No command writes over one of its own inputs (same path, symlink or hard link), every output is
checked before any work, and the CSV and its manifest are replaced together or not at all."""

from __future__ import annotations

import os

import numpy as np
import pytest
from conftest import assert_unchanged, ens, one_line_error, snapshot

from ensemble.errors import EnsError
from ensemble.files.atomic import atomic_files
from ensemble.members.ensemblefile import EnsembleSpec, write_spec
from ensemble.members.store import get_member
from ensemble.submission.io import write_submission


def base(tiny_npz, store):
    return ["--data", tiny_npz, "--models-dir", store]


def refused(before, *fragments, args, roots):
    """Run `ens *args`, expect the one-line refusal, and every file under `roots` unchanged."""
    line = one_line_error(ens(*args), *fragments)
    assert_unchanged(before, *roots)
    return line


# ens predict


def test_predict_out_is_the_data_file(tmp_path, tiny_npz, store):
    before = snapshot(tmp_path)
    refused(
        before,
        "--out",
        "same file as --data",
        args=["predict", *base(tiny_npz, store), "--members", "a,b", "--out", tiny_npz],
        roots=[tmp_path],
    )


def test_predict_out_is_a_member_through_a_symlink(tmp_path, tiny_npz, store):
    link = tmp_path / "sub.csv"
    link.symlink_to(store / "b.onnx")
    before = snapshot(tmp_path)
    refused(
        before,
        "same file as member 'b'",
        args=["predict", *base(tiny_npz, store), "--members", "a,b", "--out", link],
        roots=[tmp_path],
    )


def test_predict_out_is_a_member_through_a_hard_link(tmp_path, tiny_npz, store):
    hard = tmp_path / "sub.csv"
    os.link(store / "a.onnx", hard)
    before = snapshot(tmp_path)
    refused(
        before,
        "same file as member 'a'",
        args=["predict", *base(tiny_npz, store), "--members", "a,b", "--out", hard],
        roots=[tmp_path],
    )


def test_predict_manifest_would_overwrite_val_ids(tmp_path, tiny_npz, store):
    ids = tmp_path / "sub.manifest.json"
    ids.write_text("0,1,2\n")
    before = snapshot(tmp_path)
    args = ["predict", *base(tiny_npz, store), "--members", "a", "--split", "val", "--val-ids", ids]
    refused(
        before,
        "the manifest of --out",
        "--val-ids",
        args=[*args, "--out", tmp_path / "sub.csv"],
        roots=[tmp_path],
    )


def test_predict_save_probs_would_overwrite_the_data(tmp_path, tiny_npz, store):
    probs = tmp_path / "probs"
    probs.mkdir()
    os.link(tiny_npz, probs / "probs.npy")
    before = snapshot(tmp_path)
    args = ["predict", *base(tiny_npz, store), "--members", "a", "--save-probs", probs]
    refused(before, "--save-probs", "--data", args=[*args, "--out", tmp_path / "s.csv"], roots=[tmp_path])


def test_predict_out_is_the_ensemble_file(tmp_path, tiny_npz, store):
    members = [get_member(name, store) for name in ("a", "b")]
    spec = EnsembleSpec(
        members=("a", "b"),
        member_sha256=tuple(m.sha256 for m in members),
        weights=((1.0,) * 5, (1.0,) * 5),
        tta="none",
        min_area=(0,) * 5,
    )
    ensemble_file = write_spec(store / "ensemble.json", spec)
    before = snapshot(tmp_path)
    refused(
        before,
        "same file as the ensemble file",
        args=["predict", *base(tiny_npz, store), "--out", ensemble_file],
        roots=[tmp_path],
    )


def test_predict_manifest_target_is_a_folder_old_csv_kept(tmp_path, tiny_npz, store):
    out = tmp_path / "mf.csv"
    out.write_text("old submission\n")
    (tmp_path / "mf.manifest.json").mkdir()
    before = snapshot(tmp_path)
    refused(
        before,
        "mf.manifest.json",
        "is a folder",
        args=["predict", *base(tiny_npz, store), "--members", "a", "--out", out],
        roots=[tmp_path],
    )


def test_predict_out_under_a_regular_file_names_that_file(tmp_path, tiny_npz, store):
    blocker = tmp_path / "somefile.txt"
    blocker.write_text("x")
    before = snapshot(tmp_path)
    line = refused(
        before,
        "somefile.txt' is a file, not a folder",
        args=["predict", *base(tiny_npz, store), "--members", "a", "--out", blocker / "x.csv"],
        roots=[tmp_path],
    )
    assert "File exists" not in line


def test_predict_rerun_replaces_csv_and_manifest_together(tmp_path, tiny_npz, store):
    out = tmp_path / "sub.csv"
    args = ["predict", *base(tiny_npz, store), "--out", out]
    assert ens(*args, "--members", "a").exit_code == 0
    assert ens(*args, "--members", "b").exit_code == 0
    manifest = (tmp_path / "sub.manifest.json").read_text()
    assert '"name": "b"' in manifest and '"name": "a"' not in manifest
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


# the paired commit itself


def test_atomic_files_checks_every_target_before_renaming_any(tmp_path):
    first, second = tmp_path / "x.csv", tmp_path / "x.manifest.json"
    first.write_text("old")
    with pytest.raises(EnsError, match="is a folder"), atomic_files(first, second) as (tmp1, tmp2):
        tmp1.write_text("new csv")
        tmp2.write_text("new manifest")
        second.mkdir()  # appears while the run writes: only the commit can notice
    assert first.read_text() == "old" and second.is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.csv", "x.manifest.json"]


def test_atomic_files_commits_all_on_success(tmp_path):
    targets = [tmp_path / "a.csv", tmp_path / "sub" / "a.manifest.json"]
    with atomic_files(*targets) as temps:
        for tmp, text in zip(temps, ("csv", "json"), strict=True):
            tmp.write_text(text)
        assert not any(target.exists() for target in targets)
    assert [t.read_text() for t in targets] == ["csv", "json"]


# ens fit


def fit_args(tiny_npz, store, tmp_path):
    return ["fit", *base(tiny_npz, store), "--members", "a,b", "--cache-dir", tmp_path / "cache"]


def test_fit_out_is_the_data_through_a_symlink(tmp_path, tiny_npz, store):
    link = tmp_path / "ens.json"
    link.symlink_to(tiny_npz)
    before = snapshot(tmp_path)
    refused(
        before,
        "same file as --data",
        args=[*fit_args(tiny_npz, store, tmp_path), "--out", link],
        roots=[tmp_path],
    )


def test_fit_out_is_a_member_or_the_val_ids(tmp_path, tiny_npz, store):
    ids = tmp_path / "ids.txt"
    ids.write_text("0 1 2 3\n")
    before = snapshot(tmp_path)
    args = fit_args(tiny_npz, store, tmp_path)
    refused(before, "member 'b'", args=[*args, "--out", store / "b.onnx"], roots=[tmp_path])
    refused(before, "--val-ids", args=[*args, "--val-ids", ids, "--out", ids], roots=[tmp_path])


def test_fit_cache_dir_under_a_file_names_the_option(tmp_path, tiny_npz, store):
    blocker = tmp_path / "cachefile"
    blocker.write_text("x")
    before = snapshot(tmp_path)
    args = ["fit", *base(tiny_npz, store), "--members", "a", "--folds", "0", "--cache-dir", blocker / "sub"]
    line = refused(before, "cachefile' is a file, not a folder", "--cache-dir", args=args, roots=[tmp_path])
    assert "set ENS_CACHE" not in line and "File exists" not in line


# ens score


@pytest.fixture
def csv(tmp_path, tiny_npz):
    path = tmp_path / "sub.csv"
    labels = np.random.default_rng(1).integers(1, 5, (6, 8, 12))
    write_submission(path, np.arange(6), labels, "rle", 5)
    return path


def test_score_json_is_the_scored_csv(tmp_path, tiny_npz, csv):
    before = snapshot(tmp_path)
    args = ["score", csv, "--truth", tiny_npz]
    refused(before, "--json", "the scored CSV", args=[*args, "--json", csv], roots=[tmp_path])
    hard = tmp_path / "scores.json"
    os.link(tiny_npz, hard)
    before = snapshot(tmp_path)
    refused(before, "--truth", args=[*args, "--json", hard], roots=[tmp_path])


def test_score_ablation_json_and_plots_never_overwrite_inputs(tmp_path, tiny_npz, store):
    args = ["score", "--val", *base(tiny_npz, store), "--members", "a,b", "--cache-dir", tmp_path / "c"]
    before = snapshot(tmp_path)
    refused(before, "--json", "--data", args=[*args, "--json", tiny_npz], roots=[tmp_path])
    plots = tmp_path / "plots"
    plots.mkdir()
    (plots / "gallery.png").symlink_to(store / "a.onnx")
    before = snapshot(tmp_path)
    refused(before, "--plots", "member 'a'", args=[*args, "--plots", plots], roots=[tmp_path])


# ens convert and ens data grid


def test_convert_target_is_the_source(tmp_path, csv):
    link = tmp_path / "flat.csv"
    link.symlink_to(csv)
    before = snapshot(tmp_path)
    for target in (csv, link):
        args = ["convert", csv, target, "--to", "flat", "--shape", "8x12"]
        refused(before, "TARGET", "same file as SOURCE", args=args, roots=[tmp_path])


def test_data_grid_out_is_the_data(tmp_path, tiny_npz):
    hard = tmp_path / "grid.png"
    os.link(tiny_npz, hard)
    before = snapshot(tmp_path)
    for out in (tiny_npz, hard):
        args = ["data", "grid", tiny_npz, "--out", out]
        refused(before, "--out", "same file as the data file", args=args, roots=[tmp_path])
