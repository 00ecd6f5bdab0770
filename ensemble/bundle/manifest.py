"""bundle.json: what a bundle holds (every file's sha256 and size), for which target, made how; and
`ens bundle --check`, which re-verifies the files and resolves the wheels offline for the target."""

from __future__ import annotations

import json
import sys
import tempfile
import zipfile
from pathlib import Path

import ensemble
from ensemble.bundle.preinstalled import wheel_project
from ensemble.bundle.runscript import FORMAT, MANIFEST, bundle_problem, offline_env, read_manifest
from ensemble.bundle.target import Target, make_target, pip_target_args
from ensemble.bundle.wheels import run_pip
from ensemble.errors import EnsError
from ensemble.files.atomic import write_text
from ensemble.files.hashing import file_sha256


def file_table(root: Path) -> dict[str, dict]:
    """Every file below `root` but bundle.json: relative path -> sha256 and size, sorted by path."""
    table = {}
    for path in sorted(p for p in Path(root).rglob("*") if p.is_file()):
        name = path.relative_to(root).as_posix()
        if name != MANIFEST:
            table[name] = {"sha256": file_sha256(path), "size": path.stat().st_size}
    return table


def wheel_versions(root: Path) -> dict[str, str]:
    """Project -> version of each wheel in the bundle's wheels/."""
    return {
        wheel_project(p.name): p.name.split("-")[1] for p in sorted((Path(root) / "wheels").glob("*.whl"))
    }


def write_manifest(root: Path, fields: dict) -> Path:
    """Write bundle.json with `fields` and the file table of everything else in `root`."""
    manifest = {
        "format": FORMAT,
        "ens_version": ensemble.__version__,
        **fields,
        "versions": {"builder_python": sys.version.split()[0], "wheels": wheel_versions(root)},
        "files": file_table(root),
    }
    path = Path(root) / MANIFEST
    write_text(path, json.dumps(manifest, indent=2) + "\n")
    return path


def check_bundle(path: Path) -> str:
    """Verify a bundle folder (or its .zip): every hash, then an offline resolve of its wheels for its
    target. Returns a summary line; an EnsError names the first file or wheel that fails."""
    path = Path(path)
    if path.is_file() and zipfile.is_zipfile(path):
        with tempfile.TemporaryDirectory(prefix="ens-bundle-check-") as tmp:
            with zipfile.ZipFile(path) as archive:
                archive.extractall(tmp)
            return check_bundle(Path(tmp)).replace(tmp, str(path))
    if not path.is_dir():
        raise EnsError(f"--check {str(path)!r} is not a bundle folder or .zip; give the OUT of `ens bundle`")
    try:
        manifest = read_manifest(path)
    except ValueError as exc:
        raise EnsError(str(exc)) from None
    problem = bundle_problem(path, manifest)
    if problem is not None:
        raise EnsError(problem)
    target = make_target(**{k: manifest["target"].get(k) for k in ("python", "platform", "runtime")})
    skipped = manifest.get("preinstalled", [])
    resolve_offline(path, target, path / manifest["ens_wheel"], bool(skipped))
    assumed = f"; {len(skipped)} packages left to the image: {', '.join(skipped)}" if skipped else ""
    return (
        f"bundle {str(path)!r} is sound: the sha256 of its {len(manifest['files'])} files match, "
        "the wheels resolve offline for "
        f"{target.describe()}{assumed}"
    )


def resolve_offline(root: Path, target: Target, ens_wheel: Path, preinstalled: bool) -> None:
    """pip resolves requirements.txt (and the ens wheel) from wheels/ alone for `target`, installing nothing.

    `pip download` into a temp folder, since `pip install --dry-run` checks Requires-Python against the
    running Python whatever --python-version says.

    A bundle that left preinstalled packages out cannot resolve their dependents offline, so each of
    its wheels is then checked on its own (right Python, ABI and platform) instead.
    """
    wheels = root / "wheels"
    with tempfile.TemporaryDirectory(prefix="ens-bundle-resolve-") as tmp:
        base = [sys.executable, "-m", "pip", "download", "--no-index", "--disable-pip-version-check"]
        base += ["--progress-bar", "off", "--find-links", str(wheels), "--dest", tmp]
        base += pip_target_args(target)
        what = f"resolve the wheels of {str(root)!r} offline for {target.describe()}"
        hint = "rebuild the bundle with `ens bundle`"
        if preinstalled:
            runs = [["--no-deps", *map(str, sorted(wheels.glob("*.whl")))]]
        else:
            runs = [["-r", str(root / "requirements.txt")], ["--no-deps", str(ens_wheel)]]
        for args in runs:
            run_pip([*base, *args], what, env=offline_env(), hint=hint)
