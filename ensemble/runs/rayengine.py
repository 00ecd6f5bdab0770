"""`--engine ray`: the shards left, predicted by a pool of Ray Data actors, written by the driver.

The dataset holds one row per shard (its index), in blocks of one shard; `map_batches` runs
`ShardPredictor`, a callable class that builds the members' sessions once per actor, each member on
the runtime the driver chose for it, and returns each image's cleaned uint8 labels with its id,
computed by the local engine's worker pool. The driver encodes them and commits the same shard files
as the local engine, so runs resume across engines and assemble to the same CSV. Ray is imported
only here, on demand (the `ens[ray]` extra).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable

import numpy as np

from ensemble.capture import native_stderr
from ensemble.compiled.scorer import CompiledScorer, open_compiled
from ensemble.data.sources import Source
from ensemble.errors import EnsError, error_data, raised_error
from ensemble.extras import optional_import
from ensemble.inference.loop import PredictResult, label_batches
from ensemble.inference.pipeline import open_pipeline
from ensemble.inference.scorer import Scorer
from ensemble.runs.plan import ShardPlan
from ensemble.runs.raycluster import connect, make_room
from ensemble.runs.resumable import RunOptions, ShardedRun, encoder
from ensemble.runs.shards import ShardWriter
from ensemble.runs.view import shard_batches
from ensemble.submission.convention import RleConvention


def import_ray():
    """The `ray` module with Ray Data, or a one-line EnsError with the install hint."""
    optional_import("ray.data", needed_by="--engine ray", extra="ray", instead="use --engine local")
    return optional_import("ray", needed_by="--engine ray", extra="ray")


class ShardPredictor:
    """A Ray Data actor: the members' sessions, built once, and the image source it reads from.

    Called with a batch of shard indices, it returns one row per image of those shards: `shard`,
    `id`, `height`, `width`, `labels` (the uint8 label map's bytes, row-major) and `probs` (with
    `probs`, the float16 (C, H, W) probabilities' bytes; else empty), with empty `error` and
    `error_type`. A user's mistake (an EnsError: a damaged image, say) comes back as data instead,
    one row holding its message and type, so the driver never reads it out of Ray's exception text.
    """

    def __init__(
        self,
        members,
        options,
        source: Source,
        plan: ShardPlan,
        cwd: str,
        graph=None,
        choices=None,
        probs: bool = False,
    ) -> None:
        if os.path.isdir(cwd):
            os.chdir(cwd)  # the driver's relative paths (members, data) mean the same here
        self.ensemble: Scorer
        if graph is None:  # the driver's runtime per member (OpenVINO, folded graphs)
            self.ensemble = open_pipeline(members, options, carried=choices)
        else:  # the driver chose the compiled graph: the actor runs the same one
            self.ensemble = open_compiled(members, options, graph, want_scores=probs)
        self.source = source
        self.plan = plan
        self.probs = probs

    def __call__(self, batch: dict) -> dict:
        try:
            return self._rows(np.asarray(batch["shard"]).tolist())
        except EnsError as exc:
            error = error_data(exc)
            return {
                **{key: np.asarray([value]) for key, value in (("shard", -1), ("height", 0), ("width", 0))},
                "id": np.asarray([""]),
                "labels": np.asarray([b""], dtype=object),
                "probs": np.asarray([b""], dtype=object),
                "error": np.asarray([error["message"]], dtype=object),
                "error_type": np.asarray([error["type"]], dtype=object),
            }

    def _rows(self, shard_indices: list[int]) -> dict:
        shards, ids, heights, widths, labels, probs = [], [], [], [], [], []
        for shard in shard_indices:

            def sink(batch_ids: np.ndarray, cleaned: np.ndarray, fused, shard: int = shard) -> None:
                for index, (one_id, one) in enumerate(zip(batch_ids.tolist(), cleaned, strict=True)):
                    shards.append(shard)
                    ids.append(one_id)
                    heights.append(one.shape[0])
                    widths.append(one.shape[1])
                    labels.append(one.tobytes())
                    probs.append(b"" if fused is None else fused[index].astype(np.float16).tobytes())

            channels = self.ensemble.description.channels
            batches = shard_batches(self.source, self.plan, [shard], self.ensemble.worker_batch, channels)
            label_batches(self.ensemble, batches, sink, probs=self.probs)  # the local engine's loop
        return {
            "shard": np.asarray(shards, np.int64),
            "id": np.asarray(ids),
            "height": np.asarray(heights, np.int64),
            "width": np.asarray(widths, np.int64),
            "labels": np.asarray(labels, dtype=object),
            "probs": np.asarray(probs, dtype=object),
            "error": np.asarray([""] * len(ids), dtype=object),
            "error_type": np.asarray([""] * len(ids), dtype=object),
        }


def _quiet(ray, ray_logs: bool) -> None:
    """Ray's own progress lines and log records would interleave with the Rich bar: silence them
    (kept with `ray_logs`, `ens --debug`); a failure still reaches ens as an exception."""
    if ray_logs:
        return
    for name in ("ray", "ray.data"):
        logging.getLogger(name).setLevel(logging.CRITICAL)  # failures still reach ens as exceptions
    ray.data.DataContext.get_current().enable_progress_bars = False


def gpus_per_worker(ray, options: RunOptions) -> float:
    """--gpus-per-worker, else 1 when the cluster has GPUs, else 0."""
    if options.gpus_per_worker is not None:
        return float(options.gpus_per_worker)
    return 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0


def compute_ray(
    state: ShardedRun,
    ensemble: Scorer,
    source: Source,
    fmt: str,
    rle: RleConvention,
    options: RunOptions,
    on_batch: Callable[[int], None] | None = None,
) -> PredictResult:
    """Predict the shards left on Ray actors; the driver writes each shard once all its images are in."""
    ray = import_ray()
    start = time.perf_counter()
    connected = start
    if state.todo:
        _quiet(ray, options.ray_logs)
        with _native_logs_kept_off(options.ray_logs):
            connect(ray, options)
            connected = time.perf_counter()
            _predict_shards(
                ray, state, ensemble, source, options, _Collector(state, ensemble, source, fmt, rle, on_batch)
            )
    seconds = time.perf_counter() - start
    return PredictResult(
        n_images=state.plan.count(state.todo),
        seconds=seconds,
        timings={"ray_connect": round(connected - start, 3), "ray": round(seconds, 3)},
        confusion=None,
    )


def _predict_shards(
    ray, state: ShardedRun, ensemble: Scorer, source: Source, options: RunOptions, collector
) -> None:
    """Run the shards left on a pool of `options.workers` actors; the collector writes them."""
    gpus = gpus_per_worker(ray, options)
    make_room(ray, gpus, options.workers, options.ray_address)
    graph = ensemble.graph if isinstance(ensemble, CompiledScorer) else None
    dataset = ray.data.from_items([{"shard": k} for k in state.todo], override_num_blocks=len(state.todo))
    labelled = dataset.map_batches(
        ShardPredictor,
        fn_constructor_kwargs={
            "members": list(ensemble.description.members),
            "options": ensemble.description.options,
            "source": source,
            "plan": state.plan,
            "cwd": os.getcwd(),
            "graph": graph,
            "choices": None if graph is not None else ensemble.choices,
            "probs": state.expected.probs is not None,
        },
        batch_size=1,
        compute=ray.data.ActorPoolStrategy(size=options.workers),
        num_gpus=gpus,
    )  # Ray Data restarts a dead actor and retries its block (max_restarts=-1, max_task_retries=-1)
    for batch in labelled.iter_batches(batch_size=None, batch_format="numpy"):
        collector.add(batch)
    collector.finish()


def _native_logs_kept_off(ray_logs: bool):
    """Ray's C++ core logs to the driver's stderr (an `E ... core_worker.cc` line on every run): keep
    it off the terminal, except with `ray_logs` (`ens --debug`)."""
    return contextlib.nullcontext() if ray_logs else native_stderr()


class _Collector:
    """Gathers the actors' rows by shard (blocks arrive in any order) and commits each complete shard;
    an image arriving twice, or for a shard already written, is an error rather than a duplicate row."""

    def __init__(self, state: ShardedRun, ensemble: Scorer, source: Source, fmt, rle, on_batch) -> None:
        self.state = state
        self.n_classes = ensemble.description.n_classes
        self.source, self.fmt, self.rle = source, fmt, rle
        self.truth = source.truth_lookup(self.n_classes) if state.labelled else None
        self.on_batch = on_batch
        self.pending: dict[int, dict] = {k: {} for k in state.todo}
        self.probs: dict[
            object, np.ndarray
        ] = {}  # with --save-probs: each image's, until its shard is written

    def add(self, batch: dict) -> None:
        for message, kind in zip(batch["error"].tolist(), batch["error_type"].tolist(), strict=True):
            if message or kind:
                raise EnsError(raised_error({"type": kind, "message": message}, "a Ray worker"))
        kept = self.state.expected.probs
        for shard, one_id, height, width, labels, probs in zip(
            batch["shard"].tolist(),
            batch["id"].tolist(),
            batch["height"].tolist(),
            batch["width"].tolist(),
            batch["labels"],
            batch["probs"],
            strict=True,
        ):
            images = self.pending.get(shard)
            if images is None or one_id in images:
                raise EnsError(f"image {one_id!r} of shard {shard} arrived twice from the Ray workers")
            images[one_id] = np.frombuffer(labels, np.uint8).reshape(height, width)
            if kept is not None:
                self.probs[one_id] = np.frombuffer(probs, np.float16).reshape(kept)
            begin, end = self.state.plan.bounds(shard)
            if len(images) == end - begin:
                self.commit(shard)

    def commit(self, shard: int) -> None:
        images = self.pending.pop(shard)
        begin, end = self.state.plan.bounds(shard)
        expected = self.state.ids[begin:end]
        writer = ShardWriter(
            self.state.directory,
            self.state.plan,
            [shard],
            self.state.ids,
            encoder(self.source, self.fmt, self.n_classes, self.rle),
            self.truth,
            on_shard=self.state.written.append,
        )
        with writer:
            for run_ids, run_labels in _same_size_runs(expected, images):
                kept = None
                if self.state.expected.probs is not None:
                    kept = np.stack([self.probs.pop(i) for i in run_ids.tolist()])
                writer.write(run_ids, run_labels, kept)
        if self.on_batch:
            self.on_batch(end - begin)

    def finish(self) -> None:
        if self.pending:
            raise EnsError(f"the Ray workers returned no images for shards {sorted(self.pending)[:5]}")


def _same_size_runs(ids: np.ndarray, images: dict):
    """(ids, stacked labels) of consecutive images of one size, in the shard's order."""
    run: list = []
    for one_id in ids.tolist():
        labels = images.get(one_id)
        if labels is None:
            raise EnsError(f"image {one_id!r} is missing from the Ray workers' results")
        if run and run[-1][1].shape != labels.shape:
            yield _stack(run)
            run = []
        run.append((one_id, labels))
    if run:
        yield _stack(run)


def _stack(run: list):
    return np.asarray([i for i, _ in run], dtype=None), np.stack([labels for _, labels in run])
