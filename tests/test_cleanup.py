"""The Numba cleanup kernel equals a scipy.ndimage reference on random maps, and its wrapper checks input."""

from __future__ import annotations

import numpy as np
import pytest

from ensemble.errors import EnsError
from ensemble.inference.cleanup import parse_min_area, remove_small_regions

ndimage = pytest.importorskip("scipy.ndimage")


def reference(labels: np.ndarray, min_area: np.ndarray, connectivity: int) -> np.ndarray:
    """Straightforward scipy version of the same rule, image by image, component by component."""
    structure = ndimage.generate_binary_structure(2, 1 if connectivity == 4 else 2)
    out = labels.copy()
    for img, dst in zip(labels, out, strict=True):
        for cls in range(len(min_area)):
            if min_area[cls] == 0:
                continue
            components, n = ndimage.label(img == cls, structure)
            for index in range(1, n + 1):
                region = components == index
                if region.sum() >= min_area[cls]:
                    continue
                border = ndimage.binary_dilation(region, structure) & ~region
                counts = np.bincount(img[border], minlength=len(min_area))
                counts[0] = 0
                if counts.max() > 0:
                    dst[region] = np.argmax(counts)
    return out


def random_maps(seed: int, n=6, shape=(13, 17), n_classes=5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, n_classes, (n, shape[0] // 3 + 1, shape[1] // 3 + 1))
    maps = np.repeat(np.repeat(coarse, 3, axis=1), 3, axis=2)[:, : shape[0], : shape[1]]
    noise = rng.random(maps.shape) < 0.15
    maps = np.where(noise, rng.integers(0, n_classes, maps.shape), maps)
    return np.ascontiguousarray(maps, dtype=np.uint8)


@pytest.mark.parametrize("connectivity", [4, 8])
@pytest.mark.parametrize("seed", range(12))
def test_matches_scipy_reference(seed, connectivity):
    maps = random_maps(seed)
    areas = np.array([0, 3, 5, 2, 9]) if seed % 2 else np.array([4, 4, 4, 4, 4])
    got = remove_small_regions(maps, areas, connectivity=connectivity)
    np.testing.assert_array_equal(got, reference(maps, areas, connectivity))


def test_never_relabels_into_the_ignored_class():
    img = np.zeros((5, 5), np.uint8)
    img[2, 2] = 3
    img[0, 0] = 1
    assert remove_small_regions(img, 4)[2, 2] == 3  # border is all class 0: kept
    img[1:4, 1] = 2
    assert remove_small_regions(img, 4)[2, 2] == 2


def test_input_untouched_and_out_parameter():
    maps = random_maps(0)
    before = maps.copy()
    result = remove_small_regions(maps, 6)
    np.testing.assert_array_equal(maps, before)
    in_place = remove_small_regions(maps, 6, out=maps)
    assert in_place is maps
    np.testing.assert_array_equal(maps, result)
    strided = np.zeros((maps.shape[0], maps.shape[1], maps.shape[2] * 2), np.uint8)[..., ::2]
    remove_small_regions(before, 6, out=strided)
    np.testing.assert_array_equal(strided, result)


def test_zero_area_is_identity_and_single_image_works():
    maps = random_maps(1)
    np.testing.assert_array_equal(remove_small_regions(maps, 0), maps)
    np.testing.assert_array_equal(remove_small_regions(maps[0], 5), remove_small_regions(maps, 5)[0])


@pytest.mark.parametrize(
    ("labels", "kwargs", "message"),
    [
        (np.zeros((3, 3), np.int64), {}, "uint8 array"),
        (np.zeros((3,), np.uint8), {}, "uint8 array"),
        (np.zeros((3, 3), np.uint8), {"connectivity": 6}, "4 or 8"),
        (np.full((3, 3), 7, np.uint8), {"n_classes": 5}, "class 7"),
    ],
)
def test_bad_input(labels, kwargs, message):
    with pytest.raises(EnsError, match=message):
        remove_small_regions(labels, 3, **kwargs)


def test_parse_min_area():
    assert parse_min_area("0", 5).tolist() == [0, 0, 0, 0, 0]
    assert parse_min_area("1=30,2=30,3=30,4=5", 5).tolist() == [0, 30, 30, 30, 5]
    for text, message in [("1:30", "CLASS=AREA"), ("9=4", "outside 0..4"), ("-3", "CLASS=AREA")]:
        with pytest.raises(EnsError, match=message):
            parse_min_area(text, 5)
