"""Resumed runs trust only their own shards: a shard edited (even with its checksum recomputed),
copied or linked from another run, holding a confusion matrix that cannot be its own, or replaced
by a folder or a FIFO is recomputed; an image edited in place keeps no shard; two runs of the same
settings never share a run directory; a failed run leaves no empty run directory behind."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_unchanged, ens, one_line_error, snapshot, write_npz
from hypothesis import given
from hypothesis import strategies as st
from onnx_members import make_member
from PIL import Image
from test_folders import write_folder
from test_fuzz import EDITS, FUZZ, _mutate

SHARDS = 6  # 23 test images in shards of 4


@pytest.fixture
def npz(tmp_path):
    rng = np.random.default_rng(3)
    train = rng.integers(0, 256, (20, 8, 12))
    return write_npz(
        tmp_path / "d.npz", train, rng.integers(0, 5, (20, 8, 12)), rng.integers(0, 256, (23, 8, 12))
    )


def cache() -> Path:
    return Path(os.environ["ENS_CACHE"]) / "runs"


def run_dirs() -> list[Path]:
    return sorted(cache().iterdir()) if cache().exists() else []


def predict(npz, store, out: Path, *extra):
    args = ["predict", "--data", npz, "--members", "a,b", "--models-dir", store, "--shard-size", 4]
    return ens(*args, "--out", out, *extra)


def first_run(tmp_path, npz, store, *extra) -> tuple[Path, Path]:
    """A complete run whose shards are kept: (its run directory, its CSV)."""
    out = tmp_path / "first.csv"
    before = set(run_dirs())
    result = predict(npz, store, out, "--keep-shards", *extra)
    assert result.exit_code == 0, result.output
    (directory,) = set(run_dirs()) - before
    return directory, out


def load(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as stored:
        return {name: stored[name] for name in stored.files}


def save(path: Path, arrays: dict) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    path.write_bytes(buffer.getvalue())


def old_checksum(ids: np.ndarray, rows: bytes) -> np.ndarray:
    """The checksum a shard held before it was bound to its run: sha256 of its ids and rows."""
    digest = hashlib.sha256("\n".join(str(i) for i in ids.tolist()).encode() + b"\0" + rows)
    return np.array(digest.hexdigest())


@contextlib.contextmanager
def deadline(seconds: int):
    """Fail instead of hanging (a FIFO opened for reading blocks until a writer comes)."""

    def expire(signum, frame):
        raise TimeoutError(f"the command hung for {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def manifest(csv: Path) -> dict:
    return json.loads(csv.with_name(csv.stem + ".manifest.json").read_text())


# ---- shards bound to their run and content ----------------------------------------------------------


def test_edited_rows_with_recomputed_checksum_are_recomputed(tmp_path, store, npz):
    directory, first = first_run(tmp_path, npz, store)
    path = directory / "shard-000001.npz"
    arrays = load(path)
    rows = arrays["rows"].tobytes()
    edited = rows.replace(b"_1,", b"_9,", 1) if b"_1," in rows else b"0" + rows[1:]
    assert edited != rows
    arrays["rows"] = np.frombuffer(edited, np.uint8)
    arrays["sha256"] = old_checksum(arrays["ids"], edited)
    save(path, arrays)
    result = predict(npz, store, tmp_path / "second.csv")
    assert result.exit_code == 0, result.output
    assert "shard-000001.npz" in result.output and "recomputing it" in result.output
    assert f"resuming: {SHARDS - 1} of {SHARDS} shards done" in result.output
    assert (tmp_path / "second.csv").read_bytes() == first.read_bytes()


def test_edited_val_confusion_is_recomputed(tmp_path, store, npz):
    directory, first = first_run(tmp_path, npz, store, "--split", "val")
    path = directory / "shard-000000.npz"
    arrays = load(path)
    confusion = arrays["confusion"].copy()
    confusion[1, 1] += 7
    confusion[1, 2] -= min(7, int(confusion[1, 2]))  # still counts >= 0
    arrays["confusion"] = confusion
    save(path, arrays)  # its checksum of ids and rows still matches
    second = tmp_path / "second.csv"
    result = predict(npz, store, second, "--split", "val")
    assert result.exit_code == 0, result.output
    assert "shard-000000.npz" in result.output and "recomputing it" in result.output
    assert second.read_bytes() == first.read_bytes()
    assert manifest(second)["val_confusion"] == manifest(first)["val_confusion"]


@pytest.mark.parametrize("how", ["copy", "symlink", "hardlink"])
def test_shard_from_a_run_with_other_weights_is_recomputed(tmp_path, store, npz, how):
    directory, first = first_run(tmp_path, npz, store)
    other = tmp_path / "other"
    other.mkdir()
    foreign, other_csv = first_run(other, npz, store, "--weights", "a=1,b=0.05")
    assert other_csv.read_bytes() != first.read_bytes()
    target = directory / "shard-000002.npz"
    target.unlink()
    source = foreign / "shard-000002.npz"
    {"copy": lambda: target.write_bytes(source.read_bytes()), "symlink": lambda: target.symlink_to(source),
     "hardlink": lambda: os.link(source, target)}[how]()  # fmt: skip
    before = snapshot(foreign)
    result = predict(npz, store, tmp_path / "second.csv")
    assert result.exit_code == 0, result.output
    assert "shard-000002.npz" in result.output and "recomputing it" in result.output
    assert f"resuming: {SHARDS - 1} of {SHARDS} shards done" in result.output
    assert (tmp_path / "second.csv").read_bytes() == first.read_bytes()
    assert_unchanged(before, foreign)  # the other run's shard is not touched through the link


def test_a_3x3_confusion_in_a_5_class_shard_is_recomputed(tmp_path, store, npz):
    directory, first = first_run(tmp_path, npz, store, "--split", "val")
    path = directory / "shard-000000.npz"
    arrays = load(path)
    arrays["confusion"] = np.ones((3, 3), np.int64)
    save(path, arrays)
    second = tmp_path / "second.csv"
    result = predict(npz, store, second, "--split", "val")
    assert result.exit_code == 0, result.output
    assert "shard-000000.npz" in result.output and "recomputing it" in result.output
    assert manifest(second)["val_confusion"] == manifest(first)["val_confusion"]


@pytest.mark.parametrize(
    ("confusion", "fragment"),
    [
        (np.ones((3, 3), np.int64), "3x3 confusion matrix but this run has 5 classes"),
        (np.full((5, 5), -1, np.int64), "negative count"),
        (np.ones((5, 5), np.int64), "counts 25 pixels but its images hold 96"),
        (np.ones((5, 5, 1), np.int64), "not a C x C matrix"),
    ],
)
def test_a_confusion_matrix_that_cannot_be_the_shards_is_damaged(tmp_path, confusion, fragment):
    """Even with a checksum that matches, a shard's matrix must be C x C counts of its pixels."""
    from ensemble.runs.plan import ShardPlan
    from ensemble.runs.shards import RunShards, complete_shards, read_shard, write_shard

    directory = tmp_path / "run"
    directory.mkdir()
    ids = np.arange(2)
    expected = RunShards(ShardPlan(2, 2), ids, 5, np.full(2, 48))
    write_shard(directory, 0, ids, b"rows\n", np.diag([90, 6, 0, 0, 0]))
    assert read_shard(directory, 0, expected).confusion.sum() == 96
    write_shard(directory, 0, ids, b"rows\n", confusion)
    done, problems = complete_shards(directory, expected)
    assert done == [] and len(problems) == 1 and fragment in problems[0], problems
    assert not (directory / "shard-000000.npz").exists()


# ---- an image edited in place ----------------------------------------------------------------------


def test_image_edited_in_place_with_same_size_and_mtime_keeps_no_shard(tmp_path):
    make_member(tmp_path / "models" / "a.onnx", channels=3, seed=1)
    images, _ = write_folder(tmp_path / "data", [(8, 8)] * 6, masks=False, suffix=".bmp")
    args = ["predict", "--data", images, "--members", "a", "--models-dir", tmp_path / "models"]
    args += ["--shard-size", 2]
    first = ens(*args, "--out", tmp_path / "first.csv", "--keep-shards")
    assert first.exit_code == 0, first.output
    edited = images / "img_003.bmp"
    info = edited.stat()
    pixels = np.asarray(Image.open(edited))
    Image.fromarray((255 - pixels).astype(np.uint8)).save(edited)
    os.utime(edited, ns=(info.st_atime_ns, info.st_mtime_ns))
    assert edited.stat().st_size == info.st_size and edited.stat().st_mtime_ns == info.st_mtime_ns
    second = ens(*args, "--out", tmp_path / "second.csv", "--keep-shards")
    assert second.exit_code == 0, second.output
    assert "resuming" not in second.output
    fresh = ens(*args, "--out", tmp_path / "fresh.csv", "--fresh")
    assert fresh.exit_code == 0, fresh.output
    assert (tmp_path / "second.csv").read_bytes() == (tmp_path / "fresh.csv").read_bytes()
    assert (tmp_path / "second.csv").read_bytes() != (tmp_path / "first.csv").read_bytes()


# ---- the run lock ----------------------------------------------------------------------------------

HOLDER = textwrap.dedent(
    """
    import fcntl, os, sys
    fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.write(fd, str(os.getpid()).encode())
    print("held", flush=True)
    sys.stdin.read()
    """
)


def test_a_second_run_of_the_same_settings_names_the_process_holding_the_run(tmp_path, store, npz):
    directory, first = first_run(tmp_path, npz, store)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(directory / "run.lock")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        before = snapshot(tmp_path, directory)
        result = predict(npz, store, tmp_path / "second.csv")
        one_line_error(result, "in use by process", str(holder.pid), "wait for it to finish")
        assert_unchanged(before, tmp_path, directory)
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    result = predict(npz, store, tmp_path / "second.csv")
    assert result.exit_code == 0, result.output
    assert f"resuming: {SHARDS} of {SHARDS}" in result.output
    assert (tmp_path / "second.csv").read_bytes() == first.read_bytes()
    assert run_dirs() == []


def test_a_run_started_while_another_runs_the_same_settings_is_refused(tmp_path, store, npz):
    """The second run starts in the middle of the first (from its progress callback): it is refused
    in one line, and the first still assembles its CSV from its own shards."""
    from ensemble.data.datafile import open_data
    from ensemble.runs.predict import PredictRequest
    from ensemble.runs.predict import predict as predict_request
    from ensemble.runs.resumable import RunOptions

    second = []

    def start_another(count):
        if not second:
            second.append(predict(npz, store, tmp_path / "second.csv"))

    request = PredictRequest(
        data=open_data(npz), members="a,b", store=store, out=tmp_path / "first.csv",
        run=RunOptions(shard_size=4),
    )  # fmt: skip
    predict_request(request, on_batch=start_another)
    one_line_error(second[0], "in use by process", str(os.getpid()))
    assert not (tmp_path / "second.csv").exists()
    alone = predict(npz, store, tmp_path / "alone.csv")
    assert alone.exit_code == 0 and "resuming" not in alone.output
    assert (tmp_path / "first.csv").read_bytes() == (tmp_path / "alone.csv").read_bytes()
    assert run_dirs() == []


def test_the_lock_is_held_while_the_run_is_open_and_released_after(tmp_path):
    from ensemble.errors import EnsError
    from ensemble.runs.rundir import lock_run_dir

    directory = tmp_path / "run"
    lock = lock_run_dir(directory)
    assert (directory / "run.lock").read_text().strip() == str(os.getpid())
    with pytest.raises(EnsError, match=f"in use by process {os.getpid()}"):
        lock_run_dir(directory)
    lock.release()
    assert not (directory / "run.lock").exists()
    lock_run_dir(directory).release()


# ---- cleanup after a failure -----------------------------------------------------------------------


def test_a_failed_run_leaves_no_run_directory_without_shards(tmp_path, store, npz):
    make_member(tmp_path / "bad" / "a.onnx", nan=True)  # refused at its first batch
    result = ens(
        "predict", "--data", npz, "--members", "a", "--models-dir", tmp_path / "bad",
        "--out", tmp_path / "s.csv",
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    assert run_dirs() == []
    one_line_error(predict(npz, store, tmp_path / "s.csv", "--resume"), "--resume found no complete shard")
    assert run_dirs() == []


# ---- folders and FIFOs in place of files ---------------------------------------------------------


@pytest.mark.parametrize("kind", ["folder", "fifo"])
@pytest.mark.parametrize("name", ["shard-000003.npz", "run.json"])
def test_a_folder_or_fifo_in_place_of_a_run_file_is_damaged(tmp_path, store, npz, kind, name):
    directory, first = first_run(tmp_path, npz, store)
    path = directory / name
    path.unlink()
    if kind == "folder":
        path.mkdir()
        (path / "inside").write_text("x")
    else:
        os.mkfifo(path)
    with deadline(60):
        result = predict(npz, store, tmp_path / "second.csv")
    assert result.exit_code == 0, result.output
    assert name in result.output and "not a plain file" in result.output
    resumed = SHARDS - 1 if name.startswith("shard") else 0
    assert ("resuming" in result.output) == bool(resumed)
    assert (tmp_path / "second.csv").read_bytes() == first.read_bytes()
    assert run_dirs() == []


def test_a_link_in_place_of_the_run_directory_is_replaced(tmp_path, store, npz):
    directory, first = first_run(tmp_path, npz, store)
    elsewhere = tmp_path / "elsewhere"
    directory.rename(elsewhere)
    directory.symlink_to(elsewhere)
    before = snapshot(elsewhere)
    result = predict(npz, store, tmp_path / "second.csv")
    assert result.exit_code == 0, result.output
    assert "resuming" not in result.output
    assert (tmp_path / "second.csv").read_bytes() == first.read_bytes()
    assert_unchanged(before, elsewhere)


# ---- fuzzing the shard and run.json readers -----------------------------------------------------


def _valid_shard(directory: Path) -> bytes:
    from ensemble.runs.shards import shard_path, write_shard

    write_shard(directory, 0, np.array(["a", "b"]), b"a_1,1 2\nb_1,\n", np.diag([40, 8, 0, 0, 0]))
    return shard_path(directory, 0).read_bytes()


@FUZZ
@given(edits=EDITS, raw=st.one_of(st.none(), st.binary(max_size=300)))
def test_shard_reader_gives_a_shard_or_ens_error(tmp_path_factory, edits, raw):
    from ensemble.errors import EnsError
    from ensemble.runs.plan import ShardPlan
    from ensemble.runs.shards import RunShards, complete_shards, read_shard, shard_path

    directory = tmp_path_factory.mktemp("fuzz") / "0123456789abcdef0123456789abcdef"
    directory.mkdir()
    valid = _valid_shard(directory)
    shard_path(directory, 0).write_bytes(_mutate(valid, edits) if raw is None else raw)
    expected = RunShards(ShardPlan(2, 2), np.array(["a", "b"]), 5, np.array([24, 24]))
    try:
        shard = read_shard(directory, 0, expected)
        assert shard.ids.tolist() == ["a", "b"] and shard.confusion.sum() == 48
    except EnsError as exc:
        assert "\n" not in str(exc)
    done, problems = complete_shards(directory, expected)
    assert len(done) + len(problems) == 1


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


@FUZZ
@given(record=st.one_of(st.binary(max_size=200), JSON.map(lambda v: json.dumps(v).encode())))
def test_run_record_reader_gives_a_run_directory(tmp_path_factory, record):
    from ensemble.runs.rundir import lock_run_dir, open_run_dir

    directory = tmp_path_factory.mktemp("fuzz") / "run"
    lock = lock_run_dir(directory)
    try:
        _valid_shard(directory)
        (directory / "run.json").write_bytes(record)
        fields = {"members": ["x"], "shard_size": 4}
        problems = open_run_dir(directory, fields)
        assert all("\n" not in p for p in problems)
        assert json.loads((directory / "run.json").read_text()) == fields
        assert not (directory / "shard-000000.npz").exists()  # not this run's settings: emptied
    finally:
        lock.release()


# ---- ens cache list|clean -------------------------------------------------------------------------


def test_cache_list_and_clean_spare_a_run_in_progress(tmp_path, store, npz):
    from ensemble.runs.rundir import lock_run_dir

    kept, _ = first_run(tmp_path, npz, store)
    orphan = cache() / ("0" * 32)
    orphan.mkdir()
    (orphan / "run.json").write_text("{}\n")
    busy = cache() / ("f" * 32)
    lock = lock_run_dir(busy)
    try:
        (busy / "shard-000000.npz").write_bytes(b"x")
        listed = ens("cache", "list")
        assert listed.exit_code == 0, listed.output
        assert kept.name in listed.output and orphan.name in listed.output
        assert f"in use by process {os.getpid()}" in listed.output
        before = snapshot(busy)
        cleaned = ens("cache", "clean")
        assert cleaned.exit_code == 0, cleaned.output
        assert "removed 2 run directories" in cleaned.output and "kept 1 in use" in cleaned.output
        assert run_dirs() == [busy]
        assert_unchanged(before, busy)
    finally:
        lock.release()
    assert "removed 1 run directory" in ens("cache", "clean").output
    assert run_dirs() == []
    assert "no run directories" in ens("cache", "list").output
