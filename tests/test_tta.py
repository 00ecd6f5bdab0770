"""Every TTA view is undone by its inverse; merging averages the un-augmented predictions."""

from __future__ import annotations

import numpy as np
import pytest

from ensemble.data.tta import HFLIP, HVFLIP, IDENTITY, TTA_VIEWS, VFLIP, augment, get_views, merge
from ensemble.errors import EnsError

ALL_VIEWS = [IDENTITY, HFLIP, VFLIP, HVFLIP]


@pytest.mark.parametrize("view", ALL_VIEWS, ids=lambda v: v.name)
@pytest.mark.parametrize("shape", [(2, 1, 4, 4), (3, 5, 6, 11), (1, 2, 1, 7), (2, 3, 9, 1)])
def test_inverse_undoes_view(view, shape):
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    np.testing.assert_array_equal(view.invert(view.apply(x)), x)


def test_views_move_pixels_as_named():
    x = np.arange(6).reshape(1, 1, 2, 3)
    assert HFLIP.apply(x)[0, 0].tolist() == [[2, 1, 0], [5, 4, 3]]
    assert VFLIP.apply(x)[0, 0].tolist() == [[3, 4, 5], [0, 1, 2]]
    assert HVFLIP.apply(x)[0, 0].tolist() == [[5, 4, 3], [2, 1, 0]]


@pytest.mark.parametrize("name", list(TTA_VIEWS))
def test_equivariant_model_gives_same_result_with_any_tta(name):
    """A per-pixel model commutes with flips, so merged TTA equals the plain prediction."""
    views = get_views(name)
    x = np.random.default_rng(1).random((2, 1, 5, 7), dtype=np.float32)

    def model(batch):
        return np.concatenate([batch, 1 - batch], axis=1)

    merged = merge(model(augment(x, views)), views)
    np.testing.assert_allclose(merged, model(x), rtol=1e-6)
    assert merged.shape == (2, 2, 5, 7)


def test_merge_averages_inverted_views():
    views = get_views("flip")
    x = np.random.default_rng(2).random((1, 1, 3, 4), dtype=np.float32)

    def left_biased(batch):  # not flip-equivariant: depends on the column index
        return batch + np.arange(batch.shape[-1], dtype=np.float32)

    merged = merge(left_biased(augment(x, views)), views)
    expected = (left_biased(x) + hflip_of(left_biased(hflip_of(x)))) / 2
    np.testing.assert_allclose(merged, expected, rtol=1e-6)


def hflip_of(a):
    return a[..., ::-1]


def test_unknown_tta_lists_choices():
    with pytest.raises(EnsError, match="choose one of none, flip, hv"):
        get_views("rot90")


@pytest.mark.parametrize("name", list(TTA_VIEWS))
def test_merge_in_place_equals_merge_of_a_copy(name):
    views = get_views(name)
    predictions = np.random.default_rng(3).random((2 * len(views), 3, 4, 5), dtype=np.float32)
    expected = merge(predictions.copy(), views)
    merged = merge(predictions, views, overwrite=True)
    np.testing.assert_array_equal(merged.view(np.uint32), expected.view(np.uint32))
    if len(views) > 1:  # float32 is reused in place, other dtypes are copied to float32
        assert np.shares_memory(merged, predictions)
        wide = predictions.astype(np.float64)
        assert not np.shares_memory(merge(wide, views, overwrite=True), wide)
