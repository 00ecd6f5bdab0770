"""`ens fit` as a library call: cached validation probabilities -> fit -> ensemble file."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ensemble.data.datasets import Dataset
from ensemble.data.sources import make_source
from ensemble.data.split import SplitSpec
from ensemble.data.tta import get_views
from ensemble.files.cachedir import CACHE_LABEL
from ensemble.files.outputs import refuse_cache_folder, refuse_overwrite, run_inputs
from ensemble.fitting.cache import ProbCache, merged_parts
from ensemble.fitting.fit import fit_parts
from ensemble.fitting.settings import FitResult, FitSettings, check_labelled, check_settings
from ensemble.members.channels import check_channels
from ensemble.members.ensemblefile import EnsembleSpec, default_path, write_spec
from ensemble.members.member import DEFAULT_STORE, Member
from ensemble.members.padding import check_fits
from ensemble.members.store import resolve_members


@dataclass(frozen=True)
class FitRequest:
    data: Dataset
    members: str | None = None
    store: Path = DEFAULT_STORE
    split_spec: SplitSpec = SplitSpec()
    tta: str = "flip"
    settings: FitSettings = FitSettings()
    out: Path | None = None
    cache_dir: Path | None = None
    device: str = "auto"
    threads: int | None = None
    batch_size: int = 64
    gray_to_rgb: bool = False


@dataclass(frozen=True)
class FitOutcome:
    spec: EnsembleSpec
    path: Path
    result: FitResult
    members: list[Member]
    n_images: int
    split: str
    store: Path


def fit(
    request: FitRequest,
    on_total: Callable[[int, str], None] | None = None,
    on_batch: Callable[[int], None] | None = None,
    on_step: Callable[[str], None] | None = None,
    on_warning: Callable[[str], None] | None = None,
) -> FitOutcome:
    """Fit weights and cleanup on the validation split and write the ensemble file atomically.

    `on_warning` hears of damaged probability cache entries (recomputed)."""
    members = resolve_members(request.members, request.store)
    out = request.out or default_path(request.store)
    inputs = run_inputs(request.data, members, None, request.split_spec)
    refuse_overwrite({"--out": out}, inputs)
    source = make_source(request.data, "val", request.split_spec)
    cache = ProbCache(
        source, request.cache_dir, request.device, request.threads, request.batch_size, on_warning
    )
    refuse_cache_folder(CACHE_LABEL, cache.directory, inputs)
    settings, tta = request.settings, request.tta
    spec, result = fit_source(
        members, source, cache, tta, settings, request.gray_to_rgb, on_total, on_batch, on_step
    )
    path = write_spec(out, spec)
    return FitOutcome(spec, path, result, members, source.n_images, source.description, request.store)


def fit_source(
    members: list[Member],
    source,
    cache: ProbCache,
    tta: str,
    settings: FitSettings,
    gray_to_rgb: bool = False,
    on_total: Callable[[int, str], None] | None = None,
    on_batch: Callable[[int], None] | None = None,
    on_step: Callable[[str], None] | None = None,
) -> tuple[EnsembleSpec, FitResult]:
    """The fit of `members` on the labelled images of `source` (an npz's or a folder's validation
    split, or arrays), their probabilities read through `cache`: the ensemble spec and the result."""
    check_source(members, source, gray_to_rgb)
    check_settings(settings, source.n_images)
    truth = source.truth_parts(members[0].n_classes)
    check_labelled(truth)
    views = get_views(tta)
    if on_total:
        on_total(len(members) * len(views) * source.n_images, "member probabilities")
    probs = [merged_parts(cache, member, views, on_batch=on_batch) for member in members]
    parts = [([member[g] for member in probs], truth[g]) for g in range(len(truth))]
    result = fit_parts(parts, settings, on_step)
    evidence = {"data_sha256": source.data.sha256, "split": source.description, "n_images": source.n_images}
    return build_spec(members, tta, settings, result, evidence), result


def check_source(members: list[Member], source, gray_to_rgb: bool) -> None:
    """Refuse images the members cannot take (channels, sizes) before computing anything."""
    check_channels(members[0].channels, source.channels, gray_to_rgb)
    for member in members:
        for group in source.groups:
            check_fits(member, group.shape)


def build_spec(
    members: list[Member], tta: str, settings: FitSettings, result: FitResult, evidence: dict
) -> EnsembleSpec:
    """The ensemble file's content for a fit: what to run (members the fit gave weight 0 everywhere
    left out and named in `dropped`), and the fit's evidence after `evidence`."""
    spec = EnsembleSpec(
        members=tuple(m.name for m in members),
        member_sha256=tuple(m.sha256 for m in members),
        weights=tuple(tuple(round(float(v), 6) for v in row) for row in result.weights),
        tta=tta,
        min_area=tuple(int(v) for v in result.min_area),
        class_gain=tuple(round(float(v), 4) for v in result.gains),
        connectivity=settings.connectivity,
        metric=settings.metric,
        fit={
            **evidence,
            "weights_per": {
                "asked": settings.weights_per,
                "chosen": result.weights_per,
                "cv": result.cv_by_weights_per,
            },
            "folds": result.folds,
            "in_sample": result.in_sample.to_dict(),
            "cv": None if result.cv is None else result.cv.to_dict(),
            "selection_cv": None if result.selection is None else result.selection.to_dict(),
            "stages_used": dict(zip(("weights", "class_gain", "cleanup"), result.use, strict=True)),
            "notes": result.notes,
        },
    )
    return spec.without_idle()
