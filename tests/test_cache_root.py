"""One cache root, read at call time: setting ENS_CACHE after `ensemble` was imported moves every cache
(the probability cache of `ens fit` and `ens score` too, not only the run shards and runtime times)."""

from __future__ import annotations

import importlib

from conftest import ens

from ensemble.files import cachedir


def test_fit_caches_probabilities_under_the_current_ens_cache(tmp_path, monkeypatch, tiny_npz, store):
    importlib.import_module("ensemble.fitting.cache")  # imported before ENS_CACHE is set
    root = tmp_path / "late-cache"
    monkeypatch.setenv("ENS_CACHE", str(root))
    result = ens("fit", "--data", tiny_npz, "--models-dir", store, "--val-fraction", "0.5", "--tta", "none")
    assert result.exit_code == 0, result.output
    assert sorted(path.suffix for path in root.rglob("*") if path.is_file()).count(".npy") >= 2


def test_the_root_is_a_function_only():
    assert not hasattr(cachedir, "CACHE_ROOT")
