"""Loading and validating the course npz format, streaming reads and the sha256."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import write_npz

from ensemble.data.datafile import open_data
from ensemble.errors import EnsError


def test_loads_float64_file_as_uint8(tiny_npz):
    data = open_data(tiny_npz)
    assert (data.n_train, data.n_test, data.image_shape) == (12, 6, (8, 12))
    images, masks = data.load_train(n_classes=5)
    assert images.dtype == masks.dtype == np.uint8
    raw = np.load(tiny_npz)
    np.testing.assert_array_equal(images, raw["training_set"][:, 0])
    np.testing.assert_array_equal(masks, raw["training_set"][:, 1])
    np.testing.assert_array_equal(data.load_test_images(), raw["test_set"])
    np.testing.assert_array_equal(data.load_test_masks(), raw["test_masks"])


@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.float32, np.float64])
def test_any_numeric_dtype_is_accepted(tmp_path, dtype):
    rng = np.random.default_rng(1)
    path = write_npz(
        tmp_path / "d.npz",
        rng.integers(0, 256, (3, 4, 5)),
        rng.integers(0, 3, (3, 4, 5)),
        rng.integers(0, 256, (2, 4, 5)),
        dtype=dtype,
    )
    images, masks = open_data(path).load_train(3)
    assert images.shape == masks.shape == (3, 4, 5)


def test_streamed_test_batches_cover_the_set_in_order(tiny_npz):
    data = open_data(tiny_npz)
    batches = list(data.iter_test_images(batch_size=4))
    assert [len(b) for b in batches] == [4, 2]
    np.testing.assert_array_equal(np.concatenate(batches), np.load(tiny_npz)["test_set"])


def test_compressed_archive_streams_too(tmp_path):
    rng = np.random.default_rng(2)
    train = np.stack([rng.integers(0, 256, (5, 4, 6)), rng.integers(0, 5, (5, 4, 6))], 1)
    np.savez_compressed(tmp_path / "c.npz", training_set=train, test_set=train[:, 0])
    data = open_data(tmp_path / "c.npz")
    np.testing.assert_array_equal(np.concatenate(list(data.iter_test_images(2))), train[:, 0])


def _bad_file(tmp_path, **override):
    rng = np.random.default_rng(3)
    arrays = {
        "training_set": np.stack([rng.integers(0, 256, (4, 4, 6)), rng.integers(0, 5, (4, 4, 6))], 1).astype(
            np.float64
        ),
        "test_set": rng.integers(0, 256, (2, 4, 6)).astype(np.float64),
    }
    arrays.update(override)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    np.savez(tmp_path / "bad.npz", **arrays)
    return tmp_path / "bad.npz"


def test_non_integral_label_is_named(tmp_path):
    path = _bad_file(tmp_path)
    raw = dict(np.load(path))
    raw["training_set"][2, 1, 1, 3] = 1.5
    np.savez(path, **raw)
    with pytest.raises(EnsError, match=r"'training_set'\[:, 1\].*integral.*1\.5.*image 2"):
        open_data(path).load_train(5)


def test_label_outside_class_range(tmp_path):
    path = _bad_file(tmp_path)
    raw = dict(np.load(path))
    raw["training_set"][0, 1, 0, 0] = 7
    np.savez(path, **raw)
    with pytest.raises(EnsError, match=r"labels must lie in 0\.\.4, found 7 "):
        open_data(path).load_train(5)


def test_nan_pixel_is_rejected(tmp_path):
    path = _bad_file(tmp_path)
    raw = dict(np.load(path))
    raw["test_set"][1, 2, 2] = np.nan
    np.savez(path, **raw)
    with pytest.raises(EnsError, match=r"'test_set'.*finite.*nan.*image 1"):
        open_data(path).load_test_images()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"training_set": np.zeros((4, 4, 6))}, r"shape \(4, 4, 6\); expected \(N, 2, H, W\)"),
        ({"training_set": None}, r"no 'training_set'"),
        (
            {"test_set": np.zeros((2, 5, 6))},
            r"'test_set' has shape \(2, 5, 6\); expected \(M, 4, 6\)",
        ),
        ({"test_set": np.array([["a"]])}, r"dtype <U1"),
    ],
)
def test_wrong_structure_names_key_and_shape(tmp_path, override, message):
    with pytest.raises(EnsError, match=message):
        open_data(_bad_file(tmp_path, **override))


def test_missing_and_garbage_files(tmp_path):
    with pytest.raises(EnsError, match="does not exist"):
        open_data(tmp_path / "nope.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(EnsError, match="not a readable .npz"):
        open_data(tmp_path / "junk.npz")


def test_test_masks_absent_gives_hint(tmp_path):
    with pytest.raises(EnsError, match="--split val"):
        open_data(_bad_file(tmp_path)).load_test_masks()


def test_sha256_changes_with_content(tiny_npz, tmp_path):
    first = open_data(tiny_npz).sha256
    assert len(first) == 64 and open_data(tiny_npz).sha256 == first
    other = _bad_file(tmp_path)
    assert open_data(other).sha256 != first
