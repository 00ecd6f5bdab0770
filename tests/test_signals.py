"""Ctrl-C, SIGTERM and SIGHUP in the middle of a real `ens predict` / `ens fit` process: exit
128 + signal in one line, no temp file left, every existing output byte-identical."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_unchanged, snapshot, write_npz
from onnx_members import make_member

N_IMAGES = 400  # at --batch-size 1 a run takes seconds, long enough to be stopped mid-way


@pytest.fixture
def workdir(tmp_path):
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, (2 * N_IMAGES, 32, 64))
    masks = rng.integers(0, 5, (2 * N_IMAGES, 32, 64))
    write_npz(tmp_path / "d.npz", train, masks, rng.integers(0, 256, (N_IMAGES, 32, 64)), dtype=np.uint8)
    make_member(tmp_path / "models" / "a.onnx")
    return tmp_path


def stop_when(args, cwd: Path, ready, signum: int) -> subprocess.CompletedProcess:
    """Start `python -m ensemble *args`, send `signum` once `ready()` is true, wait for the exit."""
    process = subprocess.Popen(
        [sys.executable, "-m", "ensemble", *map(str, args)],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 300
    while not ready():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            stdout, stderr = process.communicate()
            raise AssertionError(f"the run ended before it could be stopped: {stdout}{stderr}")
        time.sleep(0.005)
    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=120)
    return subprocess.CompletedProcess(args, process.returncode, stdout, stderr)


def assert_one_line(result, code: int, words: str) -> None:
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], lines


@pytest.mark.parametrize(
    ("signum", "code", "words"),
    [
        (signal.SIGTERM, 143, "stopped by SIGTERM"),
        (signal.SIGHUP, 129, "stopped by SIGHUP"),
        (signal.SIGINT, 130, "interrupted"),
    ],  # fmt: skip
)
def test_signal_mid_predict_leaves_no_temp_and_keeps_old_outputs(
    workdir, signum, code, words, tmp_path_factory, monkeypatch
):
    cache = tmp_path_factory.mktemp("cache")  # the run's shards are kept there, outside the workdir
    monkeypatch.setenv("ENS_CACHE", str(cache))
    (workdir / "s.csv").write_text("old submission\n")
    (workdir / "s.manifest.json").write_text("{}\n")
    (workdir / "probs").mkdir()
    (workdir / "probs" / "probs.npy").write_bytes(b"old probabilities")
    (workdir / "probs" / "ids.npy").write_bytes(b"old ids")
    before = snapshot(workdir)

    def writing() -> bool:  # the run's shard (probabilities included) being computed, or assembled
        assembling = any(workdir.glob(".s.csv.*.tmp")) and any((workdir / "probs").glob(".probs.npy.*.tmp"))
        return assembling or any(cache.glob("runs/*/run.json"))

    args = ["predict", "--data", "d.npz", "--members", "a", "--batch-size", 1, "--out", "s.csv"]
    result = stop_when([*args, "--save-probs", "probs"], workdir, writing, signum)
    assert_one_line(result, code, words)
    assert_unchanged(before, workdir)
    kept = sorted(p.name for p in cache.glob("runs/*/*"))  # a shard may have been committed just before
    assert all(name == "run.json" or name.startswith("shard-") for name in kept), kept
    assert not kept or any(name.startswith("shard-") for name in kept), "an empty run keeps no directory"


def test_sigterm_mid_fit_leaves_no_cache_temp_and_keeps_the_ensemble_file(workdir):
    (workdir / "models" / "ensemble.json").write_text('{"old": true}\n')
    before = snapshot(workdir)
    cache = workdir / "cache"

    def caching() -> bool:
        return any(cache.glob(".*.tmp"))

    args = ["fit", "--data", "d.npz", "--members", "a", "--batch-size", 1, "--cache-dir", cache]
    result = stop_when([*args, "--val-fraction", 0.5, "--tta", "none"], workdir, caching, signal.SIGTERM)
    assert_one_line(result, 143, "stopped by SIGTERM")
    assert_unchanged(before, workdir)
