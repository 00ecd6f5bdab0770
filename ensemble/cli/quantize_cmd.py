"""`ens quantize NAME`: an int8 copy of a member, kept only when it keeps its score and runs faster."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from ensemble.cli.app import app
from ensemble.cli.common import (
    DEFAULT_DATA,
    DataOpt,
    DropOutliersOpt,
    MasksOpt,
    ModelsDirOpt,
    SplitSeedOpt,
    ValFractionOpt,
    ValIdsOpt,
    console,
    open_data_option,
    split_spec,
    user_errors,
)
from ensemble.data.split import DEFAULT_SEED, DEFAULT_VAL_FRACTION, SplitSpec
from ensemble.errors import EnsError
from ensemble.members.member import DEFAULT_STORE, Member
from ensemble.members.store import get_member

PRECISIONS = ("int8",)


def check_quantize(value: str | None) -> None:
    """`--quantize` takes int8 (or nothing)."""
    if value is not None and value not in PRECISIONS:
        raise EnsError(f"--quantize {value!r} is not a precision ens writes; use --quantize int8")


def quantize_and_report(
    member: Member, data: Path, masks: Path | None, spec: SplitSpec, force: bool = False
) -> None:
    """Quantize `member`, print the two gates' numbers and whether `<name>_int8` was kept."""
    from ensemble.scoring.int8gate import MIN_SPEEDUP, MIOU_TOLERANCE, quantize_and_judge

    dataset = open_data_option(data, masks)
    outcome = quantize_and_judge(
        member, dataset, spec, force=force, on_note=lambda line: console.print(line, markup=False)
    )
    numbers = (
        f"val mIoU {outcome.int8_miou:.4f} (float32 {outcome.fp32_miou:.4f}), "
        f"{outcome.speedup:.2f}x the float32 member's speed in the pipeline, "
        f"max probability difference {outcome.max_prob_error:.3g}"
    )
    if outcome.path is None:
        console.print(
            f"[yellow]int8 copy of {escape(repr(member.name))} not kept:[/] "
            + escape(
                f"{'; '.join(outcome.failures)} [{numbers}; a copy is kept within {MIOU_TOLERANCE:g} of the "
                f"val mIoU and >= {MIN_SPEEDUP:g}x as fast; --force keeps it anyway]"
            ),
            highlight=False,
            soft_wrap=True,
        )
        return
    forced = f" (--force despite: {'; '.join(outcome.failures)})" if outcome.failures else ""
    console.print(
        f"[green]wrote[/] {escape(str(outcome.path))}: {escape(numbers)}{escape(forced)}",
        highlight=False,
        soft_wrap=True,
    )


@app.command("quantize")
@user_errors
def quantize(
    name: Annotated[str, typer.Argument(help="Member to quantize (a name in --models-dir).")],
    models_dir: ModelsDirOpt = DEFAULT_STORE,
    data: DataOpt = DEFAULT_DATA,
    masks: MasksOpt = None,
    force: Annotated[
        bool,
        typer.Option("--force", help="Keep the int8 copy even when it fails a gate; replace any NAME_int8."),
    ] = False,
    split_seed: SplitSeedOpt = DEFAULT_SEED,
    val_fraction: ValFractionOpt = DEFAULT_VAL_FRACTION,
    val_ids: ValIdsOpt = None,
    drop_outliers: DropOutliersOpt = True,
) -> None:
    """Write NAME_int8, an int8 copy of member NAME (ONNX Runtime static QDQ quantization calibrated on
    training images), kept when its val mIoU is within 0.002 of NAME's and it runs >= 1.3x faster here."""
    member = get_member(name, models_dir)
    spec = split_spec(split_seed, val_fraction, val_ids, drop_outliers, data)
    quantize_and_report(member, data, masks, spec, force)
