"""Compiled inner loops of the weight and gain searches: each scores a candidate in one pass over
the sampled pixels, with no (classes x pixels) temporaries and no strided argmax."""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def argmax_counts(fused, scale, coded_truth, n_cells):  # pragma: no cover - compiled
    """Flat confusion counts of the argmax over rows of `fused[c] * scale[c]` (ties to the first
    row), each pixel counted at `coded_truth + row` (its true class times C, plus the first row's class)."""
    n_rows, n_pixels = fused.shape
    counts = np.zeros(n_cells, np.int64)
    for p in range(n_pixels):
        best, row = fused[0, p] * scale[0], 0
        for c in range(1, n_rows):
            value = fused[c, p] * scale[c]
            if value > best:
                best, row = value, c
        counts[coded_truth[p] + row] += 1
    return counts


@numba.njit(cache=True, nogil=True)
def moved_counts(fused, member, delta, scale, coded_truth, n_cells):  # pragma: no cover - compiled
    """`argmax_counts` of `(fused[c] + delta[c] * member[c]) * scale[c]`: the fused scores after one
    member's weights moved by `delta` and the columns were renormalised by `scale`. A row with
    delta 0 and scale 1 is `fused[c]` itself (scores are finite and >= 0), read without `member[c]`:
    these loops are bound by memory traffic."""
    n_rows, n_pixels = fused.shape
    still = (delta == 0) & (scale == 1)
    counts = np.zeros(n_cells, np.int64)
    for p in range(n_pixels):
        best = fused[0, p] if still[0] else (fused[0, p] + delta[0] * member[0, p]) * scale[0]
        row = 0
        for c in range(1, n_rows):
            value = fused[c, p] if still[c] else (fused[c, p] + delta[c] * member[c, p]) * scale[c]
            if value > best:
                best, row = value, c
        counts[coded_truth[p] + row] += 1
    return counts


@numba.njit(cache=True, nogil=True)
def mixture_step(true_probs, weights, floor):  # pragma: no cover - compiled
    """One EM update of mixture weights from (P, M) true-class probabilities, each raised to at
    least `floor` in float64: w_m * mean over pixels of p_m / sum_k w_k p_k. float32 probabilities
    are read as they are stored (half the memory traffic of a float64 copy, the same values)."""
    n_pixels, n_members = true_probs.shape
    total = np.zeros(n_members)
    for p in range(n_pixels):
        mixture = 0.0
        for m in range(n_members):
            mixture += weights[m] * max(np.float64(true_probs[p, m]), floor)
        inverse = 1.0 / mixture
        for m in range(n_members):
            total[m] += max(np.float64(true_probs[p, m]), floor) * inverse
    return weights * total / n_pixels


@numba.njit(cache=True, nogil=True)
def fused_scores(weights, scores, first):  # pragma: no cover - compiled
    """float32 (C - first, P) sum_m weights[m, c] * scores[m, c] for classes c from `first`, of
    float32 (M, C) weights and (M, C, P) scores, summed member by member in float32 (each product
    rounded, then added): bit for bit numpy's `scores[0] * w[0] + scores[1] * w[1] + ...`."""
    n_members, n_classes, n_pixels = scores.shape
    out = np.empty((n_classes - first, n_pixels), np.float32)
    for c in range(first, n_classes):
        row, weight = out[c - first], weights[0, c]
        for p in range(n_pixels):
            row[p] = scores[0, c, p] * weight
        for m in range(1, n_members):
            weight = weights[m, c]
            for p in range(n_pixels):
                row[p] += scores[m, c, p] * weight
    return out


@numba.njit(cache=True, nogil=True)
def image_confusions(truth, labels, n_classes):  # pragma: no cover - compiled
    """int64 (N, C, C) confusion matrix of each image of (N, H, W) truth and labels (rows: true
    class), both already checked to hold classes below `n_classes`."""
    n_images, height, width = truth.shape
    out = np.zeros((n_images, n_classes, n_classes), np.int64)
    for i in range(n_images):
        for y in range(height):
            for x in range(width):
                out[i, truth[i, y, x], labels[i, y, x]] += 1
    return out


@numba.njit(parallel=True, cache=True, nogil=True)
def fused_labels_of(members, weights, index, first):  # pragma: no cover - compiled
    """uint8 (len(index), H, W) labels of images `index` of the (N, C, H, W) `members`: the argmax
    over classes from `first` of sum_m weights[m, c] * members[m][image, c], summed member by member
    in float32 as `ens predict` fuses (ties to the lower class), without fused temporaries."""
    n_members = len(members)
    n_classes, height, width = members[0].shape[1], members[0].shape[2], members[0].shape[3]
    out = np.empty((len(index), height, width), np.uint8)
    for i in numba.prange(len(index)):
        image = index[i]
        for y in range(height):
            for x in range(width):
                best, label = -np.inf, first
                for c in range(first, n_classes):
                    total = members[0][image, c, y, x] * weights[0, c]
                    for m in range(1, n_members):
                        total += members[m][image, c, y, x] * weights[m, c]
                    if total > best:
                        best, label = total, c
                out[i, y, x] = label
    return out
