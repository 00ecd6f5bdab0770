"""`ens quantize` / `ens export --quantize int8`: write an int8 copy of a member and keep it only when it
earns its place: val mIoU within `MIOU_TOLERANCE` of the float32 member's, and at least `MIN_SPEEDUP`
times as fast in the pipeline on this machine (each on its fastest runtime, alternated timing).

A kept copy is an ordinary member (`<name>_int8` in the same store), so `ens fit` chooses between the
two like between any members; its runtime choice is cached like an exported member's.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import numpy as np

from ensemble.data.datafile import DataFile
from ensemble.data.datasets import Dataset
from ensemble.data.metrics import ConfusionAccumulator, course_miou
from ensemble.data.sources import Source, make_source, validation_split
from ensemble.data.split import SplitSpec
from ensemble.data.tta import IDENTITY
from ensemble.errors import EnsError
from ensemble.files.atomic import write_bytes
from ensemble.inference.batchpool import ordered_batches
from ensemble.inference.fusion import decode
from ensemble.inference.memberbench import bench_ensemble, timing_source
from ensemble.inference.pipeline import PipelineScorer
from ensemble.inference.runner import member_probs
from ensemble.members.channels import to_pixels
from ensemble.members.member import Member, load_member
from ensemble.runtimes.carried import carry_choice
from ensemble.runtimes.int8 import (
    CALIBRATION_IMAGES,
    INT8_SUFFIX,
    quantization_note,
    quantize_member,
    with_val_miou,
)
from ensemble.runtimes.runner import Runner

MIOU_TOLERANCE = 0.002
MIN_SPEEDUP = 1.3
TIMED_IMAGES = 512  # images per timed pass of each member
TIMED_PASSES = 3  # alternated passes per member; the median counts


@dataclass(frozen=True)
class Int8Outcome:
    """What quantizing one member found: both val mIoUs, pipeline seconds, the largest probability
    difference on the validation images, which gates failed, and where the copy is (None: not kept)."""

    fp32_miou: float
    int8_miou: float
    fp32_seconds: float
    int8_seconds: float
    max_prob_error: float
    failures: tuple[str, ...]
    path: Path | None

    @property
    def speedup(self) -> float:
        return self.fp32_seconds / self.int8_seconds


def int8_failures(
    fp32_miou: float,
    int8_miou: float,
    speedup: float,
    tolerance: float = MIOU_TOLERANCE,
    min_speedup: float = MIN_SPEEDUP,
) -> tuple[str, ...]:
    """Why an int8 copy is not worth keeping (empty: keep it).

    >>> int8_failures(0.600, 0.599, 1.5)
    ()
    >>> int8_failures(0.600, 0.590, 1.1)[0][:40]
    'val mIoU 0.5900 is 0.0100 below the floa'
    """
    failures = []
    if not int8_miou >= fp32_miou - tolerance:
        failures.append(
            f"val mIoU {int8_miou:.4f} is {fp32_miou - int8_miou:.4f} below the float32 member's "
            f"{fp32_miou:.4f} (at most {tolerance:g} allowed)"
        )
    if not speedup >= min_speedup:
        failures.append(
            f"it runs {speedup:.2f}x as fast as the float32 member in the pipeline "
            f"(>= {min_speedup:g}x needed)"
        )
    return tuple(failures)


def int8_target(member: Member) -> Path:
    return member.path.with_name(f"{member.name}{INT8_SUFFIX}.onnx")


def quantize_and_judge(
    member: Member,
    dataset: Dataset,
    spec: SplitSpec | None = None,
    *,
    force: bool = False,
    on_note: Callable[[str], None] | None = None,
) -> Int8Outcome:
    """Quantize `member` (calibrated on training images of `dataset`), score and time both copies, and
    write `<name>_int8.onnx` beside it when the copy passes both gates (or with `force`)."""
    spec = spec or SplitSpec()
    target = int8_target(member)
    _check_target(member, target, force)
    val = make_source(dataset, "val", spec)
    with tempfile.TemporaryDirectory(prefix="ens_int8_") as tmp:
        candidate_path = Path(tmp) / target.name
        pixels, described = training_pixels(dataset, spec, member.channels)
        quantize_member(member, pixels, candidate_path, described)
        candidate = load_member(candidate_path, target.stem)
        ensembles = [bench_ensemble(m, dataset, spec, on_timing=on_note) for m in (member, candidate)]
        fp32_miou, int8_miou, error = compare_on_val([e.runners[0] for e in ensembles], val)
        fp32_seconds, int8_seconds = pipeline_seconds(ensembles, dataset, spec)
        failures = int8_failures(fp32_miou, int8_miou, fp32_seconds / int8_seconds)
        kept = not failures or force
        if kept:
            scored_on = f"measured by ens quantize on {val.n_images} validation images ({val.description})"
            write_bytes(target, with_val_miou(candidate_path, int8_miou, scored_on))
            carry_choice(candidate, load_member(target))
    return Int8Outcome(
        fp32_miou, int8_miou, fp32_seconds, int8_seconds, error, failures, target if kept else None
    )


def _check_target(member: Member, target: Path, force: bool) -> None:
    """An existing `<name>_int8.onnx` is replaced only when it is an int8 copy of this member's name, or
    with --force; quantizing an int8 copy again is refused."""
    if member.info.quantization is not None:
        raise EnsError(f"member {member.name!r} is already an int8 copy; quantize its float32 member")
    if target.exists() and not force:
        note = quantization_note(target)
        if note is None or f"member {member.name!r}" not in note:
            raise EnsError(
                f"{str(target)!r} already exists and is not an int8 copy of member {member.name!r}; "
                "rename it, or pass --force to replace it"
            )


def training_pixels(dataset: Dataset, spec: SplitSpec, channels: int) -> tuple[Iterator[np.ndarray], str]:
    """Float32 pixel batches of up to `CALIBRATION_IMAGES` training images (the split's train part),
    one image per batch, and what they are."""
    split = validation_split(dataset, spec)
    positions = split.train[:CALIBRATION_IMAGES]
    if len(positions) == 0:
        raise EnsError(
            "the data has no training images to calibrate the int8 copy on; pass --data with a training set"
        )
    described = f"{len(positions)} training images of {dataset.path.name} ({split.description})"
    if isinstance(dataset, DataFile):
        images = dataset.load_train()[0][positions]
        batches = (images[i : i + 1] for i in range(len(images)))
    else:
        batches = dataset.iter_images(positions, channels, 1)
    return (to_pixels(batch, channels) for batch in batches), described


def compare_on_val(runners: list[Runner], val: Source) -> tuple[float, float, float]:
    """Course mIoU of two members on the validation images (no TTA), each on the runtime the pipeline
    chose for it, and the largest absolute difference of their probabilities."""
    if not val.n_images:
        raise EnsError("the data has no validation images to score the int8 copy on")
    member = runners[0].member
    confusions = [ConfusionAccumulator(member.n_classes) for _ in runners]
    error = 0.0
    for group, truth in enumerate(val.truth_parts(member.n_classes)):
        start = 0
        for _, images in val.group_batches(group, 32, member.channels):
            pixels = to_pixels(images, member.channels)
            probs = [member_probs(runner, pixels, (IDENTITY,)) for runner in runners]
            error = max(error, float(np.abs(probs[0] - probs[1]).max()))
            for confusion, p in zip(confusions, probs, strict=True):
                confusion.update(truth[start : start + len(images)], decode(p))
            start += len(images)
    return course_miou(confusions[0].matrix), course_miou(confusions[1].matrix), error


def pipeline_seconds(
    ensembles: list[PipelineScorer], dataset: Dataset, spec: SplitSpec
) -> tuple[float, float]:
    """Median seconds of a pipeline pass of each of two ensembles (default `ens predict` options, one
    member each on its fastest runtime, chosen and cached as at export) over the same images, passes
    alternated."""
    source = timing_source(dataset, spec)
    batch = ensembles[0].worker_batch
    channels = ensembles[0].channels
    batches = list(islice(source.batches(batch, channels), max(1, TIMED_IMAGES // batch)))
    passes: list[list[float]] = [[], []]
    for round_index in range(TIMED_PASSES + 1):  # the first round warms up
        order = (0, 1) if round_index % 2 else (1, 0)
        for index in order:
            start = time.perf_counter()
            scorer = ensembles[index]
            for _ in ordered_batches(scorer.score, iter(batches), scorer.workers, scorer.timings):
                pass
            if round_index:
                passes[index].append(time.perf_counter() - start)
    return statistics.median(passes[0]), statistics.median(passes[1])
