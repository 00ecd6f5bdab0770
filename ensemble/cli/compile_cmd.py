"""`ens compile`: the ensemble file's members, weights, gains and TTA as one ONNX graph."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ensemble.cli.app import app
from ensemble.cli.common import EnsembleOpt, ModelsDirOpt, console, user_errors
from ensemble.compiled.compiler import compile_ensemble, describe
from ensemble.data.tta import TTA
from ensemble.members.member import DEFAULT_STORE


@app.command("compile")
@user_errors
def compile_cmd(
    ensemble: EnsembleOpt = None,
    models_dir: ModelsDirOpt = DEFAULT_STORE,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            dir_okay=False,
            help="Graph to write (default: compiled/<name>.onnx beside the ensemble file).",
        ),
    ] = None,
    tta: Annotated[
        TTA | None, typer.Option("--tta", help="Test-time augmentation views. Default: the ensemble file's.")
    ] = None,
    allow_background: Annotated[
        bool,
        typer.Option(
            "--allow-background", help="Let the argmax pick class 0, as `ens predict --allow-background`."
        ),
    ] = False,
) -> None:
    """Compile the ensemble into one ONNX graph (members, TTA, weights, gains, argmax) that `ens predict`
    runs instead of the pipeline while it matches the ensemble file and the members."""
    result = compile_ensemble(
        ensemble,
        models_dir,
        out,
        tta=tta.value if tta is not None else None,
        allow_background=allow_background,
    )
    console.print(describe(result), markup=False, highlight=False, soft_wrap=True)
