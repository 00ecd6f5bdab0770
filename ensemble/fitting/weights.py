"""Learning fusion weights on labelled pixels: NLL initialisation, then direct search on the metric.

Works on `PixelSet`, member probabilities at the labelled pixels only (true label 0 is dropped by
both metrics, so those pixels cannot change a score). Weights are a (members, classes) matrix whose
columns are normalised, exactly as `ensemble.inference.fusion` applies them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ensemble.inference.fusion import normalise_weights
from ensemble.scoring.metrics import get_metric

MAX_PIXELS = 1_000_000


@dataclass(frozen=True)
class PixelSet:
    """float32 (M, C, P) member probabilities at P labelled pixels and their int64 (P,) true labels."""

    scores: np.ndarray
    truth: np.ndarray

    @property
    def n_members(self) -> int:
        return self.scores.shape[0]

    @property
    def n_classes(self) -> int:
        return self.scores.shape[1]


def pixel_set(
    probs: list[np.ndarray], truth: np.ndarray, max_pixels: int = MAX_PIXELS, seed: int = 0
) -> PixelSet:
    """Gather members' (N, C, H, W) probabilities at the pixels whose true label is not 0,
    a fixed random subset of at most `max_pixels` of them."""
    return parts_pixel_set([(probs, truth)], max_pixels, seed)


def parts_pixel_set(
    parts: list[tuple[list[np.ndarray], np.ndarray]], max_pixels: int = MAX_PIXELS, seed: int = 0
) -> PixelSet:
    """`pixel_set` over images of several sizes: one (member probabilities, truth) pair per size,
    the labelled pixels of all of them numbered in order and sampled together."""
    flat_truths = [np.asarray(truth).reshape(-1) for _, truth in parts]
    offsets = np.cumsum([0, *(t.size for t in flat_truths)])
    index = np.concatenate([np.flatnonzero(t != 0) + o for t, o in zip(flat_truths, offsets, strict=False)])
    if len(index) > max_pixels:
        index = np.sort(np.random.default_rng(seed).choice(index, max_pixels, replace=False))
    n_classes = parts[0][0][0].shape[1]
    scores = np.empty((len(parts[0][0]), n_classes, len(index)), np.float32)
    for (probs, _), start, stop in zip(parts, offsets[:-1], offsets[1:], strict=True):
        chosen = slice(*np.searchsorted(index, [start, stop]))
        n_images = probs[0].shape[0]
        pixels_per_image = int(np.prod(probs[0].shape[2:]))
        image, pixel = np.divmod(index[chosen] - start, pixels_per_image)
        for m, member in enumerate(probs):
            flat = np.asarray(member).reshape(n_images, n_classes, pixels_per_image)
            scores[m][:, chosen] = flat[image, :, pixel].T
    truth = np.concatenate(flat_truths)[index] if len(parts) > 1 else flat_truths[0][index]
    return PixelSet(scores, truth.astype(np.int64))


def fused_labels(pixels: PixelSet, weights: np.ndarray, allow_background: bool = False) -> np.ndarray:
    """Decoded labels of the pixels under normalised (M, C) `weights` (argmax over 1..C-1 by default)."""
    first = 0 if allow_background else 1
    fused = np.einsum("mc,mcp->cp", weights[:, first:], pixels.scores[:, first:], optimize=True)
    return fused.argmax(axis=0) + first


def pixel_score(
    pixels: PixelSet, weights: np.ndarray, metric: str = "course", allow_background: bool = False
) -> float:
    """The metric of the fused, decoded pixels."""
    n = pixels.n_classes
    pred = fused_labels(pixels, weights, allow_background)
    matrix = np.bincount(pixels.truth * n + pred, minlength=n * n).reshape(n, n)
    return get_metric(metric).reduce(matrix)


def nll_weights(pixels: PixelSet, iterations: int = 200, tol: float = 1e-7) -> np.ndarray:
    """Per-member weights minimising the pixel NLL of the weighted mixture of member probabilities.

    The NLL of a mixture is convex in its weights; the EM update w_m <- mean(w_m p_m / sum_k w_k p_k)
    decreases it monotonically and stays on the simplex.

    >>> good = np.array([[[0.9, 0.9], [0.1, 0.1]]]), np.array([0, 0])
    >>> bad = np.array([[[0.2, 0.2], [0.8, 0.8]]])
    >>> w = nll_weights(PixelSet(np.concatenate([good[0], bad]).astype(np.float32), good[1]))
    >>> bool(w[0] > 0.99)
    True
    """
    if not len(pixels.truth):  # no labelled pixel (a fold of background-only images): no evidence
        return np.full(pixels.n_members, 1.0 / pixels.n_members)
    true_probs = pixels.scores[:, pixels.truth, np.arange(len(pixels.truth))].astype(np.float64)
    true_probs = np.maximum(true_probs, 1e-6)
    weights = np.full(pixels.n_members, 1.0 / pixels.n_members)
    for _ in range(iterations):
        mixture = weights @ true_probs
        updated = weights * (true_probs / mixture).mean(axis=1)
        updated /= updated.sum()
        if np.abs(updated - weights).max() < tol:
            return updated
        weights = updated
    return weights


@dataclass(frozen=True)
class WeightFit:
    """Fitted (M, C) weights, the NLL starting point and the metric before and after the search."""

    weights: np.ndarray
    nll: np.ndarray
    equal_score: float
    nll_score: float
    score: float
    evaluations: int


def fit_weights(
    pixels: PixelSet,
    per_class: bool = False,
    metric: str = "course",
    allow_background: bool = False,
    max_evaluations: int = 400,
) -> WeightFit:
    """NLL weights, then a coordinate search over the simplex (per member, or per member x class)
    that accepts only steps raising the metric; never ends below the better of equal and NLL."""
    n_members, n_classes = pixels.n_members, pixels.n_classes

    def score(w: np.ndarray) -> float:
        return pixel_score(pixels, w, metric, allow_background)

    equal = normalise_weights(np.ones(n_members), n_members, n_classes)
    nll = nll_weights(pixels)
    start = normalise_weights(nll, n_members, n_classes)
    equal_score, nll_score = score(equal), score(start)
    best, best_score = (start, nll_score) if nll_score >= equal_score else (equal, equal_score)
    search = _CoordinateSearch(score, per_class, max_evaluations, 0 if allow_background else 1)
    best, best_score = search.run(best.astype(np.float64), best_score)
    return WeightFit(
        normalise_weights(best, n_members, n_classes),
        nll,
        equal_score,
        nll_score,
        best_score,
        search.evaluations,
    )


class _CoordinateSearch:
    """Multiplicative coordinate steps on one weight (or one weight column entry) at a time, halving
    the step when a full sweep finds nothing better; zero is tried, so a harmful member can drop out."""

    def __init__(self, score, per_class: bool, max_evaluations: int, first_class: int) -> None:
        self.score, self.per_class, self.max_evaluations = score, per_class, max_evaluations
        self.first_class = first_class
        self.evaluations = 0

    def run(self, weights: np.ndarray, best: float) -> tuple[np.ndarray, float]:
        step = 1.0
        while step > 0.03 and self.evaluations < self.max_evaluations:
            improved = False
            for coord in self._coords(weights.shape):
                for candidate in self._moves(weights, coord, step):
                    if self.evaluations >= self.max_evaluations:
                        break
                    self.evaluations += 1
                    value = self.score(candidate)
                    if value > best + 1e-9:
                        weights, best, improved = candidate, value, True
                        break
            if not improved:
                step /= 2
        return weights, best

    def _coords(self, shape: tuple[int, int]):
        n_members, n_classes = shape
        if self.per_class:
            return [(m, (c,)) for c in range(self.first_class, n_classes) for m in range(n_members)]
        return [(m, tuple(range(n_classes))) for m in range(n_members)]

    def _moves(self, weights: np.ndarray, coord, step: float):
        member, classes = coord
        current = weights[member, classes[0]]
        column_mean = weights[:, classes[0]].mean()
        values = [current * (1 + step), current / (1 + step), 0.0] if current > 0 else [step * column_mean]
        for value in values:
            candidate = weights.copy()
            candidate[member, list(classes)] = value
            if (candidate[:, list(classes)].sum(axis=0) > 0).all():
                yield candidate / candidate.sum(axis=0, keepdims=True)
