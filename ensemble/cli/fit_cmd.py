"""`ens fit`: learn fusion weights and cleanup thresholds on the validation split."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from ensemble.cli.app import app
from ensemble.cli.choices import Connectivity, MetricName, WeightsPer
from ensemble.cli.common import (
    DEFAULT_DATA,
    BatchSizeOpt,
    CacheOpt,
    DataOpt,
    DeviceOpt,
    DropOutliersOpt,
    GrayToRgbOpt,
    MasksOpt,
    ModelsDirOpt,
    SplitSeedOpt,
    ValFractionOpt,
    ValIdsOpt,
    console,
    image_progress,
    open_data_option,
    split_spec,
    user_errors,
    warn,
)
from ensemble.data.split import DEFAULT_SEED, DEFAULT_VAL_FRACTION
from ensemble.data.tta import TTA
from ensemble.fitting.job import FitOutcome, FitRequest, fit
from ensemble.fitting.settings import DEFAULT_FOLDS, FitSettings
from ensemble.inference.options import DEFAULT_BATCH
from ensemble.members.ensemblefile import default_path
from ensemble.members.member import DEFAULT_STORE
from ensemble.members.session import Device


@app.command("fit")
@user_errors
def fit_cmd(
    members: Annotated[
        str | None,
        typer.Option("--members", help="Comma-separated member names or .onnx paths (default: whole store)."),
    ] = None,
    tta: Annotated[
        TTA, typer.Option("--tta", help="TTA views the weights are fitted (and used) with.")
    ] = TTA.flip,
    weights_per: Annotated[
        WeightsPer,
        typer.Option(
            "--weights-per",
            help="One fusion weight per member, or per member and class; auto: whichever scores "
            "higher in the cross-validation.",
        ),
    ] = WeightsPer.auto,
    metric: Annotated[MetricName, typer.Option("--metric", help="Metric to maximise.")] = MetricName.course,
    folds: Annotated[
        int,
        typer.Option("--folds", help="Cross-validation folds, at most the validation images (0 or 1: none)."),
    ] = (DEFAULT_FOLDS),
    connectivity: Annotated[
        Connectivity, typer.Option("--connectivity", help="Neighbourhood of cleanup regions.")
    ] = Connectivity["4"],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", help="Ensemble file to write (default <models-dir>/ensemble.json).", dir_okay=False
        ),
    ] = None,
    data: DataOpt = DEFAULT_DATA,
    masks: MasksOpt = None,
    gray_to_rgb: GrayToRgbOpt = False,
    models_dir: ModelsDirOpt = DEFAULT_STORE,
    split_seed: SplitSeedOpt = DEFAULT_SEED,
    val_fraction: ValFractionOpt = DEFAULT_VAL_FRACTION,
    val_ids: ValIdsOpt = None,
    drop_outliers: DropOutliersOpt = True,
    cache_dir: CacheOpt = None,
    device: DeviceOpt = Device.auto,
    batch_size: BatchSizeOpt = DEFAULT_BATCH,
) -> None:
    """Learn fusion weights, class gains and cleanup min_area on the validation split."""
    request = FitRequest(
        data=open_data_option(data, masks),
        members=members,
        store=models_dir,
        split_spec=split_spec(split_seed, val_fraction, val_ids, drop_outliers, data),
        tta=tta.value,
        settings=FitSettings(weights_per.value, metric.value, int(connectivity.value), folds),
        out=out,
        cache_dir=cache_dir,
        device=device.value,
        batch_size=batch_size,
        gray_to_rgb=gray_to_rgb,
    )
    with image_progress() as progress:
        task = progress.add_task("fit", total=None)
        fits = None

        def total(count, what):
            progress.update(task, total=count, description=what)

        def step(what, done, count):
            nonlocal fits
            if fits is None:
                progress.update(task, visible=False)
                fits = progress.add_task("fitting", total=count, unit="fits")
            progress.update(fits, completed=done, total=count, description=f"fitting: {what}")

        outcome = fit(request, total, lambda n: progress.advance(task, n), step, warn)
    _report(outcome)


def _report(outcome: FitOutcome) -> None:
    spec, result = outcome.spec, outcome.result
    weights = Table("member", *(f"w[{c}]" for c in range(1, len(spec.min_area))), title="fusion weights")
    for name, row in zip(spec.members, spec.weights, strict=True):
        weights.add_row(escape(name), *(f"{v:.3f}" for v in row[1:]))
    console.print(weights)
    if spec.dropped:
        console.print(
            f"left out at weight 0 (never run by `ens predict`): {escape(', '.join(spec.dropped))}",
            highlight=False,
        )
    gains = ", ".join(f"{c}={g:g}" for c, g in enumerate(spec.class_gain) if c > 0)
    areas = ", ".join(f"{c}={a}" for c, a in enumerate(spec.min_area) if c > 0)
    console.print(f"class gains: {gains}\ncleanup min_area: {areas}", highlight=False)
    stages = Table(
        "estimate", "equal weights", "learned", "+ class gains", "+ cleanup", title=f"{spec.metric} mIoU"
    )
    stages.add_row("in-sample", *(f"{v:.4f}" for v in _values(result.in_sample)))
    if result.cv is not None:
        stages.add_row(f"nested {result.folds}-fold CV", *(f"{v:.4f}" for v in _values(result.cv)))
    console.print(stages)
    if result.cv is not None:
        console.print(
            f"nested CV gain: {result.cv.weight_gain:+.4f} (weights over equal), "
            f"{result.cv.class_gain_gain:+.4f} (class gains), {result.cv.cleanup_gain:+.4f} (cleanup); "
            f"total {result.cv.cleaned - result.cv.equal:+.4f}",
            highlight=False,
        )
    for note in result.notes:
        console.print(f"[yellow]note:[/] {escape(note)}", highlight=False)
    if outcome.path == default_path(outcome.store):
        use = "`ens predict` and `ens score` use it when --members is not given"
    else:
        use = f"use it with `ens predict --ensemble {outcome.path}`"
    console.print(
        f"wrote {outcome.path} ({outcome.n_images} validation images, {outcome.split}); {use}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )


def _values(stages):
    return stages.equal, stages.learned, stages.gained, stages.cleaned
