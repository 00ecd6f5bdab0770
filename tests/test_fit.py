"""Fitting fusion weights and cleanup thresholds on synthetic member probabilities of known quality."""

from __future__ import annotations

import numpy as np
import pytest
from fit_fixtures import member, random_truth

from ensemble.data.metrics import score
from ensemble.fitting.fit import fit_ensemble
from ensemble.fitting.grid import fit_min_area
from ensemble.fitting.settings import FitSettings
from ensemble.fitting.weights import fit_weights, nll_weights, pixel_set
from ensemble.inference.fusion import decode, fuse


@pytest.fixture
def truth():
    return random_truth(np.random.default_rng(0), n=50)


def test_planted_weights_are_recovered(truth):
    rng = np.random.default_rng(1)
    good = member(rng, truth, confidence=3.0, noise=1.0)
    noisy = member(rng, truth, confidence=1.5, noise=1.5)
    adversarial = member(rng, truth, confidence=3.0, wrong=True)
    pixels = pixel_set([good, noisy, adversarial], truth)
    nll = nll_weights(pixels)
    assert nll[0] > nll[1] > nll[2] and nll[2] < 0.01
    fitted = fit_weights(pixels)
    weights = fitted.weights[:, 1]
    assert weights[0] > 0.8 and weights[2] < 0.02
    assert fitted.score >= max(fitted.equal_score, fitted.nll_score)
    assert fitted.score > fitted.equal_score + 0.1


def test_equal_members_share_the_weight(truth):
    rng = np.random.default_rng(2)
    a, b = (member(rng, truth, confidence=2.0, noise=1.0) for _ in range(2))
    weights = nll_weights(pixel_set([a, b], truth))
    assert abs(weights[0] - 0.5) < 0.05


def test_per_class_weights_help_members_good_at_different_classes(truth):
    rng = np.random.default_rng(3)
    first = member(rng, truth, confidence=3.0, classes=[1, 2])
    second = member(rng, truth, confidence=3.0, classes=[3, 4])
    pixels = pixel_set([first, second], truth)
    shared, per_class = fit_weights(pixels), fit_weights(pixels, per_class=True)
    assert per_class.score > shared.score + 0.03
    assert per_class.weights[0, 1] > 0.5 > per_class.weights[0, 4]


def test_pixel_score_matches_the_metric_on_full_maps(truth):
    rng = np.random.default_rng(4)
    probs = [member(rng, truth, confidence=1.0, noise=1.0) for _ in range(2)]
    weights = np.array([[0.3] * 5, [0.7] * 5])
    pixels = pixel_set(probs, truth, max_pixels=10**9)
    from ensemble.fitting.weights import pixel_score

    expected = score(truth, decode(fuse(probs, weights[:, 0])), 5)
    assert pixel_score(pixels, weights) == pytest.approx(expected, abs=1e-12)


def test_min_area_is_never_below_no_cleanup(truth):
    rng = np.random.default_rng(5)
    labels = decode(member(rng, truth, confidence=1.5, noise=1.0))
    found = fit_min_area(labels, truth, 5)
    assert found.after >= found.before
    assert found.min_area[0] == 0
    # speckled predictions of blocky truth: removing small regions must help
    assert found.after > found.before and found.min_area[1:].max() > 0


def test_cross_validation_keeps_equal_weights_when_nothing_is_gained(truth):
    rng = np.random.default_rng(6)
    same = member(rng, truth, confidence=2.0, noise=1.0)
    result = fit_ensemble([same, same.copy()], truth, FitSettings(folds=3))
    assert result.cv is not None and result.cv.weight_gain <= 0
    assert not result.use[0]
    np.testing.assert_allclose(result.weights, 0.5)
    assert any("using equal weights" in note for note in result.notes)


def test_cross_validation_sees_the_gain_of_a_planted_good_member(truth):
    rng = np.random.default_rng(7)
    probs = [member(rng, truth, confidence=3.0), member(rng, truth, confidence=3.0, wrong=True)]
    result = fit_ensemble(probs, truth, FitSettings(folds=4))
    assert result.use[0] and result.cv.weight_gain > 0.1
    assert result.in_sample.learned >= result.in_sample.equal


def test_class_gains_rescue_a_rare_class_the_members_never_pick():
    rng = np.random.default_rng(8)
    truth = random_truth(rng, n=40)
    truth[truth == 4] = 1
    truth[:, :4, :4] = 4  # one small rare region per image
    probs = member(rng, truth, confidence=2.0, noise=0.7)
    probs[:, 4] *= 0.2  # under-confident on the rare class, as cross-entropy makes it
    probs /= probs.sum(axis=1, keepdims=True)
    pixels = pixel_set([probs], truth)
    ones = np.ones((1, 5))
    from ensemble.fitting.grid import fit_gains
    from ensemble.fitting.weights import pixel_score
    from ensemble.inference.fusion import scaled_weights

    gains, best = fit_gains(lambda g: pixel_score(pixels, scaled_weights(ones, g)), 5)
    assert gains[4] > 1 and gains[0] == 1
    assert best > pixel_score(pixels, ones) + 0.05


def test_auto_weighting_picks_per_class_weights_when_cross_validation_prefers_them():
    rng = np.random.default_rng(3)
    truth = random_truth(rng, n=24)
    probs = [
        member(rng, truth, confidence=3.0, classes=[1, 2]),
        member(rng, truth, confidence=3.0, classes=[3, 4]),
    ]
    result = fit_ensemble(probs, truth, FitSettings(folds=3))
    scores = result.cv_by_weights_per
    assert result.weights_per == "class" and scores["class"] > scores["member"]
    assert result.cv.cleaned == scores["class"] and result.folds == 3
    assert result.weights[0, 1] > 0.5 > result.weights[0, 4]
    assert any("weights per class" in note for note in result.notes)
    forced = fit_ensemble(probs, truth, FitSettings(weights_per="member", folds=1))
    assert forced.weights_per == "member" and forced.cv_by_weights_per == {} and forced.folds == 0
    assert np.ptp(forced.weights, axis=1).max() < 1e-6  # one weight per member
    unforced = fit_ensemble(probs, truth, FitSettings(folds=0))
    assert unforced.weights_per == "member" and unforced.cv is None
    assert any("no cross-validation" in note for note in unforced.notes)
