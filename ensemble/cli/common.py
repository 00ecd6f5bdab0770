"""Shared pieces of the command line: consoles, error handling and reusable options."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from ensemble.errors import EnsError
from ensemble.members.session import Device
from ensemble.process import (
    Stopped,
    debug_enabled,
    internal_error,
    interrupt_exit_code,
    interrupt_message,
)

console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print `message` as a one-line error and return the Exit(code) to raise."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def warn(text: str) -> None:
    """Print `text` as a warning line on stderr (a live progress bar there prints it above itself)."""
    err_console.print(f"[yellow]warning:[/] {escape(text)}", highlight=False, soft_wrap=True)


def user_errors(func: F) -> F:
    """Turn what a command raises into one line and an exit code, never a traceback.

    EnsError and file-system errors exit 1 with their message; Ctrl-C, SIGTERM and SIGHUP exit
    130/143/129 (the temp files are already removed); any other exception is a bug: one line naming
    it, exit 1. With `ens --debug` or ENS_DEBUG=1 everything but Exit is re-raised with its traceback.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise
        except BaseException as exc:
            if debug_enabled() or isinstance(exc, SystemExit | GeneratorExit):
                raise
            raise fail(_message(exc), _exit_code(exc)) from exc

    return wrapper  # type: ignore[return-value]


def _message(exc: BaseException) -> str:
    if isinstance(exc, EnsError):
        return str(exc)
    if isinstance(exc, KeyboardInterrupt | Stopped):
        return interrupt_message(exc)
    if isinstance(exc, OSError):
        where = f" {str(exc.filename)!r}" if exc.filename else ""
        return f"cannot access{where}: {exc.strerror or exc}"
    return internal_error(exc)


def _exit_code(exc: BaseException) -> int:
    return interrupt_exit_code(exc) if isinstance(exc, KeyboardInterrupt | Stopped) else 1


DEFAULT_DATA = Path("data/mars_demo.npz")

DataOpt = Annotated[
    Path,
    typer.Option(
        "--data",
        help="Dataset npz in the course format (training_set, test_set), or a folder of images "
        "(PNG, JPEG, TIFF, BMP; ids are the file stems). Default: the synthetic demo data, generated "
        "on first use.",
    ),
]
MasksOpt = Annotated[
    Path | None,
    typer.Option(
        "--masks",
        help="With an image folder as --data: the folder of its masks, single-channel PNGs of class "
        "indices named like the images.",
        file_okay=False,
    ),
]
GrayToRgbOpt = Annotated[
    bool,
    typer.Option(
        "--gray-to-rgb",
        help="Feed grayscale images to RGB members by replicating the gray channel (refused otherwise).",
    ),
]
SplitSeedOpt = Annotated[
    int, typer.Option("--split-seed", help="Seed of the validation split; keep it equal for all commands.")
]
ValFractionOpt = Annotated[
    float,
    typer.Option("--val-fraction", min=0.0, max=0.9, help="Share of labelled images held out."),
]
ValIdsOpt = Annotated[
    Path | None,
    typer.Option(
        "--val-ids",
        exists=True,
        dir_okay=False,
        help="File of training-set indices (image stems for an image folder) to use as the validation "
        "split (one per line or comma separated); overrides --seed/--val-fraction.",
    ),
]
DropOutliersOpt = Annotated[
    bool,
    typer.Option(
        "--drop-outliers/--keep-outliers",
        help="Drop labelled images whose mask is duplicated many times (the 'alien' outliers).",
    ),
]
ModelsDirOpt = Annotated[
    Path,
    typer.Option("--models-dir", help="Member store: a folder of <name>.onnx members.", file_okay=False),
]

MembersOpt = Annotated[
    str | None,
    typer.Option(
        "--members",
        help="Comma-separated member names or .onnx paths. Default: the members of "
        "<models-dir>/ensemble.json when it exists, else the whole store.",
    ),
]
EnsembleOpt = Annotated[
    Path | None,
    typer.Option(
        "--ensemble",
        help="Ensemble file from `ens fit` (members, weights, TTA, min_area). "
        "Default: <models-dir>/ensemble.json when --members is not given.",
        dir_okay=False,
    ),
]
DeviceOpt = Annotated[Device, typer.Option("--device", help="Where members run.")]
BatchSizeOpt = Annotated[int, typer.Option("--batch-size", min=1, help="Images per batch.")]
CacheOpt = Annotated[
    Path | None,
    typer.Option(
        "--cache-dir",
        help="Where member probabilities on labelled images are cached "
        "(default: $ENS_CACHE, else .cache/ens).",
        file_okay=False,
        show_default=False,
    ),
]


def open_data_option(path: Path, masks: Path | None = None):
    """Open `--data` (and `--masks`): a course npz or an image folder; the default demo file is
    generated on first use, a missing user file is an error."""
    from ensemble.data.datasets import open_dataset
    from ensemble.demo.synthetic import ensure_demo_data

    if path == DEFAULT_DATA:
        ensure_demo_data(path, notify=lambda line: err_console.print(line, markup=False, highlight=False))
    return open_dataset(path, masks)


def split_spec(
    split_seed: int, val_fraction: float, val_ids: Path | None, drop_outliers: bool, data: Path | None = None
):
    """The SplitSpec the shared split options describe; --val-ids name stems when `data` is a folder."""
    from ensemble.data.split import SplitSpec, read_ids_file

    ids = read_ids_file(val_ids, names=data is not None and data.is_dir()) if val_ids is not None else None
    return SplitSpec(split_seed, val_fraction, ids, drop_outliers, ids_file=val_ids)


class RateColumn(ProgressColumn):
    """Images per second of a progress task (or of its `unit` field's things)."""

    def render(self, task: Task) -> Text:
        speed, unit = task.finished_speed or task.speed, task.fields.get("unit", "img")
        text = (f"{speed:,.0f} {unit}/s" if speed >= 1 else f"{60 * speed:,.1f} {unit}/min") if speed else ""
        return Text(text or f"… {unit}/s", style="progress.data.speed")


def image_progress() -> Progress:
    """The progress bar of long image loops: bar, count, images/s, time left."""
    return Progress(
        TextColumn("{task.description}", markup=False),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
    )
