"""One fit of the three stages (fusion weights, class gains, cleanup min_area) on some of the
validation images, and the scores of the stages on others: the step every fold of `ens fit` repeats."""

from __future__ import annotations

import numpy as np

from ensemble.data.metrics import confusion_matrix, get_metric
from ensemble.fitting.grid import fit_gains, fit_min_area
from ensemble.fitting.kernels import fused_labels_of
from ensemble.fitting.settings import FitSettings, Fitted, Stages
from ensemble.fitting.weights import PixelSet, fit_weights, gain_scorer, parts_pixel_set
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


def fit_once(pool: Pool, index, per: str, use=(True, True, True)) -> Fitted:
    """Weights, then gains on top, then min_area on the resulting labels, each only if `use` says so."""
    settings, n_classes = pool.settings, pool.n_classes
    pixels = pool.pixels_of(index)
    weights = fit_weights(pixels, per == "class", settings.metric).weights if use[0] else pool.equal
    gains = np.ones(n_classes)
    if use[1]:
        gains, _ = fit_gains(gain_scorer(pixels, weights, settings.metric), n_classes)
    areas = np.zeros(n_classes, np.int64)
    if use[2]:
        chosen = select_parts(pool.parts, index)
        labels = [fused_labels(probs, weights, gains, i) for probs, _, i in chosen]
        truths = [truth[i] for _, truth, i in chosen]
        areas = fit_min_area(labels, truths, n_classes, settings.metric, settings.connectivity).min_area
    return Fitted(weights, gains, areas)


def stage_confusions(pool: Pool, index, fitted: Fitted) -> list[np.ndarray]:
    """Confusion matrices of the four stages on images `index`."""
    n_classes, ones = pool.n_classes, np.ones(pool.n_classes)
    totals = [np.zeros((n_classes, n_classes), np.int64) for _ in range(4)]
    for probs, truth, local in select_parts(pool.parts, index):
        plain = fused_labels(probs, pool.equal, ones, local)
        learned = fused_labels(probs, fitted.weights, ones, local)
        gained = fused_labels(probs, fitted.weights, fitted.gains, local)
        cleaned = gained
        if fitted.min_area.any():
            cleaned = remove_small_regions(gained, fitted.min_area, n_classes, pool.settings.connectivity)
        for total, labels in zip(totals, (plain, learned, gained, cleaned), strict=True):
            total += confusion_matrix(truth[local], labels, n_classes)
    return totals


def reduced_stages(pool: Pool, matrices: list[np.ndarray]) -> Stages:
    """The scores of the four stages from their confusion matrices, by the fit's metric."""
    reduce = get_metric(pool.settings.metric).reduce
    return Stages(*(reduce(m) for m in matrices))
