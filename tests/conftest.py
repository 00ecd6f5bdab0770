"""Shared fixtures: tiny course-format data files built in memory, fast to load."""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import importlib.util  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402


def write_npz(path: Path, train_images, train_masks, test_images, test_masks=None, dtype=np.float64):
    """Write a course-format npz (float64 like the real file unless told otherwise)."""
    arrays = {
        "training_set": np.stack([train_images, train_masks], axis=1).astype(dtype),
        "test_set": np.asarray(test_images).astype(dtype),
    }
    if test_masks is not None:
        arrays["test_masks"] = np.asarray(test_masks).astype(dtype)
    np.savez(path, **arrays)
    return path


@pytest.fixture(autouse=True)
def own_cache(tmp_path_factory, monkeypatch):
    """Each test keeps the shards of its runs in its own $ENS_CACHE (outside its tmp_path), so no run
    resumes another test's shards."""
    monkeypatch.setenv("ENS_CACHE", str(tmp_path_factory.mktemp("ens-cache")))


@pytest.fixture(scope="module")
def tensorflow():
    """TensorFlow must be installed (make test installs it); outside CI its absence skips."""
    missing = [name for name in ("tensorflow", "tf2onnx") if importlib.util.find_spec(name) is None]
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"{missing} not installed; make test installs them with the tensorflow extra")
        pytest.skip(f"needs {missing}: pip install 'ens[tensorflow]'")


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """A member store of two tiny real ONNX members, `a` and `b` (a test file may define its own)."""
    from onnx_members import make_member

    for seed, name in enumerate(["a", "b"]):
        make_member(tmp_path / "models" / f"{name}.onnx", seed=seed)
    return tmp_path / "models"


@pytest.fixture
def tiny_npz(tmp_path: Path) -> Path:
    """12 labelled + 6 test images of 8x12 with random pixels and labels 0..4."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (12, 8, 12))
    masks = rng.integers(0, 5, (12, 8, 12))
    test = rng.integers(0, 256, (6, 8, 12))
    test_masks = rng.integers(0, 5, (6, 8, 12))
    return write_npz(tmp_path / "tiny.npz", images, masks, test, test_masks)


def ens(*args, env: dict | None = None):
    """Run the `ens` CLI in-process; a traceback in its output fails the test."""
    from typer.testing import CliRunner

    from ensemble.cli import app

    result = CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200", **(env or {})})
    assert "Traceback" not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result


def one_line_error(result, *fragments: str) -> str:
    """Assert exit 1 with exactly one non-empty output line, `error: ...`, holding every fragment."""
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def snapshot(*roots: Path) -> dict[Path, bytes]:
    """The bytes of every file under `roots` (files or folders), to compare after a failed command."""
    files: dict[Path, bytes] = {}
    for root in map(Path, roots):
        paths = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        files.update({path: path.read_bytes() for path in paths})
    return files


def assert_unchanged(before: dict[Path, bytes], *roots: Path) -> None:
    """Every file of `before` is byte-identical and no file appeared under `roots`."""
    after = snapshot(*roots) if roots else {path: path.read_bytes() for path in before if path.exists()}
    assert set(after) == set(before), sorted(set(after) ^ set(before))
    changed = [str(path) for path in before if after[path] != before[path]]
    assert not changed, changed
