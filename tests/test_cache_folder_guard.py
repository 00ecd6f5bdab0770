"""A cache folder that is, lies in, or holds a run's input is refused before anything is written there:
`ens fit`, `ens score` and `api.fit` with --cache-dir / cache_dir= on the member store or the data."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_unchanged, ens, one_line_error, snapshot

from ensemble import api
from ensemble.demo.synthetic import DemoSpec, write_demo
from ensemble.errors import EnsError


@pytest.fixture
def demo(tmp_path):
    path = tmp_path / "data" / "demo.npz"
    path.parent.mkdir()
    write_demo(path, DemoSpec(seed=3, n_train=40, n_test=12, height=16, width=32, n_aliens=0))
    return path


def common(demo, store):
    return ["--data", demo, "--models-dir", store, "--members", "a,b", "--val-fraction", "0.5"]


@pytest.mark.parametrize("command", [["fit"], ["score", "--val"]])
def test_a_cache_dir_holding_the_members_is_refused(tmp_path, demo, store, command):
    before = snapshot(tmp_path)
    result = ens(*command, *common(demo, store), "--cache-dir", store)
    one_line_error(result, "--cache-dir", "holds member", "choose a folder of its own")
    assert_unchanged(before, tmp_path)


@pytest.mark.parametrize("command", [["fit"], ["score", "--val"]])
def test_a_cache_dir_holding_the_data_is_refused(tmp_path, demo, store, command):
    before = snapshot(tmp_path)
    result = ens(*command, *common(demo, store), "--cache-dir", demo.parent)
    one_line_error(result, "--cache-dir", "holds --data", str(demo))
    assert_unchanged(before, tmp_path)


def test_a_cache_dir_above_every_input_is_refused(tmp_path, demo, store):
    before = snapshot(tmp_path)
    result = ens("fit", *common(demo, store), "--cache-dir", tmp_path)
    one_line_error(result, "--cache-dir", "a file the run reads")
    assert_unchanged(before, tmp_path)


def test_the_api_refuses_a_cache_dir_holding_the_members(tmp_path, store):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (8, 8, 12)).astype(np.uint8)
    masks = rng.integers(1, 5, (8, 8, 12)).astype(np.uint8)
    before = snapshot(tmp_path)
    with pytest.raises(EnsError, match="cache_dir= .* holds member"):
        api.fit(["a", "b"], images, masks, store=store, cache_dir=store)
    assert_unchanged(before, tmp_path)


def test_a_cache_dir_of_its_own_still_works(tmp_path, demo, store):
    result = ens("fit", *common(demo, store), "--cache-dir", tmp_path / "cache", "--out", tmp_path / "e.json")
    assert result.exit_code == 0, result.output
    assert any((tmp_path / "cache").iterdir())
