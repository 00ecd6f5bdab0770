"""One fit of the three stages (fusion weights, class gains, cleanup min_area) on some of the
validation images, and the scores of the stages on others: the step every fold of `ens fit` repeats."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from ensemble.data.metrics import get_metric
from ensemble.fitting.grid import confusion_of, fit_gains, fit_min_area, image_confusions_of
from ensemble.fitting.kernels import fused_labels_of
from ensemble.fitting.settings import FitSettings, Fitted, Stages
from ensemble.fitting.weights import PixelSet, fit_weights, gain_scorer, nll_weights, parts_pixel_set
from ensemble.inference.cleanup import remove_small_regions
from ensemble.inference.fusion import normalise_weights, scaled_weights


def fused_labels(probs: list[np.ndarray], weights: np.ndarray, gains: np.ndarray, index) -> np.ndarray:
    """Decoded labels of images `index`, fused as `ens predict` fuses them (weights times gains,
    member by member in float32, argmax over classes 1..C-1)."""
    n_members, n_classes = len(probs), probs[0].shape[1]
    matrix = scaled_weights(normalise_weights(weights, n_members, n_classes), gains)
    members = tuple(np.ascontiguousarray(member, np.float32) for member in probs)
    return fused_labels_of(members, matrix, np.asarray(index, np.int64), 1)


Part = tuple[list[np.ndarray], np.ndarray]
"""Labelled images of one size: each member's (n, C, H, W) probabilities and the (n, H, W) truth."""


def select_parts(
    parts: list[Part], index: np.ndarray
) -> list[tuple[list[np.ndarray], np.ndarray, np.ndarray]]:
    """(probs, truth, local index) of the parts holding images `index` (numbered across the parts)."""
    chosen, start = [], 0
    for probs, truth in parts:
        local = index[(index >= start) & (index < start + len(truth))] - start
        if len(local):
            chosen.append((probs, truth, local))
        start += len(truth)
    return chosen


class Pool:
    """The validation images of one fit, read once: member probabilities per size, the labelled
    pixels every weight and gain search samples from (each fold takes its images' share), each
    image's confusion matrix under equal weights, and the results of the stages fitted so far."""

    def __init__(self, parts: list[Part], settings: FitSettings) -> None:
        parts = [([np.ascontiguousarray(m, np.float32) for m in probs], truth) for probs, truth in parts]
        self.parts, self.settings = parts, settings
        self.n_images = sum(len(truth) for _, truth in parts)
        self.n_members, self.n_classes = len(parts[0][0]), parts[0][0][0].shape[1]
        self.pixels = parts_pixel_set(parts, seed=settings.seed)
        self.equal = normalise_weights(np.ones(self.n_members), self.n_members, self.n_classes)
        ones, plain = np.ones(self.n_classes), []
        for probs, truth in parts:
            labels = fused_labels(probs, self.equal, ones, np.arange(len(truth)))
            plain.append(image_confusions_of(truth, labels, self.n_classes))
        self.plain = np.concatenate(plain)  # (N, C, C): each image's confusion under equal weights
        self._lock, self._results = threading.Lock(), {}

    def pixels_of(self, index: np.ndarray) -> PixelSet:
        return self.pixels if len(index) == self.n_images else self.pixels.of_images(index)

    def once(self, key: tuple, compute: Callable[[], Any]) -> Any:
        """`compute()`, made once per `key` and kept: a stage fitted on the same images with the same
        choices is the same (a fold of the selection CV and the nested estimate's fit on the other
        folds share their images), also when threads ask for it at the same time."""
        with self._lock:
            entry = self._results.setdefault(key, [threading.Lock(), None, False])
        with entry[0]:
            if not entry[2]:
                entry[1], entry[2] = compute(), True
        return entry[1]


def fit_once(pool: Pool, index, per: str, use=(True, True, True)) -> Fitted:
    """Weights, then gains on top, then min_area on the resulting labels, each only if `use` says so."""
    settings, n_classes = pool.settings, pool.n_classes
    index = np.asarray(index, np.int64)
    images, weighting = index.tobytes(), per if use[0] else "equal"
    pixels: list[PixelSet] = []

    def pixels_once() -> PixelSet:
        pixels[:] = pixels or [pool.pixels_of(index)]
        return pixels[0]

    def learn() -> np.ndarray:
        nll = pool.once(("nll", images), lambda: nll_weights(pixels_once()))
        return fit_weights(pixels_once(), per == "class", settings.metric, nll=nll).weights

    weights = pool.once(("weights", images, per), learn) if use[0] else pool.equal
    gains = np.ones(n_classes)
    if use[1]:
        gains = pool.once(
            ("gains", images, weighting),
            lambda: fit_gains(gain_scorer(pixels_once(), weights, settings.metric), n_classes)[0],
        )
    areas = np.zeros(n_classes, np.int64)
    if use[2]:
        areas = pool.once(
            ("areas", images, weighting, use[1]), lambda: _min_area(pool, index, weights, gains)
        )
    return Fitted(weights, gains, areas)


def _min_area(pool: Pool, index: np.ndarray, weights: np.ndarray, gains: np.ndarray) -> np.ndarray:
    """Cleanup min_area fitted on the labels of images `index` under `weights` and `gains`."""
    chosen = select_parts(pool.parts, index)
    labels = [fused_labels(probs, weights, gains, i) for probs, _, i in chosen]
    truths = [truth[i] for _, truth, i in chosen]
    settings = pool.settings
    return fit_min_area(labels, truths, pool.n_classes, settings.metric, settings.connectivity).min_area


def stage_confusions(pool: Pool, index, fitted: Fitted) -> list[np.ndarray]:
    """Confusion matrices of the four stages on images `index` (equal weights: summed from `Pool`'s
    per-image matrices; learned weights without gains: those with them when the gains are all 1)."""
    n_classes, ones = pool.n_classes, np.ones(pool.n_classes)
    index = np.asarray(index, np.int64)
    totals = [pool.plain[index].sum(axis=0), *(np.zeros((n_classes, n_classes), np.int64) for _ in range(3))]
    plain_gains = np.array_equal(fitted.gains, ones)
    for probs, truth, local in select_parts(pool.parts, index):
        true = truth[local]
        gained = fused_labels(probs, fitted.weights, fitted.gains, local)
        gained_counts = confusion_of(true, gained, n_classes)
        learned_counts = gained_counts
        if not plain_gains:
            learned_counts = confusion_of(true, fused_labels(probs, fitted.weights, ones, local), n_classes)
        cleaned_counts = gained_counts
        if fitted.min_area.any():
            cleaned = remove_small_regions(gained, fitted.min_area, n_classes, pool.settings.connectivity)
            cleaned_counts = confusion_of(true, cleaned, n_classes)
        for total, counts in zip(totals[1:], (learned_counts, gained_counts, cleaned_counts), strict=True):
            total += counts
    return totals


def reduced_stages(pool: Pool, matrices: list[np.ndarray]) -> Stages:
    """The scores of the four stages from their confusion matrices, by the fit's metric."""
    reduce = get_metric(pool.settings.metric).reduce
    return Stages(*(reduce(m) for m in matrices))
