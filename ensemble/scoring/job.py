"""`ens score --val` / `--truth` as a library call: members -> cached probabilities -> ablation."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ensemble.data.datasets import Dataset
from ensemble.data.sources import make_source
from ensemble.data.split import SplitSpec
from ensemble.data.tta import get_views
from ensemble.files.cachedir import CACHE_LABEL
from ensemble.files.outputs import Named, refuse_cache_folder, refuse_overwrite, run_inputs
from ensemble.fitting.cache import ProbCache
from ensemble.fitting.job import check_source
from ensemble.inference.cleanup import parse_min_area
from ensemble.members.ensemblefile import resolve_ensemble
from ensemble.members.member import DEFAULT_STORE
from ensemble.scoring.ablation import Ablation, build_rows, run_ablation


@dataclass(frozen=True)
class ScoreRequest:
    data: Dataset
    split: str = "val"
    members: str | None = None
    ensemble: Path | None = None
    store: Path = DEFAULT_STORE
    split_spec: SplitSpec = SplitSpec()
    tta: str | None = None
    min_area: str | None = None
    metric: str = "course"
    cache_dir: Path | None = None
    device: str = "auto"
    batch_size: int = 64
    gray_to_rgb: bool = False
    outputs: Named = field(default_factory=dict)  # files the caller writes afterwards (--json, --plots)


@dataclass(frozen=True)
class ScoreOutcome:
    ablation: Ablation
    ensemble_file: Path | None
    description: str
    fit: dict | None = None  # the ensemble file's fit evidence (in-sample and nested CV stage scores)


def score_stages(
    request: ScoreRequest,
    on_total: Callable[[int, str], None] | None = None,
    on_batch: Callable[[int], None] | None = None,
    on_warning: Callable[[str], None] | None = None,
) -> ScoreOutcome:
    """Score each member, equal and learned fusion, + TTA and + cleanup on the labelled images.

    `on_warning` hears of damaged probability cache entries (recomputed)."""
    members, spec, spec_path = resolve_ensemble(request.members, request.ensemble, request.store)
    inputs = run_inputs(request.data, members, spec_path, request.split_spec)
    refuse_overwrite(request.outputs, inputs)
    n_classes = members[0].n_classes
    source = make_source(request.data, request.split, request.split_spec)
    check_source(members, source, request.gray_to_rgb)
    truth = source.truth_parts(n_classes)
    tta = request.tta or (spec.tta if spec is not None else "flip")
    min_area = parse_min_area(request.min_area, n_classes) if request.min_area is not None else None
    rows = build_rows(len(members), n_classes, spec, tta, [m.name for m in members], min_area)
    cache = ProbCache(source, request.cache_dir, request.device, None, request.batch_size, on_warning)
    refuse_cache_folder(CACHE_LABEL, cache.directory, inputs)
    views = {view for name in {row.tta for row in rows} for view in get_views(name)}
    if on_total:
        on_total(len(members) * len(views) * source.n_images, "member probabilities")
    for member in members:
        for view in sorted(views, key=lambda v: v.name):
            cache.get_parts(member, view, on_batch)
    if on_total:
        on_total(source.n_images, f"scoring {len(rows)} configurations")
    ablation = run_ablation(members, cache, truth, rows, request.metric, on_batch=on_batch)
    return ScoreOutcome(ablation, spec_path, source.description, None if spec is None else spec.fit)
