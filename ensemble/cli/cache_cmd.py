"""`ens cache list|clean`: the run directories kept under $ENS_CACHE/runs (shards of interrupted or
--keep-shards runs), and removing those no run is using."""

from __future__ import annotations

import typer
from rich.markup import escape
from rich.table import Table

from ensemble.cli.app import app
from ensemble.cli.common import console, user_errors
from ensemble.cli.members_cmd import format_size
from ensemble.runs.runcache import clean_runs, list_runs, runs_root

cache_app = typer.Typer(
    help="List or remove the run directories kept under $ENS_CACHE.", no_args_is_help=True
)
app.add_typer(cache_app, name="cache")


@cache_app.command("list")
@user_errors
def list_command() -> None:
    """Show each run directory: its shards, size and the process running in it, if any."""
    entries = list_runs()
    if not entries:
        console.print(f"no run directories in {str(runs_root())!r}", markup=False)
        return
    table = Table("run", "shards", "size", "state")
    for entry in entries:
        state = f"in use by {entry.in_use}" if entry.in_use else ("kept" if entry.recorded else "damaged")
        table.add_row(escape(str(entry.path)), str(entry.shards), format_size(entry.size), escape(state))
    console.print(table)


@cache_app.command("clean")
@user_errors
def clean_command() -> None:
    """Remove every run directory no run is using (a rerun then starts from nothing)."""
    removed, kept = clean_runs()
    freed = format_size(sum(entry.size for entry in removed))
    noun = "run directory" if len(removed) == 1 else "run directories"
    line = f"removed {len(removed)} {noun} ({freed}) from {str(runs_root())!r}"
    if kept:
        line += f"; kept {len(kept)} in use: " + ", ".join(f"{e.path.name} ({e.in_use})" for e in kept)
    console.print(line, markup=False)
