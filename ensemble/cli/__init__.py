"""The `ens` command line: thin commands over library functions."""

# Importing a command module registers its commands on the app.
from ensemble.cli import (  # noqa: F401
    bundle_cmd,
    cache_cmd,
    compile_cmd,
    data_cmd,
    export_cmd,
    fit_cmd,
    members_cmd,
    predict_cmd,
    score_cmd,
    submission_cmd,
    train_cmd,
)
from ensemble.cli.app import app
from ensemble.entry import main

__all__ = ["app", "main"]
