"""Learning fusion weights on labelled pixels: NLL initialisation, then direct search on the metric.

Works on `PixelSet`, member probabilities at the labelled pixels only (true label 0 is dropped by
both metrics, so those pixels cannot change a score). Weights are a (members, classes) matrix whose
columns are normalised, exactly as `ensemble.inference.fusion` applies them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ensemble.data.metrics import get_metric
from ensemble.fitting.kernels import argmax_counts, fused_scores, mixture_step, moved_counts
from ensemble.inference.fusion import normalise_weights

MAX_PIXELS = 300_000
NLL_PIXELS = 250_000


@dataclass(frozen=True)
class PixelSet:
    """float32 (M, C, P) member probabilities at P labelled pixels, their int64 (P,) true labels,
    when gathered from whole images the int64 (P,) number of the image each pixel is in, and the
    (C,) number of labelled pixels each sampled pixel of a true class stands for (confusion rows
    are scaled by it, so a class-balanced sample scores as the whole images do)."""

    scores: np.ndarray
    truth: np.ndarray
    image: np.ndarray | None = None
    row_scale: np.ndarray | None = None

    def confusion(self, counts: np.ndarray) -> np.ndarray:
        """(C, C) confusion matrix of the images from flat counts over the sampled pixels."""
        matrix = counts.reshape(self.n_classes, self.n_classes)
        return matrix if self.row_scale is None else matrix * self.row_scale[:, None]

    @property
    def n_members(self) -> int:
        return self.scores.shape[0]

    @property
    def n_classes(self) -> int:
        return self.scores.shape[1]

    def of_images(self, index: np.ndarray) -> PixelSet:
        """The pixels of images `index` (numbered as `image`), scores C-contiguous for the kernels."""
        keep = np.isin(self.image, index)
        return PixelSet(
            self.scores.compress(keep, axis=2), self.truth[keep], self.image[keep], self.row_scale
        )


def pixel_set(
    probs: list[np.ndarray], truth: np.ndarray, max_pixels: int = MAX_PIXELS, seed: int = 0
) -> PixelSet:
    """Gather members' (N, C, H, W) probabilities at the pixels whose true label is not 0: a fixed
    random subset of at most `max_pixels` of them, the same share of each true class (all of a class
    when it has fewer), so rare classes, which the course metric weighs as much as common ones, are
    scored on all or many of their pixels."""
    return parts_pixel_set([(probs, truth)], max_pixels, seed)


def parts_pixel_set(
    parts: list[tuple[list[np.ndarray], np.ndarray]], max_pixels: int = MAX_PIXELS, seed: int = 0
) -> PixelSet:
    """`pixel_set` over images of several sizes: one (member probabilities, truth) pair per size,
    the labelled pixels of all of them numbered in order and sampled together."""
    flat_truths = [np.asarray(truth).reshape(-1) for _, truth in parts]
    offsets = np.cumsum([0, *(t.size for t in flat_truths)])
    first_image = np.cumsum([0, *(len(truth) for _, truth in parts)])
    n_classes = parts[0][0][0].shape[1]
    index, row_scale = _balanced_sample(flat_truths, n_classes, max_pixels, seed)
    scores = np.empty((len(parts[0][0]), n_classes, len(index)), np.float32)
    images = np.empty(len(index), np.int64)
    for g, ((probs, _), start, stop) in enumerate(zip(parts, offsets[:-1], offsets[1:], strict=True)):
        chosen = slice(*np.searchsorted(index, [start, stop]))
        n_images = probs[0].shape[0]
        pixels_per_image = int(np.prod(probs[0].shape[2:]))
        image, pixel = np.divmod(index[chosen] - start, pixels_per_image)
        images[chosen] = image + first_image[g]
        for m, member in enumerate(probs):
            flat = np.asarray(member).reshape(n_images, n_classes, pixels_per_image)
            scores[m][:, chosen] = flat[image, :, pixel].T
    truth = np.concatenate(flat_truths)[index] if len(parts) > 1 else flat_truths[0][index]
    return PixelSet(scores, truth.astype(np.int64), images, row_scale)


def _balanced_sample(flat_truths, n_classes: int, max_pixels: int, seed: int):
    """Sorted flat indices (numbered across the parts in order) of at most `max_pixels` labelled
    pixels, at most an equal share per true class (unused shares of small classes go to the
    others), and the (C,) pixels each one stands for."""
    rng = np.random.default_rng(seed)
    truth = np.concatenate(flat_truths) if len(flat_truths) > 1 else flat_truths[0]
    of_class = [np.flatnonzero(truth == c) for c in range(1, n_classes)]
    sizes = sorted(len(found) for found in of_class)
    budget, cap = max_pixels, max_pixels
    for left, size in zip(range(len(sizes), 0, -1), sizes, strict=True):
        cap = budget // left
        if size > cap:
            break
        budget -= size
    chosen, row_scale = [], np.ones(n_classes)
    for c, found in enumerate(of_class, start=1):
        if len(found) > cap:
            row_scale[c] = len(found) / cap
            found = rng.choice(found, cap, replace=False)
        chosen.append(found)
    index = np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, np.int64)
    return index, row_scale


def class_scores(weights: np.ndarray, scores: np.ndarray, first: int = 0) -> np.ndarray:
    """float32 (C - first, P) fused scores sum_m weights[m, c] * scores[m, c], member by member."""
    return fused_scores(np.asarray(weights, np.float32), np.ascontiguousarray(scores, np.float32), first)


def pixel_score(
    pixels: PixelSet, weights: np.ndarray, metric: str = "course", allow_background: bool = False
) -> float:
    """The metric of the fused, decoded pixels."""
    first, n = 0 if allow_background else 1, pixels.n_classes
    fused = class_scores(weights, pixels.scores, first)
    counts = argmax_counts(fused, np.ones(n - first, fused.dtype), pixels.truth * n + first, n * n)
    return get_metric(metric).reduce(pixels.confusion(counts))


def gain_scorer(pixels: PixelSet, weights: np.ndarray, metric: str = "course"):
    """score(gains): the metric of the pixels fused under normalised `weights` with each class score
    times its gain (as `scaled_weights` folds them); the fused scores are computed once, so each
    call only rescales them."""
    fused = class_scores(weights, pixels.scores, 1)
    n, reduce = pixels.n_classes, get_metric(metric).reduce
    coded_truth = pixels.truth * n + 1

    def score(gains: np.ndarray) -> float:
        scale = np.asarray(gains[1:], np.float32)
        return reduce(pixels.confusion(argmax_counts(fused, scale, coded_truth, n * n)))

    return score


def nll_weights(pixels: PixelSet, iterations: int = 200, tol: float = 1e-7) -> np.ndarray:
    """Per-member weights minimising the pixel NLL of the weighted mixture of member probabilities.

    The NLL of a mixture is convex in its weights; the EM update w_m <- mean(w_m p_m / sum_k w_k p_k)
    decreases it monotonically and stays on the simplex. At most NLL_PIXELS evenly spaced pixels
    are used: the weights are only the search's starting point.

    >>> good = np.array([[[0.9, 0.9], [0.1, 0.1]]]), np.array([0, 0])
    >>> bad = np.array([[[0.2, 0.2], [0.8, 0.8]]])
    >>> w = nll_weights(PixelSet(np.concatenate([good[0], bad]).astype(np.float32), good[1]))
    >>> bool(w[0] > 0.99)
    True
    """
    if not len(pixels.truth):  # no labelled pixel (a fold of background-only images): no evidence
        return np.full(pixels.n_members, 1.0 / pixels.n_members)
    step = -(-len(pixels.truth) // NLL_PIXELS)  # a starting point: evenly spaced pixels will do
    index = np.arange(0, len(pixels.truth), step)
    true_probs = np.ascontiguousarray(pixels.scores[:, pixels.truth[index], index].T)  # (P, M)
    weights = np.full(pixels.n_members, 1.0 / pixels.n_members)
    for _ in range(iterations):
        updated = mixture_step(true_probs, weights, 1e-6)  # each probability at least 1e-6
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
    nll: np.ndarray | None = None,
) -> WeightFit:
    """NLL weights (`nll` if given), then a coordinate search over the simplex (per member or per
    member x class) accepting only steps that raise the metric; never below equal and NLL weights."""
    n_members, n_classes = pixels.n_members, pixels.n_classes

    def score(w: np.ndarray) -> float:
        return pixel_score(pixels, w, metric, allow_background)

    equal = normalise_weights(np.ones(n_members), n_members, n_classes)
    nll = nll_weights(pixels) if nll is None else nll
    start = normalise_weights(nll, n_members, n_classes)
    equal_score, nll_score = score(equal), score(start)
    best, best_score = (start, nll_score) if nll_score >= equal_score else (equal, equal_score)
    search = _CoordinateSearch(pixels, metric, per_class, max_evaluations, 0 if allow_background else 1)
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
    the step when a full sweep finds nothing better; zero is tried, so a harmful member can drop out.

    A step changes one member's row, so a candidate's fused scores are the current ones with that
    member's share replaced and the changed columns renormalised: one pass over the pixels' class
    scores instead of one per member. The current scores are recomputed exactly on each accepted step.
    """

    def __init__(
        self, pixels: PixelSet, metric: str, per_class: bool, max_evaluations: int, first_class: int
    ) -> None:
        self.pixels, self.scores = pixels, pixels.scores[:, first_class:]
        self.n_classes, self.first_class = pixels.n_classes, first_class
        coded = pixels.truth * pixels.n_classes + first_class  # the narrowest integers: less to read
        self.coded_truth = coded.astype(np.min_scalar_type(pixels.n_classes**2))
        self.reduce = get_metric(metric).reduce
        self.per_class, self.max_evaluations, self.evaluations = per_class, max_evaluations, 0

    def _fused(self, weights: np.ndarray) -> np.ndarray:
        return class_scores(weights, self.pixels.scores, self.first_class)

    def _score(self, counts: np.ndarray) -> float:
        return self.reduce(self.pixels.confusion(counts))

    def run(self, weights: np.ndarray, best: float) -> tuple[np.ndarray, float]:
        step = 1.0
        fused = self._fused(weights)
        while step > 0.03 and self.evaluations < self.max_evaluations:
            improved = False
            for member, classes in self._coords(weights.shape):
                for value in self._values(weights, member, classes, step):
                    if self.evaluations >= self.max_evaluations:
                        break
                    candidate = self._moved(weights, member, classes, value)
                    if candidate is None:
                        continue
                    self.evaluations += 1
                    score = self._score(self._moved_counts(fused, weights, member, classes, value))
                    if score > best + 1e-9:
                        weights, best, improved = candidate, score, True
                        fused = self._fused(weights)
                        break
            if not improved:
                step /= 2
        return weights, best

    def _coords(self, shape: tuple[int, int]):
        n_members, n_classes = shape
        if self.per_class:
            return [(m, [c]) for c in range(self.first_class, n_classes) for m in range(n_members)]
        return [(m, list(range(n_classes))) for m in range(n_members)]

    @staticmethod
    def _values(weights: np.ndarray, member: int, classes: list[int], step: float) -> list[float]:
        current = weights[member, classes[0]]
        column_mean = weights[:, classes[0]].mean()
        return [current * (1 + step), current / (1 + step), 0.0] if current > 0 else [step * column_mean]

    @staticmethod
    def _moved(weights: np.ndarray, member: int, classes: list[int], value: float) -> np.ndarray | None:
        """`weights` with `weights[member, classes] = value`, columns renormalised; None when a
        column would be all zero."""
        candidate = weights.copy()
        candidate[member, classes] = value
        if not (candidate[:, classes].sum(axis=0) > 0).all():
            return None
        return candidate / candidate.sum(axis=0, keepdims=True)

    def _moved_counts(self, fused, weights, member: int, classes: list[int], value: float) -> np.ndarray:
        """Confusion counts under `_moved(weights, ...)`, from the fused scores under `weights`:
        column c becomes (fused_c + (value - w_mc) p_mc) / (sum_k w_kc + value - w_mc). A column
        left with almost no weight is computed afresh instead, where the update would lose precision."""
        rows = self.scores.shape[1]
        delta, scale = np.zeros(rows, np.float32), np.ones(rows, np.float32)
        for c in classes:
            if c < self.first_class:
                continue
            change = value - weights[member, c]
            total = weights[:, c].sum() + change
            if total < 1e-3:
                fresh = self._fused(self._moved(weights, member, classes, value))
                return argmax_counts(fresh, scale, self.coded_truth, self.n_classes**2)
            delta[c - self.first_class], scale[c - self.first_class] = change, 1.0 / total
        return moved_counts(fused, self.scores[member], delta, scale, self.coded_truth, self.n_classes**2)
