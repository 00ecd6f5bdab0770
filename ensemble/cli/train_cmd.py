"""`ens train`: train a reference architecture from `zoo` (needs the torch or keras extra)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ensemble.cli.app import app
from ensemble.cli.common import (
    DEFAULT_DATA,
    DataOpt,
    DropOutliersOpt,
    ValFractionOpt,
    ValIdsOpt,
    console,
    split_spec,
    user_errors,
)
from ensemble.data.split import DEFAULT_VAL_FRACTION
from ensemble.errors import EnsError


class Framework(str, Enum):
    torch = "torch"
    keras = "keras"


@app.command("train")
@user_errors
def train(
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Checkpoint to write: .pt (torch) or .keras; <out>.json goes beside it.",
            dir_okay=False,
        ),
    ] = None,
    arch: Annotated[str, typer.Option("--arch", help="Architecture: unet, se_unet (torch only).")] = "unet",
    framework: Annotated[
        Framework, typer.Option("--framework", help="Training framework.")
    ] = Framework.torch,
    data: DataOpt = DEFAULT_DATA,
    epochs: Annotated[int, typer.Option("--epochs", help="Passes over the training part.")] = 20,
    width: Annotated[int, typer.Option("--width", help="Channels of the first level (x2 per level).")] = 16,
    seed: Annotated[
        int, typer.Option("--seed", help="Training seed: initial weights, shuffling, flips.")
    ] = 0,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per step.")] = 32,
    lr: Annotated[float, typer.Option("--lr", help="Peak AdamW learning rate (cosine decay).")] = 2e-3,
    threads: Annotated[
        int | None, typer.Option("--threads", help="CPU threads for torch. Default: the physical cores.")
    ] = None,
    n_classes: Annotated[int, typer.Option("--n-classes", help="Class count (labels 0..C-1).")] = 5,
    split_seed: Annotated[
        int, typer.Option("--split-seed", help="Seed of the validation split; keep it equal for all members.")
    ] = 0,
    val_fraction: ValFractionOpt = DEFAULT_VAL_FRACTION,
    val_ids: ValIdsOpt = None,
    drop_outliers: DropOutliersOpt = True,
) -> None:
    """Train a reference U-Net on the training part of the course split; report validation mIoU."""
    if out is None:
        raise EnsError("no --out given; name the checkpoint to write, e.g. --out models/src/unet.pt")
    from zoo.training import TrainConfig
    from zoo.training import train as run

    if data.is_dir():
        raise EnsError(
            f"--data {str(data)!r} is a folder; `ens train` trains the reference nets on a course npz "
            "(train on image folders with your own code, then `ens export` the result)"
        )
    split = split_spec(split_seed, val_fraction, val_ids, drop_outliers)
    config = TrainConfig(
        framework.value,
        arch,
        data,
        out,
        epochs,
        width,
        n_classes=n_classes,
        seed=seed,
        batch_size=batch_size,
        lr=lr,
        split=split,
        threads=threads,
        val_ids_file=val_ids,
    )
    config.check()
    if data == DEFAULT_DATA:
        from ensemble.demo.synthetic import ensure_demo_data

        ensure_demo_data(data, lambda line: console.print(escape(line), highlight=False))
    with _progress() as (on_step, on_epoch):
        result = run(config, on_step, on_epoch)
    score = "n/a (no validation images)" if result.val_miou is None else f"{result.val_miou:.4f}"
    console.print(
        f"wrote {result.checkpoint} ({result.n_params:,} parameters) and {result.sidecar}; "
        f"val course mIoU {score}, {result.seconds:.0f} s\nexport it with: {result.export_command}",
        highlight=False,
        soft_wrap=True,
        markup=False,
    )


class _progress:
    """A transient bar over each epoch's steps and one printed line per finished epoch."""

    def __enter__(self):
        self.bar = Progress(
            TextColumn("epoch {task.fields[epoch]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self.task = self.bar.add_task("train", total=None, epoch=1)
        self.bar.start()
        return self.step, self.epoch

    def __exit__(self, *exc) -> None:
        self.bar.stop()

    def step(self, done: int, total: int) -> None:
        self.bar.update(self.task, completed=done, total=total)

    def epoch(self, report) -> None:
        score = "n/a" if report.val_miou is None else f"{report.val_miou:.4f}"
        self.bar.console.print(
            f"epoch {report.epoch:>3}/{report.epochs}  loss {report.loss:.4f}  "
            f"val mIoU {score}  {report.seconds:.1f} s",
            highlight=False,
            soft_wrap=True,
        )
        self.bar.update(self.task, completed=0, epoch=report.epoch + 1)
