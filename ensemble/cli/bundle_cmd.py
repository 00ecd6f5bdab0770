"""`ens bundle`: the ensemble, its members and every wheel as one offline folder for a Kaggle notebook."""

from __future__ import annotations

import shlex
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from ensemble.bundle.build import BundleRequest, make_bundle
from ensemble.bundle.manifest import check_bundle
from ensemble.bundle.preinstalled import KAGGLE_PREINSTALLED
from ensemble.bundle.target import DEFAULT_PLATFORM, DEFAULT_PYTHON, make_target
from ensemble.cli.app import app
from ensemble.cli.common import EnsembleOpt, ModelsDirOpt, console, err_console, user_errors
from ensemble.errors import EnsError
from ensemble.members.member import DEFAULT_STORE


class BundleRuntime(str, Enum):
    cpu = "cpu"
    gpu = "gpu"


@app.command("bundle")
@user_errors
def bundle_cmd(
    out: Annotated[Path, typer.Argument(help="New or empty folder for the bundle (with --check: a bundle).")],
    ensemble: EnsembleOpt = None,
    models_dir: ModelsDirOpt = DEFAULT_STORE,
    python: Annotated[
        str | None, typer.Option("--python", help=f"Target Python 3.N (default {DEFAULT_PYTHON}, Kaggle's).")
    ] = None,
    platform: Annotated[
        str | None,
        typer.Option("--platform", help=f"Target manylinux platform (default {DEFAULT_PLATFORM})."),
    ] = None,
    runtime: Annotated[
        BundleRuntime | None,
        typer.Option(
            "--runtime", help="cpu: onnxruntime (default); gpu: onnxruntime-gpu with CUDA and cuDNN wheels."
        ),
    ] = None,
    archive: Annotated[
        bool, typer.Option("--zip", help="Also write OUT.zip, ready to upload as a dataset.")
    ] = False,
    skip_preinstalled: Annotated[
        bool, typer.Option("--skip-preinstalled", help="Leave out the packages Kaggle's Python image ships.")
    ] = False,
    ens_wheel: Annotated[
        Path | None,
        typer.Option(
            "--ens-wheel", exists=True, dir_okay=False, help="Bundle this ens wheel instead of building one."
        ),
    ] = None,
    check: Annotated[
        bool,
        typer.Option(
            "--check", help="Verify the bundle OUT: every hash, and an offline resolve of its wheels."
        ),
    ] = False,
) -> None:
    """Pack the ensemble into one offline folder for a notebook without internet (Kaggle).

    OUT gets wheels/ (ens and its dependencies for the target Python and platform), models/ (the
    ensemble file and its members), run.py (verify, install offline, then `ens predict`), README.md
    (the same as a notebook cell) and bundle.json (every file's sha256, the target, the command).
    """

    def note(line: str) -> None:
        err_console.print(escape(line), highlight=False, soft_wrap=True)

    if check:
        given = [name for name, value in _build_options(locals()).items() if value]
        if given:
            raise EnsError(f"--check verifies an existing bundle and takes no {given[0]}; drop it")
        console.print(check_bundle(out), markup=False, highlight=False, soft_wrap=True)
        return
    target = make_target(python, platform, runtime.value if runtime else None)
    if skip_preinstalled:
        note(f"--skip-preinstalled leaves out: {', '.join(KAGGLE_PREINSTALLED)}")
    request = BundleRequest(
        out=out,
        ensemble=ensemble,
        models_dir=models_dir,
        target=target,
        command=_command(out, ensemble, models_dir, target, archive, skip_preinstalled),
        archive=archive,
        skip_preinstalled=skip_preinstalled,
        ens_wheel=ens_wheel,
    )
    outcome = make_bundle(request, note)
    archived = f"; archive {outcome.archive}" if outcome.archive else ""
    console.print(
        f"wrote bundle {outcome.out} ({outcome.n_files} files, {outcome.size_bytes / 1e6:.1f} MB) for "
        f"{target.describe()}{archived}; check it with `ens bundle --check {outcome.out}`",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )


def _build_options(values: dict) -> dict:
    """The options that only making a bundle takes, by flag, as given."""
    return {
        "--ensemble": values["ensemble"],
        "--models-dir": values["models_dir"] != DEFAULT_STORE,
        "--python": values["python"],
        "--platform": values["platform"],
        "--runtime": values["runtime"],
        "--zip": values["archive"],
        "--skip-preinstalled": values["skip_preinstalled"],
        "--ens-wheel": values["ens_wheel"],
    }


def _command(out, ensemble, models_dir, target, archive, skip) -> str:
    """The command that makes this bundle, every default spelled out, for bundle.json."""
    words = ["ens", "bundle", str(out), "--ensemble", str(ensemble or Path(models_dir) / "ensemble.json")]
    words += ["--models-dir", str(models_dir), "--python", target.python, "--platform", target.platform]
    words += ["--runtime", target.runtime] + ["--zip"] * archive + ["--skip-preinstalled"] * skip
    return shlex.join(words)
