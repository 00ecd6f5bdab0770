"""`ens score`: a submission CSV against labelled masks, or (no CSV) the ablation of every stage."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from ensemble.cli.app import app
from ensemble.cli.choices import MetricName, SplitName
from ensemble.cli.common import (
    DEFAULT_DATA,
    CacheOpt,
    DataOpt,
    DeviceOpt,
    DropOutliersOpt,
    EnsembleOpt,
    GrayToRgbOpt,
    MasksOpt,
    MembersOpt,
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
from ensemble.cli.rleoptions import (
    LAYOUT,
    ORDER,
    START,
    RleHeaderOpt,
    RleLayoutOpt,
    RleOrderOpt,
    RleStartOpt,
    rle_convention,
)
from ensemble.cli.submission_cmd import NClassesOpt, class_count
from ensemble.data.split import DEFAULT_SEED, DEFAULT_VAL_FRACTION
from ensemble.data.tta import TTA
from ensemble.errors import EnsError
from ensemble.files.atomic import write_text
from ensemble.files.outputs import refuse_overwrite
from ensemble.members.member import DEFAULT_STORE
from ensemble.members.session import Device
from ensemble.scoring.csvscore import score_submission
from ensemble.scoring.job import ScoreOutcome, ScoreRequest, score_stages
from ensemble.submission.convention import DEFAULT_RLE, RleConvention


@app.command("score")
@user_errors
def score(
    csv: Annotated[
        Path | None, typer.Argument(help="Submission CSV to score. Without it: the ablation of every stage.")
    ] = None,
    val: Annotated[
        bool, typer.Option("--val", help="Ablation on the validation split of --data (no CSV).")
    ] = False,
    truth: Annotated[
        Path | None,
        typer.Option(
            "--truth",
            help="Labelled npz, or a folder of masks: with a CSV, the masks to score against (default: "
            "the demo data); without one, run the ablation on its test_set + test_masks (for a masks "
            "folder: on the images of --data).",
        ),
    ] = None,
    split: Annotated[
        SplitName,
        typer.Option("--split", help="CSV scoring: test (ids index test_masks) or val (training masks)."),
    ] = SplitName.test,
    metric: Annotated[MetricName, typer.Option("--metric", help="Reduction to report.")] = MetricName.course,
    n_classes: NClassesOpt = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="Also write the scores here.")] = None,
    plots: Annotated[
        Path | None,
        typer.Option(
            "--plots", help="Ablation: write per-class IoU, confusion and gallery PNGs here.", file_okay=False
        ),
    ] = None,
    members: MembersOpt = None,
    ensemble: EnsembleOpt = None,
    tta: Annotated[
        TTA | None, typer.Option("--tta", help="Ablation TTA. Default: the ensemble file's, else flip.")
    ] = None,
    min_area: Annotated[
        str | None,
        typer.Option(
            "--min-area",
            help="Ablation cleanup row with these thresholds (20, or 1=30,4=5) "
            "instead of the ensemble file's.",
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
    rle_order: RleOrderOpt = ORDER,
    rle_start: RleStartOpt = START,
    rle_layout: RleLayoutOpt = LAYOUT,
    rle_header: RleHeaderOpt = None,
) -> None:
    """Score a submission CSV offline, or (no CSV: --val / --truth NPZ) show what every stage wins.

    An rle CSV is read under the --rle-* options (the course's convention by default).
    """
    rle = rle_convention(rle_order, rle_start, rle_layout, rle_header)
    if csv is not None:
        if val:
            raise EnsError("--val runs the ablation and takes no CSV; to score a val CSV use --split val")
        _score_csv(csv, truth or DEFAULT_DATA, split.value, metric.value, n_classes, json_path, rle)
        return
    request = ScoreRequest(
        data=_ablation_data(val, truth, rle, data, masks),
        split="val" if val else "test",
        members=members,
        ensemble=ensemble,
        store=models_dir,
        split_spec=split_spec(split_seed, val_fraction, val_ids, drop_outliers, data),
        tta=tta.value if tta is not None else None,
        min_area=min_area,
        metric=metric.value,
        cache_dir=cache_dir,
        device=device.value,
        gray_to_rgb=gray_to_rgb,
        outputs={"--json": json_path, "--plots": _plot_files(plots)},
    )
    with image_progress() as progress:
        task = progress.add_task("scoring", total=None)
        outcome = score_stages(
            request,
            lambda count, what: progress.reset(task, total=count, description=what),
            lambda n: progress.advance(task, n),
            warn,
        )
    _print_ablation(outcome)
    _ablation_outputs(outcome, json_path, plots)


def _ablation_data(val: bool, truth: Path | None, rle: RleConvention, data: Path, masks: Path | None):
    """The labelled images of the ablation: the validation split of --data (--val), or the test set
    of --truth (a labelled npz, or a masks folder for the images of --data)."""
    if rle != DEFAULT_RLE:
        raise EnsError("the --rle-* options describe a CSV to score; give one, or drop them for the ablation")
    if not val and truth is None:
        raise EnsError(
            "give a submission CSV to score (e.g. `ens score submissions/sub.csv`), or --val / --truth NPZ "
            "for the ablation of every stage"
        )
    if val and truth is not None:
        raise EnsError("--val scores the validation split of --data; --truth a labelled test set; pick one")
    if val:
        return open_data_option(data, masks)
    if truth.is_dir():
        return open_data_option(data, truth)
    return open_data_option(truth)


def _ablation_outputs(outcome: ScoreOutcome, json_path: Path | None, plots: Path | None) -> None:
    """The fit's estimate beside the ablation, then the --json report and the --plots PNGs."""
    estimate = fit_estimate(outcome.fit)
    if estimate:
        _print_estimate(estimate, outcome.fit)
    if json_path is not None:
        report = {**outcome.ablation.to_json(), "fit_estimate": estimate or None}
        write_text(json_path, json.dumps(report, indent=2) + "\n")
    if plots is not None:
        from ensemble.scoring.plots import save_plots

        written = save_plots(outcome.ablation, plots)
        console.print(
            f"wrote {', '.join(str(p) for p in written)}", markup=False, highlight=False, soft_wrap=True
        )


def _plot_files(plots: Path | None) -> list[Path] | None:
    from ensemble.scoring.plots import plot_paths

    return None if plots is None else plot_paths(plots)


def _print_ablation(outcome: ScoreOutcome) -> None:
    ablation = outcome.ablation
    classes = [escape(name) for name in ablation.class_names[1:]]
    title = f"{ablation.metric} mIoU on {ablation.n_images} images ({escape(outcome.description)})"
    table = Table("configuration", "mIoU", *classes, title=title)
    best_single = max(s.miou for s in ablation.rows if len(s.row.members) == 1)
    for score in ablation.rows:
        values = ["—" if math.isnan(v) else f"{v:.4f}" for v in score.iou[1:]]
        style = "bold" if score is ablation.rows[-1] else None
        table.add_row(escape(score.row.name), f"{score.miou:.4f}", *values, style=style)
    console.print(table)
    final = ablation.rows[-1]
    console.print(
        f"last row ({final.row.name}): {final.miou:.4f} "
        f"({final.miou - best_single:+.4f} vs the best single member)",
        markup=False,
        highlight=False,
    )
    if outcome.ensemble_file is None:
        console.print(
            "no ensemble file: run `ens fit` to add learned weights and cleanup rows", highlight=False
        )
    names = [escape(name) for name in ablation.class_names]
    confusion = Table(
        "true \\ pred", *names, title=f"confusion matrix of the last row ({escape(final.row.name)})"
    )
    for cls, row in enumerate(final.confusion):
        if cls > 0:
            confusion.add_row(names[cls], *(f"{v:,}" for v in row))
    console.print(confusion)


_STAGES = (
    ("equal weights", "equal"),
    ("learned weights", "learned"),
    ("+ class gains", "learned+gains"),
    ("+ cleanup", "learned+gains+cleanup"),
)


def fit_estimate(fit: dict | None) -> list[dict]:
    """The ensemble file's stage scores: in-sample (fitted and scored on the same images) beside the
    nested CV estimate (each stage fitted without the images it is scored on); [] without them."""
    fit = fit or {}
    in_sample, cv = fit.get("in_sample"), fit.get("cv")
    if not isinstance(in_sample, dict):
        return []
    cv = cv if isinstance(cv, dict) else {}
    rows = []
    for name, key in _STAGES:
        inside, held = in_sample.get(key), cv.get(key)
        if not isinstance(inside, (int, float)):
            return []
        rows.append(
            {"stage": name, "in_sample": inside, "cv": held if isinstance(held, (int, float)) else None}
        )
    return rows


def _print_estimate(rows: list[dict], fit: dict) -> None:
    folds = fit.get("folds")
    cv_name = f"nested {folds}-fold CV" if folds else "CV"
    table = Table("stage", "in-sample", cv_name, "CV − in-sample", title="the fit's estimate (ensemble file)")
    for row in rows:
        held = row["cv"]
        table.add_row(
            row["stage"],
            f"{row['in_sample']:.4f}",
            "—" if held is None else f"{held:.4f}",
            "—" if held is None else f"{held - row['in_sample']:+.4f}",
        )
    console.print(table)


def _score_csv(
    csv: Path,
    truth: Path,
    split: str,
    metric: str,
    n_classes: int | None,
    json_path: Path | None,
    rle: RleConvention,
) -> None:
    refuse_overwrite({"--json": json_path}, {"the scored CSV": csv, "--truth": truth})
    result = score_submission(csv, truth, class_count(csv, n_classes, rle), split, metric, rle=rle)
    title = f"{escape(str(result.submission))} ({result.format}, {result.split})"
    table = Table("class", "IoU", "pixels", title=title)
    for cls, (iou, pixels) in enumerate(zip(result.iou, result.pixels, strict=True)):
        table.add_row(str(cls), "—" if iou != iou else f"{iou:.4f}", f"{pixels:,}")
    console.print(table)
    console.print(f"mIoU ({result.metric}): [bold]{result.miou:.4f}[/] over {result.n_images} images")
    if json_path is not None:
        write_text(json_path, json.dumps(result.to_json(), indent=2) + "\n")
