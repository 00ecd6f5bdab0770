"""The course metric, checked by hand and against keras.metrics.MeanIoU with the course masking."""

from __future__ import annotations

import numpy as np
import pytest

from ensemble.data.metrics import (
    ConfusionAccumulator,
    confusion_matrix,
    course_miou,
    get_metric,
    iou_per_class,
    plain_miou,
)
from ensemble.errors import EnsError


def test_hand_computed_case():
    truth = np.array([[0, 1, 1, 2], [2, 2, 3, 3]])
    pred = np.array([[4, 1, 2, 2], [2, 2, 3, 1]])
    matrix = confusion_matrix(truth, pred, 5)
    # true-0 pixel (predicted 4) is dropped: class 4 never occurs afterwards.
    # class 1: TP 1, FP 1 (a 3 predicted as 1), FN 1 -> 1/3
    # class 2: TP 3, FP 1, FN 0 -> 3/4 ; class 3: TP 1, FN 1 -> 1/2
    expected = np.array([np.nan, 1 / 3, 3 / 4, 1 / 2, np.nan])
    np.testing.assert_allclose(iou_per_class(matrix), expected)
    assert course_miou(matrix) == pytest.approx((1 / 3 + 3 / 4 + 1 / 2) / 3)
    assert plain_miou(matrix) == pytest.approx((1 / 3 + 3 / 4 + 1 / 2) / 3)


def test_predicting_background_on_soil_lowers_the_mean():
    truth = np.array([1, 1, 1, 1, 2, 2])
    perfect = truth.copy()
    one_zero = np.array([0, 1, 1, 1, 2, 2])
    assert course_miou(confusion_matrix(truth, perfect, 3)) == pytest.approx(1.0)
    # class 0 enters the average with IoU 0; class 1 loses one pixel: (0 + 3/4 + 1) / 3
    assert course_miou(confusion_matrix(truth, one_zero, 3)) == pytest.approx((0 + 0.75 + 1) / 3)
    # the plain mIoU leaves class 0 out of the average
    assert plain_miou(confusion_matrix(truth, one_zero, 3)) == pytest.approx((0.75 + 1) / 2)


def test_background_only_truth_scores_nothing():
    matrix = confusion_matrix(np.zeros(4, int), np.array([0, 1, 2, 3]), 4)
    assert course_miou(matrix) == 0.0
    assert np.isnan(iou_per_class(matrix)).all()


def test_accumulator_equals_one_shot():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 5, (10, 8, 9))
    pred = rng.integers(0, 5, (10, 8, 9))
    acc = ConfusionAccumulator(5)
    for t, p in zip(truth, pred, strict=True):
        acc.update(t, p)
    np.testing.assert_array_equal(acc.matrix, confusion_matrix(truth, pred, 5))


def test_labels_out_of_range_and_unknown_metric():
    with pytest.raises(EnsError, match="prediction holds label 5; allowed labels are 0..4"):
        confusion_matrix(np.array([1]), np.array([5]), 5)
    with pytest.raises(EnsError, match="choose one of course, miou"):
        get_metric("dice")


@pytest.mark.parametrize("seed", range(5))
def test_matches_keras_mean_iou_with_course_masking(seed):
    keras = pytest.importorskip("keras")
    rng = np.random.default_rng(seed)
    n_classes = 5
    truth = rng.integers(0, n_classes, (6, 16, 24))
    # a skewed prediction: some classes never predicted, class 0 sometimes predicted
    pred = np.where(rng.random(truth.shape) < 0.6, truth, rng.integers(0, 4, truth.shape))
    reference = keras.metrics.MeanIoU(num_classes=n_classes)
    reference.update_state(truth, pred, sample_weight=(truth != 0).astype("int32"))
    ours = course_miou(confusion_matrix(truth, pred, n_classes))
    assert ours == pytest.approx(float(reference.result()), abs=1e-6)
