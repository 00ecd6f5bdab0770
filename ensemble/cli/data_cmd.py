"""`ens data inspect` (and `ens data demo`, see synthetic): look at a data file before using it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ensemble.cli.app import data_app
from ensemble.cli.common import console, user_errors
from ensemble.inspect import inspect_data


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
    console.print(f"[bold]{report.path}[/]  sha256 {report.sha256[:16]}…")
    for line in report.arrays:
        console.print(f"  {line}")
    table = Table("class", "train share", "test share" if report.test_shares else "")
    for cls, share in enumerate(report.train_shares):
        test = f"{report.test_shares[cls]:.2%}" if report.test_shares else ""
        table.add_row(str(cls), f"{share:.2%}", test)
    console.print(table)
    console.print(
        f"outliers: {report.n_outliers} images in {report.n_outlier_groups} duplicated-mask "
        f"group(s) (≥ {report.min_copies} copies)"
        + (f", e.g. indices {report.outlier_examples}" if report.n_outliers else "")
    )
