"""`ens predict`: members -> TTA -> fusion -> decoding -> cleanup -> submission CSV + manifest."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from ensemble.cli.app import app
from ensemble.cli.choices import Connectivity, EngineName, FormatName, SplitName
from ensemble.cli.common import (
    DEFAULT_DATA,
    BatchSizeOpt,
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
from ensemble.compiled.engine import GraphChoice
from ensemble.data.split import DEFAULT_SEED, DEFAULT_VAL_FRACTION
from ensemble.data.tta import TTA
from ensemble.inference.options import DEFAULT_BATCH
from ensemble.members.member import DEFAULT_STORE
from ensemble.members.session import Device
from ensemble.process import debug_enabled
from ensemble.runs.options import run_options
from ensemble.runs.plan import DEFAULT_SHARD_SIZE
from ensemble.runs.predict import PredictOutcome, PredictRequest, predict
from ensemble.runs.resumable import RunOptions
from ensemble.runtimes.choice import untimed_note
from ensemble.runtimes.kinds import Runtime


@app.command("predict")
@user_errors
def predict_cmd(
    members: MembersOpt = None,
    ensemble: EnsembleOpt = None,
    data: DataOpt = DEFAULT_DATA,
    masks: MasksOpt = None,
    gray_to_rgb: GrayToRgbOpt = False,
    split: Annotated[SplitName, typer.Option("--split", help="Images to predict.")] = SplitName.test,
    tta: Annotated[
        TTA | None,
        typer.Option("--tta", help="Test-time augmentation views. Default: the ensemble file's, else flip."),
    ] = None,
    weights: Annotated[
        str | None,
        typer.Option(
            "--weights", help="Fusion weights a=0.5,b=0.3,c=0.2. Default: the ensemble file's, else equal."
        ),
    ] = None,
    min_area: Annotated[
        str | None,
        typer.Option(
            "--min-area",
            help="Relabel regions below this area: 20, or 1=30,4=5; 0: off. "
            "Default: the ensemble file's, else 0.",
        ),
    ] = None,
    class_gain: Annotated[
        str | None,
        typer.Option(
            "--class-gain",
            help="Multiply class scores before the argmax, e.g. 4=8 for a rare class. "
            "Default: the ensemble file's, else 1.",
        ),
    ] = None,
    connectivity: Annotated[
        Connectivity | None,
        typer.Option(
            "--connectivity",
            help="Neighbourhood of cleanup regions. Default: the ensemble file's, else 4.",
        ),
    ] = None,
    allow_background: Annotated[
        bool, typer.Option("--allow-background", help="Let the argmax pick class 0 (costs course mIoU).")
    ] = False,
    fmt: Annotated[
        FormatName,
        typer.Option(
            "--format",
            help="rle (Kaggle RLE, convention set by the --rle-* options) or flat (the course's CSV).",
        ),
    ] = FormatName.rle,
    rle_order: RleOrderOpt = ORDER,
    rle_start: RleStartOpt = START,
    rle_layout: RleLayoutOpt = LAYOUT,
    rle_header: RleHeaderOpt = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="CSV to write (default submissions/<timestamp>.csv).", dir_okay=False),
    ] = None,
    save_probs: Annotated[
        Path | None,
        typer.Option("--save-probs", help="Also keep the fused float16 probabilities here.", file_okay=False),
    ] = None,
    graph: Annotated[
        GraphChoice,
        typer.Option(
            "--graph",
            help="pipeline (a session per member, each on its fastest runtime), compiled (the graph of "
            "`ens compile`), or auto: on a GPU the compiled graph when one matches the ensemble file, "
            "members and options, else the pipeline.",
        ),
    ] = GraphChoice.auto,
    device: DeviceOpt = Device.auto,
    batch_size: BatchSizeOpt = DEFAULT_BATCH,
    threads: Annotated[
        int | None,
        typer.Option(
            "--threads",
            help="CPU threads of one pipeline (default: one per worker, or the physical cores).",
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            help="Parallel workers. Local engine: batches computed at once on CPU, each on one thread "
            "(default: the physical cores; 1 with --threads or on a GPU). --engine ray: the actors (default "
            "1), each computing batches like the local engine with the driver's runtime per member.",
        ),
    ] = None,
    runtime: Annotated[
        str,
        typer.Option(
            "--runtime",
            metavar="[" + "|".join(r.value for r in Runtime) + "]",
            help="Where members run on CPU. auto (the default): per member the fastest of ONNX Runtime, "
            "ONNX Runtime on the member's folded graph and OpenVINO (pip install 'ens\\[openvino]'), timed "
            "once per machine (by `ens export`, `ens members --bench` or a run of 1,024+ images) and cached. "
            "ort: ONNX Runtime on the members as exported (its CSV exactly). "
            "openvino: OpenVINO.",
        ),
    ] = Runtime.auto.value,
    models_dir: ModelsDirOpt = DEFAULT_STORE,
    split_seed: SplitSeedOpt = DEFAULT_SEED,
    val_fraction: ValFractionOpt = DEFAULT_VAL_FRACTION,
    val_ids: ValIdsOpt = None,
    drop_outliers: DropOutliersOpt = True,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Continue an interrupted run of the same settings; an error if none left shards "
            "(a plain rerun resumes too, silently starting over when nothing matches).",
        ),
    ] = False,
    fresh: Annotated[
        bool, typer.Option("--fresh", help="Discard the complete shards of an earlier identical run.")
    ] = False,
    keep_shards: Annotated[
        bool, typer.Option("--keep-shards", help="Keep the run directory after the CSV is assembled.")
    ] = False,
    shard_size: Annotated[
        int, typer.Option("--shard-size", min=1, help="Images per shard (the unit of resuming).")
    ] = DEFAULT_SHARD_SIZE,
    engine: Annotated[
        EngineName,
        typer.Option(
            "--engine", help="local (this process) or ray (Ray Data actors; pip install 'ens[ray]')."
        ),
    ] = EngineName.local,
    gpus_per_worker: Annotated[
        float | None,
        typer.Option(
            "--gpus-per-worker",
            min=0,
            help="--engine ray: GPUs per actor (default 1 when GPUs exist, else 0).",
        ),
    ] = None,
    ray_address: Annotated[
        str | None,
        typer.Option("--ray-address", help="--engine ray: an existing cluster (default: start a local one)."),
    ] = None,
) -> None:
    """Predict the test set (or the validation split) and write a submission CSV with its manifest."""
    options = run_options(
        allow_background=allow_background,
        batch_size=batch_size,
        device=device,
        threads=threads,
        gray_to_rgb=gray_to_rgb,
        workers=workers,
        runtime=runtime,
    )
    if engine is EngineName.ray:  # --workers counts the actors; each computes like the local pool
        options = replace(options, workers=None)
    request = PredictRequest(
        data=open_data_option(data, masks),
        members=members,
        store=models_dir,
        split=split.value,
        split_spec=split_spec(split_seed, val_fraction, val_ids, drop_outliers, data),
        weights=weights,
        min_area=min_area,
        class_gain=class_gain,
        connectivity=int(connectivity.value) if connectivity is not None else None,
        tta=tta.value if tta is not None else None,
        ensemble=ensemble,
        out=out,
        fmt=fmt.value,
        rle=rle_convention(rle_order, rle_start, rle_layout, rle_header),
        save_probs=save_probs,
        options=options,
        run=RunOptions(
            shard_size=shard_size,
            resume=resume,
            fresh=fresh,
            keep=keep_shards,
            engine=engine.value,
            workers=(workers or 1) if engine is EngineName.ray else 1,
            gpus_per_worker=gpus_per_worker,
            ray_address=ray_address,
            ray_logs=debug_enabled(),
        ),
        graph=graph.value,
    )
    _summary(_predict_with_progress(request))


def _predict_with_progress(request: PredictRequest) -> PredictOutcome:
    """Run `request` under a progress bar that names the members and split once they are loaded."""
    with image_progress() as progress:
        task = progress.add_task("loading members", total=None)

        def started(ensemble, source):
            for line in ensemble.warnings:
                warn(line)
            names = ",".join(m.name for m in ensemble.members)
            progress.update(task, total=source.n_images, description=f"{names} ({source.split})")

        def note(line: str) -> None:
            progress.console.print(escape(line), highlight=False, soft_wrap=True)

        return predict(request, started, lambda n: progress.advance(task, n), note)


def _summary(outcome: PredictOutcome) -> None:
    result, ensemble = outcome.result, outcome.ensemble
    how = ensemble.described_as
    used = dict.fromkeys(r.report.used[0].replace("ExecutionProvider", "") for r in ensemble.runners)
    device = "+".join(used)
    fitted = f"weights and min_area of {outcome.ensemble_file}, " if outcome.ensemble_file else ""
    reused = f", {outcome.reused_shards} shards reused" if outcome.reused_shards else ""
    console.print(
        f"wrote {outcome.csv} ({outcome.source.n_images} images, {ensemble.options.tta} TTA, {fitted}"
        f"{len(ensemble.members)} members on {device}, {how}{reused}) in {result.seconds:.1f} s "
        f"({result.n_images / max(result.seconds, 1e-9):,.0f} img/s); manifest {outcome.manifest}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    untimed = untimed_note(ensemble.members, ensemble.choices, outcome.source.n_images)
    if untimed:
        console.print(f"note: {untimed}", markup=False, highlight=False, soft_wrap=True)
