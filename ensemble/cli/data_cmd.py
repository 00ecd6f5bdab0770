"""`ens data demo`, `inspect` and `grid`: make the synthetic data, look at a data file before using it."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import Progress
from rich.table import Table

from ensemble.cli.app import data_app
from ensemble.cli.common import DEFAULT_DATA, MasksOpt, console, user_errors
from ensemble.data.summary import inspect_data
from ensemble.demo.folder_demo import FolderDemoSpec, write_folder_demo
from ensemble.demo.synthetic import DemoSpec, write_demo
from ensemble.scoring.gallery import save_data_grid

FOLDER_DEMO = Path("data/mars_rgb")


class Layout(str, Enum):
    npz = "npz"
    folder = "folder"


@data_app.command("demo")
@user_errors
def demo(
    out: Annotated[
        Path | None,
        typer.Option("--out", help=f"Where to write (default {DEFAULT_DATA}, or {FOLDER_DEMO} for folders)."),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed; the same seed gives the same file.")] = 0,
    n_train: Annotated[
        int | None, typer.Option("--n-train", help="Labelled images (default 2615; 240 for folders).")
    ] = None,
    n_test: Annotated[
        int | None, typer.Option("--n-test", help="Test images with masks (default 10022; 160 for folders).")
    ] = None,
    height: Annotated[int, typer.Option("--height", help="Image height in pixels (npz).")] = 64,
    width: Annotated[int, typer.Option("--width", help="Image width in pixels (npz).")] = 128,
    float64: Annotated[
        bool, typer.Option("--float64", help="Store uncompressed float64 like the course file.")
    ] = False,
    layout: Annotated[
        Layout,
        typer.Option(
            "--layout",
            help="npz: the course file format; folder: train/ and test/ folders of images and masks "
            "(PNG), in two sizes (64x96 and 48x80).",
        ),
    ] = Layout.npz,
    channels: Annotated[
        int, typer.Option("--channels", help="Folder layout: 3 for RGB images, 1 for grayscale.")
    ] = 3,
) -> None:
    """Write the synthetic Mars data set (course npz format plus test_masks, or image folders)."""
    if layout is Layout.folder:
        n_train, n_test = 240 if n_train is None else n_train, 160 if n_test is None else n_test
        _folder_demo(out or FOLDER_DEMO, seed, n_train, n_test, channels)
        return
    out = out or DEFAULT_DATA
    n_train, n_test = 2615 if n_train is None else n_train, 10022 if n_test is None else n_test
    spec = DemoSpec(seed, n_train, n_test, height, width)
    spec.check()
    with Progress(console=console, transient=True, disable=not console.is_terminal) as progress:
        task = progress.add_task("generating", total=n_train + n_test)
        done = write_demo(out, spec, float64, lambda n: progress.advance(task, n))
    console.print(
        f"wrote {done.path}: {done.n_train} training images ({done.n_aliens} alien outliers) + "
        f"{done.n_test} test images of {height}x{width}, {done.n_bytes / 1e6:.1f} MB "
        f"in {done.seconds:.1f} s",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )


def _folder_demo(out: Path, seed: int, n_train: int, n_test: int, channels: int) -> None:
    done = write_folder_demo(out, FolderDemoSpec(seed, n_train, n_test, channels))
    kind = "RGB" if channels == 3 else "grayscale"
    console.print(
        f"wrote {done.path}: train/ {done.n_train} labelled images ({done.n_aliens} alien outliers) and "
        f"test/ {done.n_test} images with masks, {kind} PNGs of 64x96 and 48x80 in {done.seconds:.1f} s",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )


@data_app.command("grid")
@user_errors
def grid(
    path: Annotated[Path, typer.Argument(help="Course-format npz.", dir_okay=False)],
    out: Annotated[Path, typer.Option("--out", help="PNG to write.", dir_okay=False)] = Path(
        "docs/sample_grid.png"
    ),
    count: Annotated[int, typer.Option("--count", help="Training images to show.")] = 6,
    start: Annotated[int, typer.Option("--start", help="Index of the first image.")] = 0,
) -> None:
    """Save a PNG of training images beside their colour-coded masks."""
    written = save_data_grid(path, out, count, start)
    size = written.stat().st_size / 1e3
    console.print(f"wrote {written} ({size:.0f} kB)", markup=False, highlight=False, soft_wrap=True)


@data_app.command("inspect")
@user_errors
def inspect(
    path: Annotated[Path, typer.Argument(help="Course-format npz, or a folder of images, to inspect.")],
    n_classes: Annotated[
        int | None, typer.Option("--n-classes", min=2, help="Expected class count (checks labels).")
    ] = None,
    masks: MasksOpt = None,
) -> None:
    """Print shapes, dtypes, class shares and duplicated-mask outliers of a data file or image folder."""
    report = inspect_data(path, n_classes, masks)
    console.print(f"[bold]{escape(str(report.path))}[/]  sha256 {report.sha256[:16]}…", highlight=False)
    for line in report.arrays:
        console.print(f"  {line}", markup=False)
    if not report.train_shares:
        return
    table = Table("class", report.share_title, "test share" if report.test_shares else "")
    for cls, share in enumerate(report.train_shares):
        test = f"{report.test_shares[cls]:.2%}" if report.test_shares else ""
        table.add_row(str(cls), f"{share:.2%}", test)
    console.print(table)
    console.print(
        f"outliers: {report.n_outliers} images in {report.n_outlier_groups} duplicated-mask "
        f"group(s) (≥ {report.min_copies} copies)"
        + (f", e.g. {report.example_kind} {report.outlier_examples}" if report.n_outliers else ""),
        markup=False,
    )
