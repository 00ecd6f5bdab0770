"""`ens fit` on arrays: learn fusion weights and cleanup thresholds, and estimate their gain honestly.

Three stages, each fitted on top of the previous one: fusion weights, per-class decoding gains,
per-class cleanup min_area. The estimate is k-fold over validation images: fit on k-1 folds, score
the held-out fold, pool the held-out confusion matrices. A stage whose cross-validated gain is not
positive is switched off in the final fit, so `ens fit` never recommends something it cannot show.
With `weights_per="auto"` the same folds also decide between one weight per member and one per
member and class: the one whose whole pipeline scores higher held out is kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from ensemble.errors import EnsError
from ensemble.fitting.grid import fit_gains, fit_min_area
from ensemble.fitting.weights import fit_weights, parts_pixel_set, pixel_score
from ensemble.inference.cleanup import check_connectivity, remove_small_regions
from ensemble.inference.fusion import decode, fuse, normalise_weights, scaled_weights
from ensemble.optionvalues import check_int, check_seed, short_repr
from ensemble.scoring.metrics import confusion_matrix, get_metric

DEFAULT_FOLDS = 5
WEIGHTS_PER = ("auto", "member", "class")


@dataclass(frozen=True)
class FitSettings:
    """`weights_per`: "member" (one weight per member), "class" (per member and class) or "auto"
    (whichever cross-validates better)."""

    weights_per: str = "auto"
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
    weights_per: str = "member"
    cv_by_weights_per: dict[str, float] = field(default_factory=dict)
    folds: int = 0

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


Part = tuple[list[np.ndarray], np.ndarray]
"""Labelled images of one size: each member's (n, C, H, W) probabilities and the (n, H, W) truth."""


def _select(parts: list[Part], index: np.ndarray) -> list[tuple[list[np.ndarray], np.ndarray, np.ndarray]]:
    """(probs, truth, local index) of the parts holding images `index` (numbered across the parts)."""
    chosen, start = [], 0
    for probs, truth in parts:
        local = index[(index >= start) & (index < start + len(truth))] - start
        if len(local):
            chosen.append((probs, truth, local))
        start += len(truth)
    return chosen


def _fit_once(parts: list[Part], index, n_classes, settings: FitSettings, use=(True, True, True)) -> Fitted:
    """Weights, then gains on top, then min_area on the resulting labels, each only if `use` says so."""
    chosen = _select(parts, index)
    n_members = len(parts[0][0])
    equal = normalise_weights(np.ones(n_members), n_members, n_classes)
    pixels = parts_pixel_set(
        [([p[i] for p in probs], truth[i]) for probs, truth, i in chosen], seed=settings.seed
    )
    per_class = settings.weights_per == "class"
    weights = fit_weights(pixels, per_class, settings.metric).weights if use[0] else equal
    gains = np.ones(n_classes)
    if use[1]:
        gains, _ = fit_gains(
            lambda g: pixel_score(pixels, scaled_weights(weights, g), settings.metric), n_classes
        )
    areas = np.zeros(n_classes, np.int64)
    if use[2]:
        labels = [fused_labels(probs, weights, gains, i) for probs, _, i in chosen]
        truths = [truth[i] for _, truth, i in chosen]
        areas = fit_min_area(labels, truths, n_classes, settings.metric, settings.connectivity).min_area
    return Fitted(weights, gains, areas)


def _stage_confusions(parts: list[Part], index, fitted: Fitted, n_classes, connectivity):
    """Confusion matrices of the four stages on images `index`."""
    n_members = len(parts[0][0])
    equal = normalise_weights(np.ones(n_members), n_members, n_classes)
    ones = np.ones(n_classes)
    totals = [np.zeros((n_classes, n_classes), np.int64) for _ in range(4)]
    for probs, truth, local in _select(parts, index):
        plain = fused_labels(probs, equal, ones, local)
        learned = fused_labels(probs, fitted.weights, ones, local)
        gained = fused_labels(probs, fitted.weights, fitted.gains, local)
        cleaned = gained
        if fitted.min_area.any():
            cleaned = remove_small_regions(gained, fitted.min_area, n_classes, connectivity)
        for total, labels in zip(totals, (plain, learned, gained, cleaned), strict=True):
            total += confusion_matrix(truth[local], labels, n_classes)
    return totals


def fit_ensemble(
    probs: list[np.ndarray],
    truth: np.ndarray,
    settings: FitSettings = FitSettings(),
    on_step=None,
) -> FitResult:
    """Fit on `probs` (one TTA-merged (N, C, H, W) array per member) against uint8 (N, H, W) truth.

    `on_step(description)` is called before each fit (folds per candidate weighting, then the final one).
    """
    return fit_parts([(probs, truth)], settings, on_step)


def fit_parts(parts: list[Part], settings: FitSettings = FitSettings(), on_step=None) -> FitResult:
    """`fit_ensemble` on images of several sizes, one (member probabilities, truth) part per size;
    images are numbered across the parts for the folds."""
    n_images, n_classes = sum(len(truth) for _, truth in parts), parts[0][0][0].shape[1]
    folds = check_settings(settings, n_images)
    check_labelled([truth for _, truth in parts])
    candidates = ("member", "class") if settings.weights_per == "auto" else (settings.weights_per,)
    notes = []
    cv_by: dict[str, Stages] = {}
    if folds >= 2:
        fold_of = np.empty(n_images, np.int64)
        fold_of[np.random.default_rng(settings.seed).permutation(n_images)] = np.arange(n_images) % folds
        for per in candidates:
            cv_by[per] = _cross_validate(parts, fold_of, replace(settings, weights_per=per), on_step)
        chosen = max(candidates, key=lambda per: cv_by[per].cleaned)  # ties keep "member", the simpler
        if len(candidates) > 1:
            scores = ", ".join(f"per {per} {cv_by[per].cleaned:.4f}" for per in candidates)
            notes.append(f"weights per {chosen}: the better {folds}-fold CV score ({scores})")
    else:
        chosen = "member" if settings.weights_per == "auto" else settings.weights_per
        if settings.weights_per == "auto":
            notes.append("no cross-validation (--folds < 2): one weight per member, the simpler choice")
    cv = cv_by.get(chosen)
    use = (
        (True, True, True)
        if cv is None
        else (cv.weight_gain > 0, cv.class_gain_gain > 0, cv.cleanup_gain > 0)
    )
    for used, what, fallback in zip(use, ("learned weights", "class gains", "cleanup"),
                                    ("equal weights", "gains of 1", "no cleanup"), strict=True):  # fmt: skip
        if not used:
            notes.append(f"{what} did not help in {folds}-fold CV; using {fallback}")
    if on_step:
        on_step("final fit on all images")
    final = replace(settings, weights_per=chosen)
    everything = np.arange(n_images)
    fitted = _fit_once(parts, everything, n_classes, final, use)
    matrices = _stage_confusions(parts, everything, fitted, n_classes, settings.connectivity)
    reduce = get_metric(settings.metric).reduce
    scores = {per: stages.cleaned for per, stages in cv_by.items()}
    in_sample = Stages(*(reduce(m) for m in matrices))
    return FitResult(fitted, in_sample, cv, use, notes, chosen, scores, folds if folds >= 2 else 0)


def check_settings(settings: FitSettings, n_images: int) -> int:
    """The number of folds to use; refuses settings the fit cannot honour as asked."""
    if not isinstance(settings, FitSettings):
        raise EnsError(
            f"fit settings {type(settings).__name__} are not FitSettings; e.g. FitSettings(folds=5)"
        )
    if not isinstance(settings.weights_per, str) or settings.weights_per not in WEIGHTS_PER:
        raise EnsError(
            f"--weights-per {short_repr(settings.weights_per)} is unknown; "
            f"choose one of {', '.join(WEIGHTS_PER)}"
        )
    if n_images < 1:
        raise EnsError("there are no validation images to fit on; check the split options")
    get_metric(settings.metric)
    check_connectivity(settings.connectivity)
    check_seed(check_int(settings.seed, "seed", 0, None, "use a non-negative seed such as 0"), "seed")
    check_int(settings.folds, "--folds", 0, None, f"use e.g. --folds {DEFAULT_FOLDS}, or 0 for none")
    if not 0 <= settings.folds <= n_images:
        raise EnsError(
            f"--folds {settings.folds} is outside 0..{n_images}: each fold needs at least one of the "
            f"{n_images} validation images; use e.g. --folds {min(DEFAULT_FOLDS, n_images)}, or 0 for none"
        )
    return settings.folds


def check_labelled(truths: list[np.ndarray]) -> None:
    """Refuse masks that are class 0 everywhere: both metrics drop those pixels, so no weight or
    threshold could be learned (and the fit would divide by zero)."""
    if not any(np.any(truth) for truth in truths):
        n_images = sum(len(truth) for truth in truths)
        raise EnsError(
            f"the {n_images} validation images hold no labelled pixels (every mask is class 0, which "
            "the metric ignores), so there is nothing to fit; check --masks and the split options"
        )


def _cross_validate(parts: list[Part], fold_of: np.ndarray, settings: FitSettings, on_step) -> Stages:
    """Pooled held-out confusion of each stage over the folds of `fold_of`, reduced to scores."""
    n_classes = parts[0][0][0].shape[1]
    folds = int(fold_of.max()) + 1
    totals = [np.zeros((n_classes, n_classes), np.int64) for _ in range(4)]
    for fold in range(folds):
        if on_step:
            on_step(f"fold {fold + 1}/{folds}, weights per {settings.weights_per}")
        train, held = np.flatnonzero(fold_of != fold), np.flatnonzero(fold_of == fold)
        fitted = _fit_once(parts, train, n_classes, settings)
        matrices = _stage_confusions(parts, held, fitted, n_classes, settings.connectivity)
        totals = [t + m for t, m in zip(totals, matrices, strict=True)]
    reduce = get_metric(settings.metric).reduce
    return Stages(*(reduce(t) for t in totals))
