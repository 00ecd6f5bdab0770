"""Wheels for a bundle: the ens wheel built from this checkout, and every dependency downloaded by
pip's own resolver for the target (binary wheels only), pip's output kept out of the way."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from email.parser import Parser
from pathlib import Path

import ensemble
from ensemble.bundle.target import Target, pip_target_args
from ensemble.errors import EnsError

Note = Callable[[str], None]
SOURCE_FILES = ("pyproject.toml", "README.md")
IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build", "dist")


def project_root() -> Path:
    """The source checkout this ens runs from; an EnsError when ens is installed without one."""
    root = Path(ensemble.__file__).resolve().parent.parent
    pyproject = root / "pyproject.toml"
    if not pyproject.is_file() or 'name = "ens"' not in pyproject.read_text(encoding="utf-8"):
        raise EnsError(
            f"ens at {str(root)!r} is installed without its source checkout, which `ens bundle` builds "
            "the ens wheel from; install ens from a checkout (pip install -e .) and run it again"
        )
    return root


def build_ens_wheel(dest: Path) -> Path:
    """Build the ens wheel of this checkout into `dest` (from a copy, so the checkout gains no build/)."""
    root = project_root()
    with tempfile.TemporaryDirectory(prefix="ens-wheel-") as tmp:
        source = Path(tmp) / "src"
        source.mkdir()
        for name in SOURCE_FILES:
            shutil.copy2(root / name, source / name)
        for package in ("ensemble", "exporters", "zoo"):
            if (root / package).is_dir():
                shutil.copytree(root / package, source / package, ignore=IGNORED)
        command = [sys.executable, "-m", "pip", "wheel", "--no-deps"]
        if importlib.util.find_spec("setuptools") is not None:  # offline; else pip fetches the backend
            command.append("--no-build-isolation")
        run_pip([*command, "--wheel-dir", str(Path(tmp) / "out"), str(source)], "build the ens wheel")
        built = sorted((Path(tmp) / "out").glob("ens-*.whl"))
        if len(built) != 1:
            raise EnsError("pip built no ens wheel from the checkout; run `pip wheel --no-deps .` to see why")
        return Path(shutil.copy2(built[0], Path(dest) / built[0].name))


def requires_dist(wheel: Path) -> list[str]:
    """The Requires-Dist lines of a wheel's METADATA."""
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = Parser().parsestr(archive.read(name).decode("utf-8"))
    return metadata.get_all("Requires-Dist") or []


def download(requirements: list[str], target: Target, dest: Path, note: Note) -> list[Path]:
    """Download the wheels of `requirements` and everything they need on `target` into `dest`."""
    Path(dest).mkdir(parents=True, exist_ok=True)
    before = set(Path(dest).iterdir())
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--disable-pip-version-check",
        "--progress-bar",
        "off",
    ]
    command += [*pip_target_args(target), "--dest", str(dest), *requirements]
    run_pip(command, f"download the wheels for {target.describe()}", note)
    return sorted(set(Path(dest).iterdir()) - before)


def run_pip(
    command: list[str],
    what: str,
    note: Note | None = None,
    env: dict | None = None,
    hint: str = "check the target and the network, or run pip by hand",
) -> str:
    """Run pip, passing its `Collecting` lines to `note`; an EnsError quotes pip's error when it fails."""
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, bufsize=1
    )
    lines = []
    assert process.stdout is not None
    for line in process.stdout:
        lines.append(line.rstrip())
        if note is not None and line.startswith("Collecting "):
            note(f"  {line.split()[1]}")
    if process.wait() != 0:
        errors = [line for line in lines if line.startswith("ERROR:")] or [x for x in lines if x.strip()][-1:]
        reason = errors[0].removeprefix("ERROR: ") if errors else f"exit {process.returncode}"
        raise EnsError(f"pip could not {what}: {reason}; {hint}")
    return "\n".join(lines)
