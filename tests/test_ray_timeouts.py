"""`ens predict --engine ray` never hangs on a cluster it cannot use: an address nobody answers on and
actors no node can hold end in one line within seconds; Ray's C++ log lines stay off the terminal.
Skipped without the `ens[ray]` extra."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from conftest import assert_unchanged, ens, one_line_error, snapshot, write_npz

ray = pytest.importorskip("ray", reason="the ens[ray] extra is not installed")


@pytest.fixture
def npz(tmp_path):
    rng = np.random.default_rng(5)
    test = rng.integers(0, 256, (12, 16, 24))
    return write_npz(tmp_path / "d.npz", test[:4], rng.integers(0, 5, (4, 16, 24)), test, dtype=np.uint8)


@pytest.fixture(scope="module")
def cluster():
    """A local cluster of one CPU and no GPU, started once for the tests that need one."""
    ray.init(num_cpus=1, num_gpus=0, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


def predict_args(tmp_path, store, npz, *more):
    return [
        "predict", "--data", npz, "--members", "a", "--models-dir", store, "--engine", "ray",
        "--shard-size", 6, "--out", tmp_path / "s.csv", *more,
    ]  # fmt: skip


def within(seconds: float, *args):
    """Run `ens *args` in a thread; the result, or a failure when it is still running after `seconds`
    (the run then stays behind, blocked in Ray, until the cluster shuts down)."""
    results = []
    worker = threading.Thread(target=lambda: results.append(ens(*args)), daemon=True)
    start = time.monotonic()
    worker.start()
    worker.join(seconds)
    assert results, f"`ens {' '.join(map(str, args[:1]))}` was still waiting after {seconds} s"
    return results[0], time.monotonic() - start


@pytest.mark.parametrize("address", ["127.0.0.1:1", "ray://127.0.0.1:1"])
def test_an_address_nobody_answers_on_is_one_line_within_seconds(tmp_path, store, npz, address):
    if ray.is_initialized():
        pytest.skip("a Ray session of this process is already running; --ray-address is not used then")
    before = snapshot(tmp_path)
    result, took = within(60, *predict_args(tmp_path, store, npz, "--ray-address", address))
    one_line_error(
        result,
        f"cannot reach the Ray cluster at '{address}'",
        "TCP connection to 127.0.0.1:1",
        "the limit is 5 s",
    )
    assert took < 20, took
    assert not ray.is_initialized()
    assert_unchanged(before, tmp_path)


def test_ray_native_log_lines_stay_off_the_terminal(cluster, tmp_path, store, npz, capfd):
    result = ens(*predict_args(tmp_path, store, npz, "--gpus-per-worker", 0))
    assert result.exit_code == 0, result.output
    native = capfd.readouterr().err
    assert "core_worker" not in native and "] E " not in native, native
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("wrote "), result.output


def test_more_gpus_per_worker_than_any_node_has_is_refused_at_once(cluster, tmp_path, store, npz):
    before = snapshot(tmp_path)
    result, took = within(60, *predict_args(tmp_path, store, npz, "--gpus-per-worker", 4))
    one_line_error(
        result, "--gpus-per-worker 4", "no node of the Ray cluster", "1 CPU and 4 GPU(s)", "at most 0 GPU"
    )
    assert took < 20, took
    assert not (tmp_path / "s.csv").exists()
    assert_unchanged(before, tmp_path)


def test_a_joined_cluster_gets_a_bounded_wait_for_room_for_one_actor(cluster):
    """A cluster ens joined may be busy or scaling up, so it waits, but not forever."""
    from ensemble.errors import EnsError
    from ensemble.runs.raycluster import wait_for_room

    start = time.monotonic()
    with pytest.raises(EnsError) as refused:
        wait_for_room(ray, 4, "head:6379", timeout=2)
    assert time.monotonic() - start < 15
    message = str(refused.value)
    for fragment in ("at 'head:6379'", "1 CPU and 4 GPU(s)", "within 2 s (the limit)", "at most 0 GPU(s)"):
        assert fragment in message, message
    wait_for_room(ray, 0, "head:6379", timeout=30)  # room now: it returns
    deadline = time.monotonic() + 10
    while ray.available_resources().get("CPU", 0) < 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert ray.available_resources().get("CPU", 0) == 1  # both placeholders are gone
