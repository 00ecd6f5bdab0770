"""`ens fit` on arrays: learn fusion weights and cleanup thresholds, and estimate their gain honestly.

Three stages, each fitted on top of the previous one: fusion weights, per-class decoding gains,
per-class cleanup min_area. The choices of the fit (one weight per member or per member and class
with `weights_per="auto"`, and which stages to use) are made by k-fold CV over the validation
images: a stage whose CV gain is not positive is switched off, so `ens fit` never recommends
something it cannot show. The estimate reported is nested: in each outer fold the whole fit, its
choices included, is made again on the other folds alone and scored on the held-out one, so no
stage's estimated gain is inflated by having been chosen on the images it is scored on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ensemble.data.metrics import confusion_matrix, get_metric
from ensemble.errors import EnsError
from ensemble.fitting.grid import fit_gains, fit_min_area
from ensemble.fitting.kernels import fused_labels_of
from ensemble.fitting.weights import PixelSet, fit_weights, gain_scorer, parts_pixel_set
from ensemble.inference.cleanup import check_connectivity, remove_small_regions
from ensemble.inference.fusion import normalise_weights, scaled_weights
from ensemble.optionvalues import check_int, check_seed, short_repr

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
    """The final fit (stages whose CV gain was not positive switched off), its in-sample scores, the
    nested cross-validated ones (`cv`) and those of the CV that made the choices (`selection`)."""

    fitted: Fitted
    in_sample: Stages
    cv: Stages | None
    use: tuple[bool, bool, bool]
    notes: list[str] = field(default_factory=list)
    weights_per: str = "member"
    cv_by_weights_per: dict[str, float] = field(default_factory=dict)
    folds: int = 0
    selection: Stages | None = None

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
    """Decoded labels of images `index`, fused as `ens predict` fuses them (weights times gains,
    member by member in float32, argmax over classes 1..C-1)."""
    n_members, n_classes = len(probs), probs[0].shape[1]
    matrix = scaled_weights(normalise_weights(weights, n_members, n_classes), gains)
    members = tuple(np.ascontiguousarray(member, np.float32) for member in probs)
    return fused_labels_of(members, matrix, np.asarray(index, np.int64), 1)


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


Progress = Callable[[str, int, int], None]
"""on_step(what, done, total): the fit is about to do `what`, `done` of its `total` fits made."""


class _Pool:
    """The validation images of one fit, read once: member probabilities per size, and the
    labelled pixels every weight and gain search samples from (each fold takes its images' share)."""

    def __init__(self, parts: list[Part], settings: FitSettings) -> None:
        parts = [([np.ascontiguousarray(m, np.float32) for m in probs], truth) for probs, truth in parts]
        self.parts, self.settings = parts, settings
        self.n_images = sum(len(truth) for _, truth in parts)
        self.n_members, self.n_classes = len(parts[0][0]), parts[0][0][0].shape[1]
        self.pixels = parts_pixel_set(parts, seed=settings.seed)
        self.equal = normalise_weights(np.ones(self.n_members), self.n_members, self.n_classes)

    def pixels_of(self, index: np.ndarray) -> PixelSet:
        return self.pixels if len(index) == self.n_images else self.pixels.of_images(index)


class _Steps:
    """Counts the fits made and tells `on_step` what comes next."""

    def __init__(self, on_step: Progress | None, total: int) -> None:
        self.on_step, self.total, self.done = on_step, total, 0

    def __call__(self, what: str) -> None:
        if self.on_step:
            self.on_step(what, self.done, self.total)
        self.done += 1


def _fit_once(pool: _Pool, index, per: str, use=(True, True, True)) -> Fitted:
    """Weights, then gains on top, then min_area on the resulting labels, each only if `use` says so."""
    settings, n_classes = pool.settings, pool.n_classes
    pixels = pool.pixels_of(index)
    weights = fit_weights(pixels, per == "class", settings.metric).weights if use[0] else pool.equal
    gains = np.ones(n_classes)
    if use[1]:
        gains, _ = fit_gains(gain_scorer(pixels, weights, settings.metric), n_classes)
    areas = np.zeros(n_classes, np.int64)
    if use[2]:
        chosen = _select(pool.parts, index)
        labels = [fused_labels(probs, weights, gains, i) for probs, _, i in chosen]
        truths = [truth[i] for _, truth, i in chosen]
        areas = fit_min_area(labels, truths, n_classes, settings.metric, settings.connectivity).min_area
    return Fitted(weights, gains, areas)


def _stage_confusions(pool: _Pool, index, fitted: Fitted) -> list[np.ndarray]:
    """Confusion matrices of the four stages on images `index`."""
    n_classes, ones = pool.n_classes, np.ones(pool.n_classes)
    totals = [np.zeros((n_classes, n_classes), np.int64) for _ in range(4)]
    for probs, truth, local in _select(pool.parts, index):
        plain = fused_labels(probs, pool.equal, ones, local)
        learned = fused_labels(probs, fitted.weights, ones, local)
        gained = fused_labels(probs, fitted.weights, fitted.gains, local)
        cleaned = gained
        if fitted.min_area.any():
            cleaned = remove_small_regions(gained, fitted.min_area, n_classes, pool.settings.connectivity)
        for total, labels in zip(totals, (plain, learned, gained, cleaned), strict=True):
            total += confusion_matrix(truth[local], labels, n_classes)
    return totals


def _reduced(pool: _Pool, matrices: list[np.ndarray]) -> Stages:
    reduce = get_metric(pool.settings.metric).reduce
    return Stages(*(reduce(m) for m in matrices))


def fit_ensemble(
    probs: list[np.ndarray],
    truth: np.ndarray,
    settings: FitSettings = FitSettings(),
    on_step: Progress | None = None,
) -> FitResult:
    """Fit on `probs` (one TTA-merged (N, C, H, W) array per member) against uint8 (N, H, W) truth.

    `on_step(what, done, total)` is called before each fit (folds per candidate weighting, the
    outer folds of the nested estimate, then the final one)."""
    return fit_parts([(probs, truth)], settings, on_step)


def fit_parts(
    parts: list[Part], settings: FitSettings = FitSettings(), on_step: Progress | None = None
) -> FitResult:
    """`fit_ensemble` on images of several sizes, one (member probabilities, truth) part per size;
    images are numbered across the parts for the folds."""
    n_images = sum(len(truth) for _, truth in parts)
    folds = check_settings(settings, n_images)
    check_labelled([truth for _, truth in parts])
    pool = _Pool(parts, settings)
    everything = np.arange(n_images)
    outer = _fold_of(everything, folds, settings.seed)
    held_out = [np.flatnonzero(outer == k) for k in range(folds)] if folds >= 2 else []
    trains = [np.setdiff1d(everything, held) for held in held_out]
    steps = _Steps(on_step, sum(_fits_needed(len(t), settings) for t in [everything, *trains]))
    choice = _choose(pool, everything, steps, "")
    steps("final fit on all images")
    fitted = _fit_once(pool, everything, choice.per, choice.use)
    in_sample = _reduced(pool, _stage_confusions(pool, everything, fitted))
    cv = None
    if held_out:
        totals = [np.zeros((pool.n_classes,) * 2, np.int64) for _ in range(4)]
        for k, (train, held) in enumerate(zip(trains, held_out, strict=True)):
            where = f"outer fold {k + 1}/{folds}: "
            inner = _choose(pool, train, steps, where)
            steps(f"{where}fit on the other folds")
            fold_fit = _fit_once(pool, train, inner.per, inner.use)
            totals = [t + m for t, m in zip(totals, _stage_confusions(pool, held, fold_fit), strict=True)]
        cv = _reduced(pool, totals)
    scores = {per: stages.cleaned for per, stages in choice.by.items()}
    return FitResult(
        fitted, in_sample, cv, choice.use, choice.notes, choice.per, scores, choice.folds,
        choice.by.get(choice.per),
    )  # fmt: skip


@dataclass(frozen=True)
class _Choice:
    """What a fit on some images uses, decided by CV on those images alone."""

    per: str
    use: tuple[bool, bool, bool]
    by: dict[str, Stages]
    notes: list[str]
    folds: int


def _candidates(settings: FitSettings) -> tuple[str, ...]:
    return ("member", "class") if settings.weights_per == "auto" else (settings.weights_per,)


def _fits_needed(n_images: int, settings: FitSettings) -> int:
    """Fits `_choose` and the fit after it make on `n_images` images."""
    folds = min(settings.folds, n_images)
    return 1 + (len(_candidates(settings)) * folds if folds >= 2 else 0)


def _fold_of(index: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """The fold of each image of `index`, by a seeded permutation (sizes differ by at most one)."""
    fold_of = np.empty(len(index), np.int64)
    if folds >= 2:
        fold_of[np.random.default_rng(seed).permutation(len(index))] = np.arange(len(index)) % folds
    return fold_of


def _choose(pool: _Pool, index: np.ndarray, steps: _Steps, where: str) -> _Choice:
    """Weighting and stages for a fit on images `index`, by `folds`-fold CV on them alone."""
    settings = pool.settings
    folds = min(settings.folds, len(index))
    candidates, notes = _candidates(settings), []
    if folds < 2:
        chosen = "member" if settings.weights_per == "auto" else settings.weights_per
        if settings.weights_per == "auto":
            notes.append("no cross-validation (--folds < 2): one weight per member, the simpler choice")
        return _Choice(chosen, (True, True, True), {}, notes, 0)
    fold_of = _fold_of(index, folds, settings.seed)
    by = {per: _cross_validate(pool, index, fold_of, per, steps, where) for per in candidates}
    chosen = max(candidates, key=lambda per: by[per].cleaned)  # ties keep "member", the simpler
    if len(candidates) > 1:
        scores = ", ".join(f"per {per} {by[per].cleaned:.4f}" for per in candidates)
        notes.append(f"weights per {chosen}: the better {folds}-fold CV score ({scores})")
    cv = by[chosen]
    use = (cv.weight_gain > 0, cv.class_gain_gain > 0, cv.cleanup_gain > 0)
    for used, what, fallback in zip(use, ("learned weights", "class gains", "cleanup"),
                                    ("equal weights", "gains of 1", "no cleanup"), strict=True):  # fmt: skip
        if not used:
            notes.append(f"{what} did not help in {folds}-fold CV; using {fallback}")
    return _Choice(chosen, use, by, notes, folds)


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


def _cross_validate(pool: _Pool, index, fold_of: np.ndarray, per: str, steps: _Steps, where: str) -> Stages:
    """Pooled held-out confusion of each stage over the folds of images `index`, reduced to scores."""
    folds = int(fold_of.max()) + 1
    totals = [np.zeros((pool.n_classes,) * 2, np.int64) for _ in range(4)]
    for fold in range(folds):
        steps(f"{where}fold {fold + 1}/{folds}, weights per {per}")
        train, held = index[fold_of != fold], index[fold_of == fold]
        fitted = _fit_once(pool, train, per)
        totals = [t + m for t, m in zip(totals, _stage_confusions(pool, held, fitted), strict=True)]
    return _reduced(pool, totals)
