"""`ens members`: list the member store (or given member files) with their provenance and a
run-time contract check on a tiny random batch."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from ensemble.cli.app import app
from ensemble.cli.common import DEFAULT_DATA, DataOpt, MasksOpt, console, open_data_option, user_errors
from ensemble.inference.runner import probe_contract
from ensemble.members.member import DEFAULT_STORE, load_member
from ensemble.members.store import store_files


def format_size(n_bytes: int) -> str:
    """Bytes as kB below 1 MB, else MB.

    >>> format_size(3613), format_size(7_900_000)
    ('3.6 kB', '7.90 MB')
    """
    return f"{n_bytes / 1e3:.1f} kB" if n_bytes < 1e6 else f"{n_bytes / 1e6:.2f} MB"


@app.command("members")
@user_errors
def members(
    paths: Annotated[
        list[Path] | None, typer.Argument(help="Member .onnx files (default: every member of the store).")
    ] = None,
    models_dir: Annotated[
        Path, typer.Option("--models-dir", file_okay=False, help="Member store folder.")
    ] = DEFAULT_STORE,
    bench: Annotated[
        bool,
        typer.Option(
            "--bench",
            help="Also choose each member's runtime for `ens predict` now (timed on this machine on the "
            "images of --data, a few seconds per member, cached), as `ens export` does for the members "
            "it writes.",
        ),
    ] = False,
    data: DataOpt = DEFAULT_DATA,
    masks: MasksOpt = None,
) -> None:
    """Show each member's source framework, classes, input (size, multiple, an output resized from
    1/f of it), parity error, size, validation mIoU and whether it emits probabilities (run once on two
    random images)."""
    files = [(path.stem, path) for path in paths] if paths else list(store_files(models_dir).items())
    if not files:
        console.print(
            f"no members in {str(models_dir)!r}; export one with `ens export SOURCE --name NAME`",
            markup=False,
        )
        return
    loaded = [load_member(path, name) for name, path in files]
    probes = [probe_contract(member) for member in loaded]
    console.print(_table(loaded, probes))
    _print_notes(loaded, probes)
    if bench:
        bench_members(
            [m for m, (_, problem) in zip(loaded, probes, strict=True) if problem is None], data, masks
        )


def _table(loaded: list, probes: list) -> Table:
    """One row a member: provenance, input, parity, size, preprocessing, contract (and val mIoU)."""
    with_miou = any(m.info.val_miou is not None for m in loaded)
    table = Table("name", "framework", "classes", "input", "parity", "size", "preprocessing", "contract")
    if with_miou:
        table.add_column("val mIoU")
    for member, (_, problem) in zip(loaded, probes, strict=True):
        info = member.info
        height, width = info.input_hw
        row = [
            member.name,
            info.source_framework,
            str(info.n_classes),
            f"{height or 'H'}x{width or 'W'}"
            + (" RGB" if info.input_channels == 3 else "")
            + (f" (x{info.size_multiple})" if info.size_multiple > 1 else "")
            + (f", output 1/{info.upsample_factor} resized" if info.upsample_factor > 1 else ""),
            f"{info.parity_max_abs_err:.1e}",
            format_size(member.size_bytes),
            info.preprocessing,
        ]
        contract = "[green]ok[/]" if problem is None else "[bold red]FAIL[/]"
        miou = [] if not with_miou else ["" if info.val_miou is None else f"{info.val_miou:.4f}"]
        table.add_row(*map(escape, row), contract, *miou)
    return table


def _print_notes(loaded: list, probes: list) -> None:
    """The class names (per group of members that share them) and each contract failure."""
    for names in dict.fromkeys(m.info.class_names for m in loaded):
        users = [m.name for m in loaded if m.info.class_names == names]
        who = "" if len(users) == len(loaded) else f" ({', '.join(users)})"
        console.print(f"classes{who}: {', '.join(names)}", markup=False, highlight=False)
    for member, (size, problem) in zip(loaded, probes, strict=True):
        if problem is not None:
            console.print(
                f"[bold red]contract:[/] {escape(repr(member.name))} on two random {size} images: "
                f"{escape(problem)}; `ens predict`, `ens fit` and `ens score` refuse it",
                highlight=False,
                soft_wrap=True,
            )


def bench_members(members: list, data, masks) -> None:
    """Time and cache the runtime of each member for `ens predict` (`ensemble.inference.memberbench`)."""
    from ensemble.inference.memberbench import bench_member, describe_choice

    dataset = open_data_option(data, masks)
    for member in members:
        choice = bench_member(member, dataset, on_timing=lambda line: console.print(line, markup=False))
        console.print(
            f"{member.name}: {describe_choice(choice)}", markup=False, highlight=False, soft_wrap=True
        )
