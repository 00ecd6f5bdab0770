"""The root Typer application; command modules register themselves on it."""

from typing import Annotated

import typer

from ensemble.cli.usage import OneLineGroup
from ensemble.entry import set_debug

HELP = (
    "Fuse independently trained segmentation models (PyTorch, Keras) into one scored, "
    "reproducible Kaggle submission."
)

app = typer.Typer(
    name="ens",
    cls=OneLineGroup,
    help=HELP,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


@app.callback(help=HELP)
def root(
    ctx: typer.Context,
    debug: Annotated[
        bool,
        typer.Option(
            "--debug",
            envvar="ENS_DEBUG",
            help="Show the full traceback (with its causes) instead of the one-line error.",
        ),
    ] = False,
) -> None:
    set_debug(debug)
    ctx.call_on_close(lambda: set_debug(False))  # the switch belongs to this invocation only


data_app = typer.Typer(help="Generate and inspect data sets.", no_args_is_help=True)
app.add_typer(data_app, name="data")
