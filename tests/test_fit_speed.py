"""`ens fit`'s faster nested fit gives the results of the plain one: compiled loops that compute the
same floats, per-image confusion matrices summed per fold, stages shared by fits on the same images,
fits on several threads. The reference here is the fit as written before, step by step (numpy fused
scores, float64 NLL inputs, `confusion_matrix` on whole label maps, every stage refitted every time)."""

from __future__ import annotations

import numpy as np
import pytest
from fit_fixtures import member, random_truth

import ensemble.fitting.grid as grid
import ensemble.fitting.stages as stages
import ensemble.fitting.weights as weights_module
from ensemble.data.metrics import confusion_matrix
from ensemble.fitting.fit import fit_parts
from ensemble.fitting.grid import confusion_of, fit_gains, fit_min_area, image_confusions_of
from ensemble.fitting.kernels import mixture_step
from ensemble.fitting.settings import FitSettings, Fitted
from ensemble.fitting.weights import class_scores, fit_weights, gain_scorer
from ensemble.inference.cleanup import remove_small_regions


def pool_parts(seed: int = 3, n: int = 16):
    """Four members of different quality (one good only on some classes, one wrong), speckled enough
    for cleanup to matter, in two image sizes."""
    rng = np.random.default_rng(seed)
    parts = []
    for shape, count in (((16, 24), n - 8), ((12, 20), 8)):
        truth = random_truth(rng, count, shape)
        probs = [
            member(rng, truth, confidence=1.6, noise=1.2),
            member(rng, truth, confidence=2.5, noise=1.0, classes=[1, 2]),
            member(rng, truth, confidence=1.0, noise=1.4),
            member(rng, truth, confidence=0.8, noise=1.0, wrong=True),
        ]
        parts.append((probs, truth))
    return parts


def numpy_class_scores(weights, scores, first=0):
    """The fused scores as numpy sums them, member by member in float32."""
    weights, scores = np.asarray(weights, np.float32)[:, first:], scores[:, first:]
    fused = scores[0] * weights[0][:, None]
    for probs, column in zip(scores[1:], weights[1:], strict=True):
        fused += probs * column[:, None]
    return fused


def float64_mixture_step(true_probs, weights, floor):
    """The EM step on a float64 copy raised to `floor` beforehand."""
    return mixture_step(np.maximum(np.asarray(true_probs, np.float64), floor), weights, 0.0)


def reference_fit_once(pool, index, per, use=(True, True, True)) -> Fitted:
    settings, n_classes = pool.settings, pool.n_classes
    pixels = pool.pixels_of(index)
    weights = fit_weights(pixels, per == "class", settings.metric).weights if use[0] else pool.equal
    gains = np.ones(n_classes)
    if use[1]:
        gains, _ = fit_gains(gain_scorer(pixels, weights, settings.metric), n_classes)
    areas = np.zeros(n_classes, np.int64)
    if use[2]:
        chosen = stages.select_parts(pool.parts, index)
        labels = [stages.fused_labels(probs, weights, gains, i) for probs, _, i in chosen]
        truths = [truth[i] for _, truth, i in chosen]
        areas = fit_min_area(labels, truths, n_classes, settings.metric, settings.connectivity).min_area
    return Fitted(weights, gains, areas)


def reference_confusions(pool, index, fitted):
    n_classes, ones = pool.n_classes, np.ones(pool.n_classes)
    totals = [np.zeros((n_classes, n_classes), np.int64) for _ in range(4)]
    for probs, truth, local in stages.select_parts(pool.parts, index):
        plain = stages.fused_labels(probs, pool.equal, ones, local)
        learned = stages.fused_labels(probs, fitted.weights, ones, local)
        gained = stages.fused_labels(probs, fitted.weights, fitted.gains, local)
        cleaned = gained
        if fitted.min_area.any():
            cleaned = remove_small_regions(gained, fitted.min_area, n_classes, pool.settings.connectivity)
        for total, labels in zip(totals, (plain, learned, gained, cleaned), strict=True):
            total += confusion_matrix(truth[local], labels, n_classes)
    return totals


def reference_choose(pool, index):
    settings = pool.settings
    folds = min(settings.folds, len(index))
    fold_of = np.empty(len(index), np.int64)
    fold_of[np.random.default_rng(settings.seed).permutation(len(index))] = np.arange(len(index)) % folds
    by = {}
    for per in ("member", "class"):
        totals = [np.zeros((pool.n_classes,) * 2, np.int64) for _ in range(4)]
        for fold in range(folds):
            fitted = reference_fit_once(pool, index[fold_of != fold], per)
            held = reference_confusions(pool, index[fold_of == fold], fitted)
            totals = [t + m for t, m in zip(totals, held, strict=True)]
        by[per] = stages.reduced_stages(pool, totals)
    per = max(("member", "class"), key=lambda p: by[p].cleaned)
    cv = by[per]
    return per, (cv.weight_gain > 0, cv.class_gain_gain > 0, cv.cleanup_gain > 0), by


def reference_fit(parts, settings):
    """The nested fit, one fit after another, nothing shared: (final fit, in-sample, CV, choice)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(weights_module, "class_scores", numpy_class_scores)
        patch.setattr(weights_module, "mixture_step", float64_mixture_step)
        patch.setattr(grid, "confusion_of", confusion_matrix)
        pool = stages.Pool(parts, settings)
        everything = np.arange(pool.n_images)
        per, use, by = reference_choose(pool, everything)
        fitted = reference_fit_once(pool, everything, per, use)
        in_sample = stages.reduced_stages(pool, reference_confusions(pool, everything, fitted))
        outer = np.empty(pool.n_images, np.int64)
        outer[np.random.default_rng(settings.seed).permutation(pool.n_images)] = everything % settings.folds
        totals = [np.zeros((pool.n_classes,) * 2, np.int64) for _ in range(4)]
        for k in range(settings.folds):
            train, held = everything[outer != k], everything[outer == k]
            inner_per, inner_use, _ = reference_choose(pool, train)
            fold_fit = reference_fit_once(pool, train, inner_per, inner_use)
            totals = [t + m for t, m in zip(totals, reference_confusions(pool, held, fold_fit), strict=True)]
        return fitted, in_sample, stages.reduced_stages(pool, totals), per, use, by


@pytest.mark.parametrize("workers", [1, 2])
def test_the_fit_gives_the_reference_results_on_any_number_of_threads(workers):
    parts, settings = pool_parts(), FitSettings(folds=2)
    fitted, in_sample, cv, per, use, by = reference_fit(parts, settings)
    result = fit_parts(parts, settings, workers=workers)
    assert np.array_equal(result.weights, fitted.weights)
    assert np.array_equal(result.gains, fitted.gains) and np.array_equal(result.min_area, fitted.min_area)
    assert (result.weights_per, result.use) == (per, use)
    assert (result.in_sample, result.cv, result.selection) == (in_sample, cv, by[per])
    assert result.cv_by_weights_per == {p: scores.cleaned for p, scores in by.items()}
    # the pool exercises every stage: weights per class, gains and cleanup all chosen
    assert per == "class" and use == (True, True, True)
    assert (fitted.gains != 1).any() and fitted.min_area.any()


def test_stages_fitted_on_the_same_images_are_fitted_once(monkeypatch):
    """15 fits at --folds 2; the NLL start is computed once per distinct set of training images:
    both weightings share it, and each outer fold's fit shares the selection CV fold on its images."""
    calls = []
    real = stages.nll_weights
    monkeypatch.setattr(stages, "nll_weights", lambda pixels: calls.append(len(pixels.truth)) or real(pixels))
    steps = []
    result = fit_parts(
        pool_parts(), FitSettings(folds=2), lambda what, done, total: steps.append(done), workers=1
    )
    assert steps == list(range(15))
    assert len(calls) == 2 + 2 * 2 + result.use[0]  # selection folds, inner folds, the final fit


def test_fused_scores_are_numpys_bit_for_bit():
    rng = np.random.default_rng(0)
    scores = rng.random((5, 4, 1001), dtype=np.float32)
    for first in (0, 1):
        weights = rng.random((5, 4))
        expected = numpy_class_scores(weights, scores, first)
        assert np.array_equal(class_scores(weights, scores, first).view(np.uint32), expected.view(np.uint32))


def test_nll_steps_on_float32_probabilities_are_those_on_a_float64_copy():
    rng = np.random.default_rng(1)
    true_probs = rng.random((999, 4), dtype=np.float32)
    true_probs[::5, 1] = 1e-9  # below the floor
    weights = np.array([0.1, 0.2, 0.3, 0.4])
    assert np.array_equal(
        mixture_step(true_probs, weights, 1e-6), float64_mixture_step(true_probs, weights, 1e-6)
    )


def test_per_image_confusions_sum_to_confusion_matrix():
    rng = np.random.default_rng(2)
    truth, labels = (rng.integers(0, 5, (7, 9, 11)).astype(np.uint8) for _ in range(2))
    per_image = image_confusions_of(truth, labels, 5)
    assert per_image.shape == (7, 5, 5)
    for image, matrix in enumerate(per_image):
        assert np.array_equal(matrix, confusion_matrix(truth[image], labels[image], 5))
    assert np.array_equal(confusion_of(truth, labels, 5), confusion_matrix(truth, labels, 5))
    # out-of-range labels are refused as confusion_matrix refuses them, not counted out of bounds
    labels[3, 2, 1] = 7
    with pytest.raises(Exception, match="prediction holds label 7"):
        confusion_of(truth, labels, 5)
    with pytest.raises(Exception, match="prediction holds label 7"):
        image_confusions_of(truth, labels, 5)
