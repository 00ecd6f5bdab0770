"""The `ens` command line: thin commands over library functions."""

from ensemble.cli import data_cmd, submission_cmd, train_cmd  # noqa: F401  (registers commands)
from ensemble.cli import export_cmd, members_cmd  # noqa: F401  (registers commands)
from ensemble.cli.app import app


def main() -> None:
    """Console-script entry point."""
    app()


__all__ = ["app", "main"]
