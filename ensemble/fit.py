"""`ens fit` on arrays: learn fusion weights and cleanup thresholds, and estimate their gain honestly.

The estimate is k-fold over validation images: fit on k-1 folds, score the held-out fold, pool the
held-out confusion matrices. A stage whose cross-validated gain is not positive is switched off in
the final result (equal weights, no cleanup), so `ens fit` never recommends something it cannot show.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ensemble.areafit import fit_min_area
from ensemble.cleanup import remove_small_regions
from ensemble.decode import decode
from ensemble.fusion import fuse, normalise_weights
from ensemble.metrics import confusion_matrix, get_metric
from ensemble.weightfit import fit_weights, pixel_set

DEFAULT_FOLDS = 5


@dataclass(frozen=True)
class FitSettings:
    per_class: bool = False
    metric: str = "course"
    connectivity: int = 4
    folds: int = DEFAULT_FOLDS
    seed: int = 0


@dataclass(frozen=True)
class Stages:
    """Scores of the three stages on one set of images: equal weights, learned weights, + cleanup."""

    equal: float
    learned: float
    cleaned: float

    @property
    def weight_gain(self) -> float:
        return self.learned - self.equal

    @property
    def cleanup_gain(self) -> float:
        return self.cleaned - self.learned

    def to_dict(self) -> dict:
        return {
            "equal": self.equal,
            "learned": self.learned,
            "learned+cleanup": self.cleaned,
            "weight_gain": self.weight_gain,
            "cleanup_gain": self.cleanup_gain,
        }


@dataclass(frozen=True)
class FitResult:
    """Final weights and min_area (after the CV decision), in-sample and cross-validated scores."""

    weights: np.ndarray
    min_area: np.ndarray
    fitted_weights: np.ndarray
    fitted_min_area: np.ndarray
    in_sample: Stages
    cv: Stages | None
    use_weights: bool
    use_cleanup: bool
    notes: list[str] = field(default_factory=list)


def _labels(probs: list[np.ndarray], weights: np.ndarray, index: np.ndarray) -> np.ndarray:
    return decode(fuse([np.asarray(p[index], np.float32) for p in probs], weights))


def _fit_once(probs, truth, index, n_classes, settings: FitSettings):
    """Weights then min_area on the images `index`; returns (weights, min_area)."""
    pixels = pixel_set([p[index] for p in probs], truth[index], seed=settings.seed)
    weights = fit_weights(pixels, settings.per_class, settings.metric).weights
    labels = _labels(probs, weights, index)
    areas = fit_min_area(labels, truth[index], n_classes, settings.metric, settings.connectivity)
    return weights, areas.min_area


def _stage_confusions(probs, truth, index, weights, min_area, n_classes, connectivity):
    """Confusion matrices of equal weights, `weights`, and `weights` + cleanup on images `index`."""
    equal = normalise_weights(np.ones(len(probs)), len(probs), n_classes)
    plain = _labels(probs, equal, index)
    learned = _labels(probs, weights, index)
    cleaned = remove_small_regions(learned, min_area, n_classes, connectivity) if min_area.any() else learned
    return [confusion_matrix(truth[index], labels, n_classes) for labels in (plain, learned, cleaned)]


def fit_ensemble(
    probs: list[np.ndarray],
    truth: np.ndarray,
    settings: FitSettings = FitSettings(),
    on_step=None,
) -> FitResult:
    """Fit on `probs` (one TTA-merged (N, C, H, W) array per member) against uint8 (N, H, W) truth.

    `on_step(description)` is called before each of the folds + 1 fits.
    """
    n_images, n_classes = probs[0].shape[:2]
    reduce = get_metric(settings.metric).reduce
    everything = np.arange(n_images)
    cv = None
    folds = min(settings.folds, n_images)
    if folds >= 2:
        fold_of = np.empty(n_images, np.int64)
        fold_of[np.random.default_rng(settings.seed).permutation(n_images)] = np.arange(n_images) % folds
        totals = [np.zeros((n_classes, n_classes), np.int64) for _ in range(3)]
        for fold in range(folds):
            if on_step:
                on_step(f"fold {fold + 1}/{folds}")
            train, held = np.flatnonzero(fold_of != fold), np.flatnonzero(fold_of == fold)
            weights, min_area = _fit_once(probs, truth, train, n_classes, settings)
            matrices = _stage_confusions(
                probs, truth, held, weights, min_area, n_classes, settings.connectivity
            )
            totals = [t + m for t, m in zip(totals, matrices, strict=True)]
        cv = Stages(*(reduce(t) for t in totals))
    if on_step:
        on_step("final fit on all images")
    weights, min_area = _fit_once(probs, truth, everything, n_classes, settings)
    matrices = _stage_confusions(
        probs, truth, everything, weights, min_area, n_classes, settings.connectivity
    )
    in_sample = Stages(*(reduce(m) for m in matrices))
    use_weights = cv is None or cv.weight_gain > 0
    use_cleanup = cv is None or cv.cleanup_gain > 0
    notes = []
    if not use_weights:
        notes.append(f"learned weights did not beat equal weights in {folds}-fold CV; keeping equal weights")
    if not use_cleanup:
        notes.append(f"cleanup did not help in {folds}-fold CV; keeping it off")
    equal = normalise_weights(np.ones(len(probs)), len(probs), n_classes)
    if use_cleanup and not use_weights:
        labels = _labels(probs, equal, everything)
        min_area = fit_min_area(labels, truth, n_classes, settings.metric, settings.connectivity).min_area
    return FitResult(
        weights=weights if use_weights else equal,
        min_area=min_area if use_cleanup else np.zeros_like(min_area),
        fitted_weights=weights,
        fitted_min_area=min_area,
        in_sample=in_sample,
        cv=cv,
        use_weights=use_weights,
        use_cleanup=use_cleanup,
        notes=notes,
    )
