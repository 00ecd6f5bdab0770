"""Make a bundle: members of the ensemble file (checked by sha256), the ens wheel and its dependencies
for the target, run.py, README.md and bundle.json, written to a temp folder renamed into place."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import ensemble
from ensemble.bundle.archive import write_zip
from ensemble.bundle.manifest import write_manifest
from ensemble.bundle.preinstalled import KAGGLE_PREINSTALLED, wheel_project
from ensemble.bundle.readme import readme, run_script
from ensemble.bundle.target import Target, requirements_for
from ensemble.bundle.wheels import Note, build_ens_wheel, download, requires_dist
from ensemble.errors import EnsError
from ensemble.files.atomic import ensure_dir, write_text
from ensemble.files.hashing import files_sha256
from ensemble.files.outputs import refuse_overwrite, run_inputs
from ensemble.members.ensemblefile import FILE_NAME, default_path, resolve_ensemble
from ensemble.members.member import Member

Fetch = Callable[[list[str], Target, Path, Note], list[Path]]


@dataclass(frozen=True)
class BundleRequest:
    """What to bundle, where, for which target; `ens_wheel` None builds it from this checkout."""

    out: Path
    ensemble: Path | None
    models_dir: Path
    target: Target
    command: str
    archive: bool = False
    skip_preinstalled: bool = False
    ens_wheel: Path | None = None


@dataclass(frozen=True)
class BundleOutcome:
    out: Path
    archive: Path | None
    n_files: int
    size_bytes: int
    skipped: tuple[str, ...]


def make_bundle(request: BundleRequest, note: Note, fetch: Fetch = download) -> BundleOutcome:
    """Write the bundle of `request`; OUT appears complete or not at all."""
    out = Path(request.out)
    ensemble_file = Path(request.ensemble) if request.ensemble else default_path(request.models_dir)
    members, _, ensemble_file = resolve_ensemble(None, ensemble_file, Path(request.models_dir))
    _refuse_paths_as_names(members, ensemble_file)
    archive = out.with_name(out.name + ".zip") if request.archive else None
    _refuse_out(out, archive, members, ensemble_file, request.ens_wheel)
    parent = ensure_dir(out.parent)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=parent))
    work.chmod(0o755)  # mkdtemp's 0o700 would follow the folder to OUT
    try:
        _copy_members(members, ensemble_file, work / "models")
        note(f"copied {len(members)} members and {ensemble_file}, each member checked by sha256")
        skipped = _wheels(request, work / "wheels", note, fetch)
        ens_wheel = next((work / "wheels").glob("ens-*.whl"))
        write_text(work / "run.py", run_script())
        names = [m.name for m in members]
        write_text(work / "README.md", readme(request.target, names, request.command, ensemble.__version__))
        write_manifest(
            work,
            {
                "target": request.target.as_dict(),
                "command": request.command,
                "ens_wheel": ens_wheel.relative_to(work).as_posix(),
                "ensemble": f"models/{FILE_NAME}",
                "members": names,
                "requirements": (work / "requirements.txt").read_text().split(),
                "preinstalled": list(skipped),
            },
        )
        _move_into_place(work, out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    files = [p for p in out.rglob("*") if p.is_file()]
    if archive is not None:
        note(f"writing {archive}")
        write_zip(out, archive)
    return BundleOutcome(out, archive, len(files), sum(p.stat().st_size for p in files), skipped)


def _refuse_paths_as_names(members: list[Member], ensemble_file: Path) -> None:
    """A bundle finds members by store name; an ensemble file that lists .onnx paths cannot move."""
    for member in members:
        if member.path.name != f"{member.name}.onnx":
            raise EnsError(
                f"ensemble file {str(ensemble_file)!r} names member {member.name!r} by path; a bundle needs "
                "store names; copy the members into one folder and re-run `ens fit` with --members NAMES"
            )


def _refuse_out(out: Path, archive: Path | None, members, ensemble_file: Path, wheel: Path | None) -> None:
    """OUT is a new or empty folder (so it holds no input), and the archive is none of the inputs."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        what = "is a file" if not out.is_dir() else "is a folder that is not empty"
        raise EnsError(f"OUT {str(out)!r} {what}; give a new or empty folder for the bundle")
    inputs = run_inputs(members=members, ensemble=ensemble_file)
    inputs["--ens-wheel"] = wheel
    refuse_overwrite({"the --zip archive": archive}, inputs)


def _copy_members(members: list[Member], ensemble_file: Path, dest: Path) -> None:
    """Copy each member with its external data, then check the copy's sha256 against the fitted one."""
    dest.mkdir(parents=True)
    for member in members:
        folder = member.path.parent.resolve()
        sources = [member.path.resolve(), *(p.resolve() for p in member.external_data)]
        copies = [dest / p.relative_to(folder) for p in sources]
        for source, copy in zip(sources, copies, strict=True):
            if copy.exists():
                raise EnsError(
                    f"member {member.name!r} keeps {source.name!r}, a file name another member uses too; "
                    "give each member's external data its own name"
                )
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, copy)
        if files_sha256(copies, root=dest) != member.sha256:
            raise EnsError(f"member {member.name!r} ({member.path}) changed while it was copied; run again")
    shutil.copyfile(ensemble_file, dest / FILE_NAME)


def _wheels(request: BundleRequest, dest: Path, note: Note, fetch: Fetch) -> tuple[str, ...]:
    """The ens wheel, the requirement list for the target and the downloaded wheels; the names left out."""
    dest.mkdir()
    if request.ens_wheel is not None:
        ens_wheel = Path(shutil.copy2(request.ens_wheel, dest / Path(request.ens_wheel).name))
    else:
        note("building the ens wheel from this checkout")
        ens_wheel = build_ens_wheel(dest)
    requirements = requirements_for(requires_dist(ens_wheel), request.target)
    write_text(dest.parent / "requirements.txt", "\n".join(requirements) + "\n")
    note(f"downloading the wheels of {', '.join(requirements)} for {request.target.describe()}")
    fetched = fetch(requirements, request.target, dest, note)
    size = sum(p.stat().st_size for p in fetched)
    note(f"downloaded {len(fetched)} wheels ({size / 1e6:.1f} MB)")
    if not request.skip_preinstalled:
        return ()
    left = sorted(p for p in fetched if wheel_project(p.name) in KAGGLE_PREINSTALLED)
    for path in left:
        path.unlink()
    names = tuple(wheel_project(p.name) for p in left)
    note(f"left out {len(names)} packages Kaggle's image ships: {', '.join(names) or 'none'}")
    return names


def _move_into_place(work: Path, out: Path) -> None:
    """Rename the finished folder onto OUT (an empty OUT is replaced)."""
    with contextlib.suppress(FileNotFoundError):
        out.rmdir()
    os.replace(work, out)
