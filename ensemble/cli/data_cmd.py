"""`ens data demo`, `inspect` and `grid`: make the synthetic data, look at a data file before using it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import Progress
from rich.table import Table

from ensemble.cli.app import data_app
from ensemble.cli.common import DEFAULT_DATA, console, user_errors
from ensemble.data.summary import inspect_data
from ensemble.demo.synthetic import DemoSpec, write_demo
from ensemble.scoring.gallery import save_data_grid


@data_app.command("demo")
@user_errors
def demo(
    out: Annotated[Path, typer.Option("--out", help="Where to write the npz.", dir_okay=False)] = (
        DEFAULT_DATA
    ),
    seed: Annotated[int, typer.Option("--seed", help="Seed; the same seed gives the same file.")] = 0,
    n_train: Annotated[int, typer.Option("--n-train", help="Labelled images.")] = 2615,
    n_test: Annotated[int, typer.Option("--n-test", help="Test images (with test_masks).")] = 10022,
    height: Annotated[int, typer.Option("--height", help="Image height in pixels.")] = 64,
    width: Annotated[int, typer.Option("--width", help="Image width in pixels.")] = 128,
    float64: Annotated[
        bool, typer.Option("--float64", help="Store uncompressed float64 like the course file.")
    ] = False,
) -> None:
    """Write the synthetic Mars data set (course npz format plus test_masks)."""
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
    path: Annotated[Path, typer.Argument(help="Course-format npz to inspect.", dir_okay=False)],
    n_classes: Annotated[
        int | None, typer.Option("--n-classes", min=2, help="Expected class count (checks labels).")
    ] = None,
) -> None:
    """Print shapes, dtypes, class shares and duplicated-mask outliers of a data file."""
    report = inspect_data(path, n_classes)
    console.print(f"[bold]{escape(str(report.path))}[/]  sha256 {report.sha256[:16]}…", highlight=False)
    for line in report.arrays:
        console.print(f"  {line}", markup=False)
    table = Table("class", "train share", "test share" if report.test_shares else "")
    for cls, share in enumerate(report.train_shares):
        test = f"{report.test_shares[cls]:.2%}" if report.test_shares else ""
        table.add_row(str(cls), f"{share:.2%}", test)
    console.print(table)
    console.print(
        f"outliers: {report.n_outliers} images in {report.n_outlier_groups} duplicated-mask "
        f"group(s) (≥ {report.min_copies} copies)"
        + (f", e.g. indices {report.outlier_examples}" if report.n_outliers else ""),
        markup=False,
    )
