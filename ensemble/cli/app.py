"""The root Typer application; command modules register themselves on it."""

import typer

app = typer.Typer(
    name="ens",
    help="Fuse independently trained segmentation models (PyTorch, Keras) into one scored, "
    "reproducible Kaggle submission.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

data_app = typer.Typer(help="Generate and inspect data sets.", no_args_is_help=True)
app.add_typer(data_app, name="data")
