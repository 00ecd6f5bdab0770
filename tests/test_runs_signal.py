"""A real `ens predict` process stopped by SIGTERM midway keeps its complete shards and nothing
half-written; the resumed run writes the same bytes as an uninterrupted one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
from conftest import write_npz
from onnx_members import make_member
from test_signals import stop_when

N_IMAGES = 600
SHARD = 40


def cli(args, cwd: Path, cache: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "ENS_CACHE": str(cache)}
    return subprocess.run(
        [sys.executable, "-m", "ensemble", *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True
    )


def test_sigterm_then_resume_gives_the_uninterrupted_bytes(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, (8, 32, 64))
    write_npz(
        tmp_path / "d.npz",
        train,
        rng.integers(0, 5, (8, 32, 64)),
        rng.integers(0, 256, (N_IMAGES, 32, 64)),
        dtype=np.uint8,
    )
    make_member(tmp_path / "models" / "a.onnx")
    cache = tmp_path / "cache"
    monkeypatch.setenv("ENS_CACHE", str(cache))  # the stopped process inherits it
    args = [
        "predict",
        "--data",
        "d.npz",
        "--members",
        "a",
        "--batch-size",
        2,
        "--shard-size",
        SHARD,
        "--min-area",
        3,
    ]

    def some_shards() -> bool:
        return len(list(cache.glob("runs/*/shard-*.npz"))) >= 3

    stopped = stop_when([*args, "--out", "s.csv"], tmp_path, some_shards, signal.SIGTERM)
    assert stopped.returncode == 143, stopped.stderr
    assert "Traceback" not in stopped.stderr and "stopped by SIGTERM" in stopped.stderr
    assert "rerun the same command to resume" in stopped.stderr
    assert not (tmp_path / "s.csv").exists()
    (run_dir,) = (cache / "runs").iterdir()
    names = sorted(p.name for p in run_dir.iterdir())
    kept = [n for n in names if n.startswith("shard-")]
    assert names == ["run.json", *kept]  # no temp file: every shard left is complete
    assert 3 <= len(kept) < N_IMAGES // SHARD

    resumed = cli([*args, "--out", "s.csv"], tmp_path, cache)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming: {len(kept)} of {N_IMAGES // SHARD} shards done" in resumed.stderr
    assert not (cache / "runs" / run_dir.name).exists()

    whole = cli([*args, "--out", "whole.csv"], tmp_path, tmp_path / "other-cache")
    assert whole.returncode == 0, whole.stderr
    assert "resuming" not in whole.stderr
    assert (tmp_path / "s.csv").read_bytes() == (tmp_path / "whole.csv").read_bytes()
