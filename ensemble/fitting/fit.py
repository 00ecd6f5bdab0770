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

import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numba
import numpy as np

from ensemble.fitting.settings import FitResult, FitSettings, Stages, check_labelled, check_settings
from ensemble.fitting.stages import Part, Pool, fit_once, reduced_stages, stage_confusions

DEFAULT_SETTINGS = FitSettings()
PARALLEL_PIXELS = 50_000
"""Fewer sampled labelled pixels than this are fitted on one thread (threads would cost more)."""

Progress = Callable[[str, int, int], None]
"""on_step(what, done, total): the fit is about to do `what`, `done` of its `total` fits begun;
called one at a time, from the thread that begins the fit."""


class _Steps:
    """Runs the fits on `workers` threads (or in the caller's), in the order they are submitted,
    and tells `on_step` about each as it begins."""

    def __init__(self, on_step: Progress | None, total: int, workers: int) -> None:
        self.on_step, self.total, self.done = on_step, total, 0
        self.lock = threading.Lock()
        self.executor = None
        if workers > 1:  # each worker's parallel kernels on one thread: the workers use the CPUs
            self.executor = ThreadPoolExecutor(workers, initializer=numba.set_num_threads, initargs=(1,))

    def __call__(self, what: str) -> None:
        with self.lock:
            if self.on_step:
                self.on_step(what, self.done, self.total)
            self.done += 1

    def submit(self, what: str, work: Callable, *args) -> Future:
        """`work(*args)` after telling `on_step` of `what`: on a worker thread, or at once here."""

        def task():
            self(what)
            return work(*args)

        if self.executor is not None:
            return self.executor.submit(task)
        future: Future = Future()
        future.set_result(task())
        return future

    def close(self) -> None:
        if self.executor is not None:
            self.executor.shutdown(cancel_futures=True)


def fit_ensemble(
    probs: list[np.ndarray],
    truth: np.ndarray,
    settings: FitSettings = DEFAULT_SETTINGS,
    on_step: Progress | None = None,
) -> FitResult:
    """Fit on `probs` (one TTA-merged (N, C, H, W) array per member) against uint8 (N, H, W) truth.

    `on_step(what, done, total)` is called before each fit (folds per candidate weighting, the
    outer folds of the nested estimate, then the final one)."""
    return fit_parts([(probs, truth)], settings, on_step)


def fit_parts(
    parts: list[Part],
    settings: FitSettings = DEFAULT_SETTINGS,
    on_step: Progress | None = None,
    workers: int | None = None,
) -> FitResult:
    """`fit_ensemble` on images of several sizes, one (member probabilities, truth) part per size;
    images are numbered across the parts for the folds. The fits run on `workers` threads (by
    default one per CPU for a large pool); the result does not depend on how many."""
    n_images = sum(len(truth) for _, truth in parts)
    folds = check_settings(settings, n_images)
    check_labelled([truth for _, truth in parts])
    pool = Pool(parts, settings)
    everything = np.arange(n_images)
    outer = _fold_of(everything, folds, settings.seed)
    held_out = [np.flatnonzero(outer == k) for k in range(folds)] if folds >= 2 else []
    trains = [np.setdiff1d(everything, held) for held in held_out]
    total = sum(_fits_needed(len(t), settings) for t in [everything, *trains])
    steps = _Steps(on_step, total, _workers(pool, workers))
    try:
        choice = _choose(pool, everything, steps, "")
        final = steps.submit("final fit on all images", fit_once, pool, everything, choice.per, choice.use)
        estimates = []
        for k, (train, held) in enumerate(zip(trains, held_out, strict=True)):
            where = f"outer fold {k + 1}/{folds}: "
            inner = _choose(pool, train, steps, where)
            what = f"{where}fit on the other folds"
            estimates.append(steps.submit(what, _held_out, pool, train, held, inner.per, inner.use))
        fitted = final.result()
        in_sample = reduced_stages(pool, stage_confusions(pool, everything, fitted))
        cv = reduced_stages(pool, _summed([e.result() for e in estimates])) if estimates else None
    finally:
        steps.close()
    scores = {per: stages.cleaned for per, stages in choice.by.items()}
    return FitResult(
        fitted, in_sample, cv, choice.use, choice.notes, choice.per, scores, choice.folds,
        choice.by.get(choice.per),
    )  # fmt: skip


def _workers(pool: Pool, asked: int | None) -> int:
    """Threads for the fits: as asked, else one per CPU this process may use, or one for a small
    pool; one where Numba's threading layer is `workqueue`, which aborts on concurrent calls."""
    try:
        layer = numba.threading_layer()
    except ValueError:  # no parallel kernel has run yet; the pool's has, so this is not expected
        layer = "workqueue"
    if layer == "workqueue":
        return 1
    if asked is not None:
        return max(1, int(asked))
    if len(pool.pixels.truth) < PARALLEL_PIXELS:
        return 1
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _held_out(pool: Pool, train: np.ndarray, held: np.ndarray, per: str, use=(True, True, True)):
    """Confusion matrices of the stages on images `held` of a fit on images `train`."""
    return stage_confusions(pool, held, fit_once(pool, train, per, use))


def _summed(confusions: list[list[np.ndarray]]) -> list[np.ndarray]:
    """Stage by stage sums of the confusion matrices of several sets of images."""
    return [np.sum(stage, axis=0) for stage in zip(*confusions, strict=True)]


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


def _choose(pool: Pool, index: np.ndarray, steps: _Steps, where: str) -> _Choice:
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
    submitted = {
        per: [
            steps.submit(f"{where}fold {fold + 1}/{folds}, weights per {per}", _held_out, pool,
                         index[fold_of != fold], index[fold_of == fold], per)
            for fold in range(folds)
        ]
        for per in candidates
    }  # fmt: skip
    by = {per: reduced_stages(pool, _summed([f.result() for f in submitted[per]])) for per in candidates}
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
