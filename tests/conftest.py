"""Shared fixtures: tiny course-format data files built in memory, fast to load."""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "torch")

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


@pytest.fixture
def tiny_npz(tmp_path: Path) -> Path:
    """12 labelled + 6 test images of 8x12 with random pixels and labels 0..4."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (12, 8, 12))
    masks = rng.integers(0, 5, (12, 8, 12))
    test = rng.integers(0, 256, (6, 8, 12))
    test_masks = rng.integers(0, 5, (6, 8, 12))
    return write_npz(tmp_path / "tiny.npz", images, masks, test, test_masks)
