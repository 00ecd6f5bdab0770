"""`ens predict --engine ray` on a local Ray cluster (num_cpus=2): the same shards and CSV bytes as
the local engine, resuming across engines, and actors killed mid-run retried without losing or
duplicating an image. Skipped without the `ens[ray]` extra, except the missing-extra message."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_unchanged, ens, one_line_error, snapshot, write_npz
from onnx_members import make_member
from test_folders import write_folder

from ensemble.data.datafile import open_data
from ensemble.data.folder import open_folder
from ensemble.inference.options import PredictOptions
from ensemble.runs.predict import PredictRequest, predict
from ensemble.runs.resumable import RunOptions


@pytest.fixture
def npz(tmp_path):
    rng = np.random.default_rng(5)
    test = rng.integers(0, 256, (90, 16, 24))
    return write_npz(tmp_path / "d.npz", test[:10], rng.integers(0, 5, (10, 16, 24)), test, dtype=np.uint8)


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray", reason="the ens[ray] extra is not installed")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


def request(data, store, out, engine="local", workers=2, fmt="rle", shard_size=8, keep=False, resume=False):
    ray_options = {"workers": workers, "gpus_per_worker": 0} if engine == "ray" else {}
    return PredictRequest(
        data=data,
        members="a,b",
        store=store,
        min_area="2",
        fmt=fmt,
        out=out,
        options=PredictOptions(batch_size=3, threads=1),
        run=RunOptions(shard_size=shard_size, engine=engine, keep=keep, resume=resume, **ray_options),
    )


def test_missing_ray_is_one_line_with_the_install_hint(tmp_path, store, npz, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    before = snapshot(tmp_path)
    result = ens(
        "predict",
        "--data",
        npz,
        "--members",
        "a",
        "--models-dir",
        store,
        "--engine",
        "ray",
        "--out",
        tmp_path / "s.csv",
    )
    one_line_error(result, "--engine ray", "pip install 'ens[ray]'")
    assert_unchanged(before, tmp_path)


@pytest.mark.parametrize("fmt", ["rle", "flat"])
def test_ray_csv_is_byte_identical_to_the_local_engine(ray_cluster, tmp_path, store, npz, fmt):
    local = predict(request(open_data(npz), store, tmp_path / "local.csv", fmt=fmt))
    remote = predict(request(open_data(npz), store, tmp_path / "ray.csv", engine="ray", fmt=fmt))
    assert remote.csv.read_bytes() == local.csv.read_bytes()


def test_ray_on_a_folder_of_mixed_sizes(ray_cluster, tmp_path):
    make_member(tmp_path / "models" / "a.onnx", channels=3, seed=1)
    make_member(tmp_path / "models" / "b.onnx", channels=3, seed=2)
    sizes = [(8, 8), (6, 10), (8, 8), (6, 10), (6, 10), (8, 8), (5, 7), (8, 8), (6, 10)] * 2
    images, _ = write_folder(tmp_path / "data", sizes, masks=False, names=[f"im{k}" for k in range(18)])
    local = predict(request(open_folder(images), tmp_path / "models", tmp_path / "l.csv", shard_size=4))
    remote = predict(
        request(open_folder(images), tmp_path / "models", tmp_path / "r.csv", "ray", shard_size=4)
    )
    assert remote.csv.read_bytes() == local.csv.read_bytes()


def test_ray_resumes_the_shards_of_a_local_run(ray_cluster, tmp_path, store, npz):
    whole = predict(request(open_data(npz), store, tmp_path / "whole.csv", keep=True))
    (run_dir,) = (Path(os.environ["ENS_CACHE"]) / "runs").iterdir()
    for shard in sorted(run_dir.glob("shard-*.npz"))[::2]:
        shard.unlink()
    notes = []
    resumed = predict(
        request(open_data(npz), store, tmp_path / "r.csv", "ray", resume=True), on_note=notes.append
    )
    assert any(n.startswith("resuming: 6 of 12 shards done") for n in notes), notes
    assert resumed.reused_shards == 6
    assert resumed.csv.read_bytes() == whole.csv.read_bytes()


def actor_pids() -> list[int]:
    """Processes of this cluster's ShardPredictor actors (Ray titles them after the class)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                title = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if b"ShardPredictor" in title and int(entry.name) != os.getpid():
                pids.append(int(entry.name))
    return pids


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the actor processes in /proc")
def test_an_actor_killed_mid_run_is_retried_without_losing_or_duplicating_an_image(
    ray_cluster, tmp_path, store, npz
):
    cache = Path(os.environ["ENS_CACHE"])
    local = predict(request(open_data(npz), store, tmp_path / "local.csv", shard_size=4))
    killed = []

    def kill_one_actor() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            pids = actor_pids()
            done = len(list(cache.glob("runs/*/shard-*.npz")))
            if pids and done:
                os.kill(pids[0], signal.SIGKILL)
                killed.append(done)
                return
            time.sleep(0.02)

    killer = threading.Thread(target=kill_one_actor)
    killer.start()
    remote = predict(request(open_data(npz), store, tmp_path / "ray.csv", "ray", shard_size=4))
    killer.join()
    assert killed and killed[0] < 23, f"no actor was killed mid-run ({killed})"  # 90 images, shards of 4
    assert remote.csv.read_bytes() == local.csv.read_bytes()


@pytest.mark.slow
def test_ray_run_stopped_by_sigterm_resumes_to_the_same_bytes(tmp_path, store, npz):
    pytest.importorskip("ray", reason="the ens[ray] extra is not installed")
    cache = tmp_path / "cache"
    env = {**os.environ, "ENS_CACHE": str(cache)}
    args = [
        sys.executable,
        "-m",
        "ensemble",
        "predict",
        "--data",
        npz,
        "--members",
        "a,b",
        "--models-dir",
        store,
    ]
    args += [
        "--shard-size",
        2,
        "--batch-size",
        1,
        "--min-area",
        2,
        "--engine",
        "ray",
        "--workers",
        2,
        "--out",
        tmp_path / "s.csv",
    ]
    process = subprocess.Popen(
        list(map(str, args)), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 300
    while len(list(cache.glob("runs/*/shard-*.npz"))) < 2:
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr
    assert "Traceback" not in stderr
    (run_dir,) = (cache / "runs").iterdir()
    assert all(p.name == "run.json" or p.name.startswith("shard-") for p in run_dir.iterdir())
    resumed = subprocess.run(list(map(str, args)), env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming:" in resumed.stderr
    whole = subprocess.run(
        list(map(str, args[: args.index("--engine")] + ["--out", tmp_path / "w.csv"])),
        env={**env, "ENS_CACHE": str(tmp_path / "other")},
        capture_output=True,
        text=True,
    )
    assert whole.returncode == 0, whole.stderr
    assert (tmp_path / "s.csv").read_bytes() == (tmp_path / "w.csv").read_bytes()


def test_ray_only_options_without_the_ray_engine_are_one_line(tmp_path, store, npz):
    before = snapshot(tmp_path)
    base = ["predict", "--data", npz, "--members", "a", "--models-dir", store, "--out", tmp_path / "s.csv"]
    one_line_error(ens(*base, "--gpus-per-worker", 1), "--gpus-per-worker only apply to --engine ray")
    one_line_error(ens(*base, "--ray-address", "auto"), "--ray-address only apply to --engine ray")
    assert_unchanged(before, tmp_path)


def test_a_damaged_image_read_by_an_actor_is_one_line(ray_cluster, tmp_path):
    make_member(tmp_path / "models" / "a.onnx", channels=3, seed=1)
    images, _ = write_folder(tmp_path / "data", [(16, 16)] * 6, masks=False)
    whole = (images / "img_004.png").read_bytes()
    (images / "img_004.png").write_bytes(whole[: len(whole) // 2])
    before = snapshot(tmp_path)
    result = ens(
        "predict", "--data", images, "--members", "a", "--models-dir", tmp_path / "models",
        "--engine", "ray", "--shard-size", 2, "--out", tmp_path / "s.csv",
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines[-1].startswith("error: ") and "img_004.png" in lines[-1], lines
    assert all("Traceback" not in line for line in lines)
    assert not (tmp_path / "s.csv").exists()
    assert_unchanged(before, tmp_path)


def test_ray_actors_run_the_drivers_openvino_members(ray_cluster, tmp_path, store, npz):
    pytest.importorskip("openvino")
    base = ["predict", "--data", npz, "--members", "a,b", "--models-dir", store, "--runtime", "openvino"]
    local = ens(*base, "--out", tmp_path / "local.csv")
    remote = ens(*base, "--engine", "ray", "--out", tmp_path / "ray.csv")
    assert local.exit_code == 0 and remote.exit_code == 0, remote.output
    assert (tmp_path / "ray.csv").read_bytes() == (tmp_path / "local.csv").read_bytes()
    manifest = json.loads((tmp_path / "ray.manifest.json").read_text())
    assert [m["runtime"]["runtime"] for m in manifest["members"]] == ["openvino", "openvino"]
