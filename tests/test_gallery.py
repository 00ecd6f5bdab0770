"""Class colours, overlays and sample-grid PNGs."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from ensemble.cli import app
from ensemble.demo.synthetic import DemoSpec, generate_demo, write_demo
from ensemble.errors import EnsError
from ensemble.scoring.gallery import (
    CLASS_COLORS,
    class_colors,
    colorize,
    overlay,
    save_data_grid,
    save_sample_grid,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_colorize_uses_one_colour_per_class():
    mask = np.arange(5, dtype=np.uint8).reshape(1, 5)
    np.testing.assert_array_equal(colorize(mask)[0], CLASS_COLORS)
    assert len({tuple(c) for c in class_colors(9)}) == 9


def test_overlay_leaves_unlabelled_pixels_grey():
    image = np.full((2, 2), 100, np.uint8)
    mask = np.array([[0, 4], [1, 0]], np.uint8)
    blended = overlay(image, mask, alpha=0.5)
    np.testing.assert_array_equal(blended[0, 0], [100, 100, 100])
    np.testing.assert_array_equal(blended[0, 1], [160, 70, 70])


def test_sample_grid_is_a_small_png(tmp_path):
    data = generate_demo(DemoSpec(n_train=6, n_test=0))
    path = save_sample_grid(
        data.train_images,
        [data.train_masks, data.train_masks],
        tmp_path / "g.png",
        titles=("image", "truth", "again"),
        class_names=("bg", "a", "b", "c", "d"),
    )
    content = path.read_bytes()
    assert content.startswith(PNG_MAGIC) and len(content) < 300_000


def test_sample_grid_rejects_mismatched_shapes(tmp_path):
    with pytest.raises(EnsError, match="same shape"):
        save_sample_grid(np.zeros((2, 4, 4)), np.zeros((2, 4, 5)), tmp_path / "g.png")
    assert not (tmp_path / "g.png").exists()


def test_data_grid_checks_the_range(tmp_path):
    path = write_demo(tmp_path / "d.npz", DemoSpec(n_train=5, n_test=0)).path
    with pytest.raises(EnsError, match="start in 0..4"):
        save_data_grid(path, tmp_path / "g.png", count=2, start=5)


def test_cli_grid_writes_the_png(tmp_path):
    path = write_demo(tmp_path / "d.npz", DemoSpec(n_train=8, n_test=0)).path
    out = tmp_path / "docs" / "grid.png"
    result = CliRunner().invoke(app, ["data", "grid", str(path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes().startswith(PNG_MAGIC)
