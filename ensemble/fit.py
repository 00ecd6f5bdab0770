"""`ens fit` on arrays: learn fusion weights and cleanup thresholds, and estimate their gain honestly.

Three stages, each fitted on top of the previous one: fusion weights, per-class decoding gains,
per-class cleanup min_area. The estimate is k-fold over validation images: fit on k-1 folds, score
the held-out fold, pool the held-out confusion matrices. A stage whose cross-validated gain is not
positive is switched off in the final fit, so `ens fit` never recommends something it cannot show.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ensemble.areafit import fit_min_area
from ensemble.cleanup import remove_small_regions
from ensemble.decode import decode
from ensemble.fusion import fuse, normalise_weights
from ensemble.gains import fit_gains, scaled_weights
from ensemble.metrics import confusion_matrix, get_metric
from ensemble.weightfit import fit_weights, pixel_score, pixel_set

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
    """Scores of the stages on one set of images: equal weights, learned weights, + class gains,
    + cleanup (each stage on top of the previous one)."""

    equal: float
    learned: float
    gained: float
    cleaned: float

    @property
    def weight_gain(self) -> float:
        return self.learned - self.equal

    @property
    def class_gain_gain(self) -> float:
        return self.gained - self.learned

    @property
    def cleanup_gain(self) -> float:
        return self.cleaned - self.gained

    def to_dict(self) -> dict:
        return {
            "equal": self.equal,
            "learned": self.learned,
            "learned+gains": self.gained,
            "learned+gains+cleanup": self.cleaned,
            "weight_gain": self.weight_gain,
            "class_gain_gain": self.class_gain_gain,
            "cleanup_gain": self.cleanup_gain,
        }


@dataclass(frozen=True)
class Fitted:
    """One fit: normalised (M, C) weights, (C,) decoding gains and (C,) min_area."""

    weights: np.ndarray
    gains: np.ndarray
    min_area: np.ndarray


@dataclass(frozen=True)
class FitResult:
    """The final fit (stages whose CV gain was not positive switched off), its in-sample scores and
    the cross-validated ones."""

    fitted: Fitted
    in_sample: Stages
    cv: Stages | None
    use: tuple[bool, bool, bool]
    notes: list[str] = field(default_factory=list)

    @property
    def weights(self) -> np.ndarray:
        return self.fitted.weights

    @property
    def gains(self) -> np.ndarray:
        return self.fitted.gains

    @property
    def min_area(self) -> np.ndarray:
        return self.fitted.min_area


def fused_labels(probs: list[np.ndarray], weights: np.ndarray, gains: np.ndarray, index) -> np.ndarray:
    """Decoded labels of images `index`, fused exactly as `ens predict` fuses them."""
    return decode(fuse([np.asarray(member[index], np.float32) for member in probs], weights, gains))


def _fit_once(probs, truth, index, n_classes, settings: FitSettings, use=(True, True, True)) -> Fitted:
    """Weights, then gains on top, then min_area on the resulting labels, each only if `use` says so."""
    equal = normalise_weights(np.ones(len(probs)), len(probs), n_classes)
    pixels = pixel_set([p[index] for p in probs], truth[index], seed=settings.seed)
    weights = fit_weights(pixels, settings.per_class, settings.metric).weights if use[0] else equal
    gains = np.ones(n_classes)
    if use[1]:
        gains, _ = fit_gains(
            lambda g: pixel_score(pixels, scaled_weights(weights, g), settings.metric), n_classes
        )
    areas = np.zeros(n_classes, np.int64)
    if use[2]:
        labels = fused_labels(probs, weights, gains, index)
        areas = fit_min_area(labels, truth[index], n_classes, settings.metric, settings.connectivity).min_area
    return Fitted(weights, gains, areas)


def _stage_confusions(probs, truth, index, fitted: Fitted, n_classes, connectivity):
    """Confusion matrices of the four stages on images `index`."""
    equal = normalise_weights(np.ones(len(probs)), len(probs), n_classes)
    ones = np.ones(n_classes)
    plain = fused_labels(probs, equal, ones, index)
    learned = fused_labels(probs, fitted.weights, ones, index)
    gained = fused_labels(probs, fitted.weights, fitted.gains, index)
    cleaned = gained
    if fitted.min_area.any():
        cleaned = remove_small_regions(gained, fitted.min_area, n_classes, connectivity)
    return [confusion_matrix(truth[index], labels, n_classes) for labels in (plain, learned, gained, cleaned)]


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
    cv = None
    folds = min(settings.folds, n_images)
    if folds >= 2:
        fold_of = np.empty(n_images, np.int64)
        fold_of[np.random.default_rng(settings.seed).permutation(n_images)] = np.arange(n_images) % folds
        totals = [np.zeros((n_classes, n_classes), np.int64) for _ in range(4)]
        for fold in range(folds):
            if on_step:
                on_step(f"fold {fold + 1}/{folds}")
            train, held = np.flatnonzero(fold_of != fold), np.flatnonzero(fold_of == fold)
            fitted = _fit_once(probs, truth, train, n_classes, settings)
            matrices = _stage_confusions(probs, truth, held, fitted, n_classes, settings.connectivity)
            totals = [t + m for t, m in zip(totals, matrices, strict=True)]
        cv = Stages(*(reduce(t) for t in totals))
    use = (
        (True, True, True)
        if cv is None
        else (cv.weight_gain > 0, cv.class_gain_gain > 0, cv.cleanup_gain > 0)
    )
    notes = []
    for used, what, fallback in zip(use, ("learned weights", "class gains", "cleanup"),
                                    ("equal weights", "gains of 1", "no cleanup"), strict=True):  # fmt: skip
        if not used:
            notes.append(f"{what} did not help in {folds}-fold CV; using {fallback}")
    if on_step:
        on_step("final fit on all images")
    everything = np.arange(n_images)
    fitted = _fit_once(probs, truth, everything, n_classes, settings, use)
    matrices = _stage_confusions(probs, truth, everything, fitted, n_classes, settings.connectivity)
    return FitResult(fitted, Stages(*(reduce(m) for m in matrices)), cv, use, notes)
