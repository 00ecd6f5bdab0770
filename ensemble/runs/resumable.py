"""A resumable run: open (or find) the run directory of the resolved settings, compute the shards
that are not complete yet with an engine, and report what was reused."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ensemble.data.sources import Source
from ensemble.errors import EnsError
from ensemble.inference.loop import PredictResult, run
from ensemble.inference.scorer import Scorer
from ensemble.runs.plan import DEFAULT_SHARD_SIZE, ShardPlan, ordered_ids, ordered_pixels
from ensemble.runs.rundir import (
    RunLock,
    clear_run_dir,
    has_shards,
    lock_run_dir,
    open_run_dir,
    remove_run_dir,
    run_dir,
)
from ensemble.runs.runkey import key_fields, run_key
from ensemble.runs.shards import RunShards, ShardWriter, complete_shards
from ensemble.runs.view import ShardView
from ensemble.submission.convention import RleConvention
from ensemble.submission.io import SubmissionWriter

ENGINES = ("local", "ray")


@dataclass(frozen=True)
class RunOptions:
    """How a prediction is sharded, resumed and computed. `resume` insists on finding shards of an
    earlier run (a rerun resumes anyway); `fresh` discards them; `keep` keeps the run directory
    after the CSV is assembled. `root` overrides `<cache>/runs`; `ray_logs` lets Ray's own log lines
    and progress through (the CLI sets it with `--debug`)."""

    shard_size: int = DEFAULT_SHARD_SIZE
    resume: bool = False
    fresh: bool = False
    keep: bool = False
    root: Path | None = None
    engine: str = "local"
    workers: int = 1  # Ray actors (the local engine's workers are PredictOptions.workers)
    gpus_per_worker: float | None = None
    ray_address: str | None = None
    ray_logs: bool = False

    def __post_init__(self) -> None:
        if self.resume and self.fresh:
            raise EnsError("--resume and --fresh contradict each other; give one of them")
        if self.engine not in ENGINES:
            raise EnsError(f"unknown engine {self.engine!r}; choose one of {', '.join(ENGINES)}")
        if self.workers < 1:
            raise EnsError(f"--workers {self.workers} must be >= 1")
        ray_only = {
            "--gpus-per-worker": self.gpus_per_worker is not None,
            "--ray-address": self.ray_address is not None,
        }
        given = [name for name, set_ in ray_only.items() if set_]
        if self.engine != "ray" and given:
            raise EnsError(f"{', '.join(given)} only apply to --engine ray; add --engine ray or drop them")


@dataclass
class ShardedRun:
    """A run's directory (locked while it is open), plan and progress: which shards were found
    complete, which are left. Used as a context manager: leaving it releases the lock, and after a
    failure removes the directory when no shard was kept."""

    directory: Path
    plan: ShardPlan
    ids: np.ndarray
    labelled: bool
    key: str
    done: list[int]
    todo: list[int]
    expected: RunShards
    lock: RunLock
    written: list[int] = field(default_factory=list)

    def __enter__(self) -> ShardedRun:
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        self.close(failed=exc_type is not None)

    def close(self, failed: bool) -> None:
        try:
            if failed and not has_shards(self.directory):
                remove_run_dir(self.directory)
        finally:
            self.lock.release()

    @property
    def n_complete(self) -> int:
        return len(self.done) + len(self.written)

    def describe(self) -> dict:
        """The manifest's `run` entry."""
        return {
            "key": self.key,
            "shards": self.plan.n_shards,
            "shard_size": self.plan.size,
            "reused_shards": len(self.done),
        }


def open_run(
    ensemble: Scorer,
    source: Source,
    fmt: str,
    rle: RleConvention,
    ensemble_file: Path | None,
    options: RunOptions,
    on_note: Callable[[str], None] | None = None,
    probs: bool = False,
) -> ShardedRun:
    """Find and lock the run directory of these settings and check the shards already in it; the
    caller closes the returned run (`with`) to release the lock. With `probs` the shards also keep
    the images' fused probabilities (`--save-probs`, a run of one image size)."""
    note = on_note or (lambda line: None)
    plan = ShardPlan(source.n_images, options.shard_size)
    ids = ordered_ids(source)
    fields = key_fields(ensemble, source, ids, plan, fmt, rle, ensemble_file, probs=probs)
    key = run_key(fields)
    directory = run_dir(key, options.root)
    labelled = source.split == "val"
    expected = RunShards(
        plan,
        ids,
        ensemble.description.n_classes if labelled else None,
        ordered_pixels(source) if labelled else None,
        (ensemble.description.n_classes, *source.image_shape) if probs else None,
    )
    state = ShardedRun(directory, plan, ids, labelled, key, [], [], expected, lock_run_dir(directory))
    try:
        if options.fresh:
            clear_run_dir(directory)
        problems = open_run_dir(directory, fields)
        done, damaged = complete_shards(directory, expected)
        for problem in problems + damaged:
            note(f"warning: {problem}")
        if options.resume and not done:
            raise EnsError(
                f"--resume found no complete shard in {str(directory)!r}: no earlier run had these "
                "settings (members, ensemble file, data, split, TTA, weights, cleanup, format, "
                "--shard-size), or it finished; drop --resume to start"
            )
    except BaseException:
        state.close(failed=True)
        raise
    state.done = done
    state.todo = [k for k in range(plan.n_shards) if k not in set(done)]
    if done:
        note(f"resuming: {len(done)} of {plan.n_shards} shards done ({str(directory)})")
    return state


def encoder(source: Source, fmt: str, n_classes: int, rle: RleConvention) -> SubmissionWriter:
    """The row encoder of the run's format (a SubmissionWriter used outside its `with` block)."""
    return SubmissionWriter(Path("unused.csv"), fmt, source.image_shape, n_classes, rle=rle)


def compute_local(
    state: ShardedRun,
    ensemble: Scorer,
    source: Source,
    fmt: str,
    rle: RleConvention,
    on_batch: Callable[[int], None] | None = None,
) -> PredictResult:
    """Predict the shards left in this process, committing each as it completes."""
    n_classes = ensemble.description.n_classes
    truth = source.truth_lookup(n_classes) if state.labelled else None
    writer = ShardWriter(
        state.directory,
        state.plan,
        state.todo,
        state.ids,
        encoder(source, fmt, n_classes, rle),
        truth,
        on_shard=state.written.append,
    )
    view = ShardView(source, state.plan, tuple(state.todo))
    probs = state.expected.probs is not None
    return run(ensemble, view, state.directory, fmt, on_batch=on_batch, rle=rle, writer=writer, probs=probs)
