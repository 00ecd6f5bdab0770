"""The validation split is deterministic, explicit ids are validated, outliers are dropped."""

from __future__ import annotations

import numpy as np
import pytest

from ensemble.data.outliers import find_duplicate_masks
from ensemble.data.split import SplitSpec, read_ids_file
from ensemble.errors import EnsError


def test_same_seed_same_split_and_disjoint_parts():
    a = SplitSpec(seed=3, val_fraction=0.25).resolve(100)
    b = SplitSpec(seed=3, val_fraction=0.25).resolve(100)
    np.testing.assert_array_equal(a.val, b.val)
    assert len(a.val) == 25 and len(a.train) == 75
    assert not set(a.val) & set(a.train)
    assert not np.array_equal(a.val, SplitSpec(seed=4, val_fraction=0.25).resolve(100).val)


def test_outliers_are_dropped_from_both_parts():
    outliers = np.arange(0, 100, 10)
    split = SplitSpec(seed=0, val_fraction=0.3).resolve(100, outliers)
    assert not set(outliers) & (set(split.train) | set(split.val))
    kept = SplitSpec(seed=0, val_fraction=0.3, drop_outliers=False).resolve(100, outliers)
    assert len(kept.train) + len(kept.val) == 100


def test_explicit_ids_file(tmp_path):
    path = tmp_path / "val.txt"
    path.write_text("# validation\n5, 7\n1\n")
    split = SplitSpec(val_ids=read_ids_file(path)).resolve(10)
    assert split.val.tolist() == [1, 5, 7]
    assert split.train.tolist() == [0, 2, 3, 4, 6, 8, 9]


@pytest.mark.parametrize(
    ("ids", "message"), [((1, 12), "outside 0..9"), ((2, 2), "listed twice"), ((), "empty")]
)
def test_bad_ids_are_rejected(ids, message):
    with pytest.raises(EnsError, match=message):
        SplitSpec(val_ids=ids).resolve(10)


def test_non_integer_ids_file(tmp_path):
    path = tmp_path / "val.txt"
    path.write_text("1,two,3")
    with pytest.raises(EnsError, match="'two'"):
        read_ids_file(path)


def test_duplicate_masks_are_grouped():
    rng = np.random.default_rng(0)
    masks = rng.integers(0, 5, (30, 6, 7)).astype(np.uint8)
    alien = rng.integers(0, 5, (6, 7)).astype(np.uint8)
    planted = [3, 8, 9, 20, 21, 29]
    masks[planted] = alien
    report = find_duplicate_masks(masks)
    assert report.indices.tolist() == planted
    assert len(report.groups) == 1 and len(report) == 6
    assert len(find_duplicate_masks(masks, min_copies=7)) == 0
