"""A member's runtime chosen ahead of `ens predict`: at export, and by `ens members --bench` for members
that came from elsewhere.

`--runtime auto` times a member's runtimes only on runs of `MIN_IMAGES` images or more, unless its
choice is cached. Timing it here, under the options `ens predict` runs with by default, on this
machine's cores and on the images of the data file, fills that cache (same key), so the first
`ens predict` of any size runs each member on its fastest runtime.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ensemble.data.datasets import Dataset
from ensemble.data.sources import Source, make_source
from ensemble.data.split import SplitSpec
from ensemble.errors import EnsError
from ensemble.inference.options import PredictOptions
from ensemble.inference.pipeline import PipelineScorer, open_pipeline
from ensemble.members.member import Member
from ensemble.runtimes.kinds import Runtime, RuntimeChoice


def timing_source(dataset: Dataset, spec: SplitSpec | None = None) -> Source:
    """The images `ens predict` runs on by default (the test set), else the validation split."""
    spec = spec or SplitSpec()
    try:
        return make_source(dataset, "test", spec)
    except EnsError:
        return make_source(dataset, "val", spec)


def bench_member(
    member: Member,
    dataset: Dataset,
    spec: SplitSpec | None = None,
    *,
    options: PredictOptions | None = None,
    cache: Path | None = None,
    on_timing: Callable[[str], None] | None = None,
) -> RuntimeChoice:
    """Choose `member`'s runtime as `ens predict --runtime auto` would with `options` (its defaults),
    timing it now unless the choice is cached; the measurement is cached for later runs."""
    return bench_ensemble(member, dataset, spec, options=options, cache=cache, on_timing=on_timing).choices[0]


def bench_ensemble(
    member: Member,
    dataset: Dataset,
    spec: SplitSpec | None = None,
    *,
    options: PredictOptions | None = None,
    cache: Path | None = None,
    on_timing: Callable[[str], None] | None = None,
) -> PipelineScorer:
    """`member` alone, ready to predict, on the runtime `bench_member` chooses."""
    source = timing_source(dataset, spec)
    options = options or PredictOptions()
    return open_pipeline(
        [member], options, source, runtime=Runtime.auto, cache=cache, min_images=0, on_timing=on_timing
    )


def describe_choice(choice: RuntimeChoice) -> str:
    """One line: the runtime chosen, and the median round times behind it."""
    what = {"onnxruntime": "ONNX Runtime", "openvino": "OpenVINO"}.get(choice.runtime, choice.runtime)
    if choice.folded:
        what += f" on the folded graph ({choice.folded} affine operations folded)"
    line = f"runtime for `ens predict`: {what} ({choice.how}"
    if choice.seconds:
        line += "; " + ", ".join(f"{name} {seconds * 1e3:.1f} ms" for name, seconds in choice.seconds.items())
        line += " per round"
    line += ")"
    extra = [text for text in (choice.note, choice.warning) if text]
    return line + (f"; {'; '.join(extra)}" if extra else "")
