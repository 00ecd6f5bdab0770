"""The bundle's run.py: verify every file against bundle.json, install from wheels/ offline, predict.

This module is copied into each bundle as run.py, so it uses the standard library only; `ens bundle
--check` calls the same `bundle_problem`, so the check and the script agree on what a sound bundle is.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

MANIFEST = "bundle.json"
FORMAT = "ens-bundle/1"
CHECKED_FOLDERS = ("wheels", "models")


def file_digest(path: Path) -> str:
    """Hex sha256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(root: Path) -> dict:
    """bundle.json of the bundle at `root`; ValueError with one line when it is missing or malformed."""
    path = Path(root) / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(
            f"cannot read {str(path)!r} ({exc}); the folder is not a bundle made by `ens bundle`"
        ) from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ValueError(f"{str(path)!r} is not an ens bundle manifest (expected format {FORMAT!r})")
    return manifest


def bundle_problem(root: Path, manifest: dict) -> str | None:
    """One line naming the first file that is missing, changed or unexpected; None when all match."""
    root = Path(root)
    files = manifest.get("files", {})
    for name in sorted(files):
        path = root / name
        expected = files[name]
        if not path.is_file():
            return f"bundle file {name!r} is missing from {str(root)!r}; copy the whole bundle again"
        if path.stat().st_size != expected["size"] or file_digest(path) != expected["sha256"]:
            return (
                f"bundle file {name!r} changed since the bundle was made (sha256 "
                f"{file_digest(path)[:12]}…, bundled {expected['sha256'][:12]}…); "
                "rebuild it with `ens bundle`"
            )
    for folder in CHECKED_FOLDERS:
        for path in sorted((root / folder).rglob("*")):
            name = path.relative_to(root).as_posix()
            if path.is_file() and name not in files:
                return f"bundle file {name!r} is not in {MANIFEST}; remove it or rebuild with `ens bundle`"
    return None


def offline_env() -> dict:
    """The environment for pip: no PIP_* settings and no pip config files, so only wheels/ is used."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull
    return env


def install(root: Path, manifest: dict) -> None:
    """Install the requirements, then the ens wheel, into this Python from wheels/ without an index."""
    pip = [sys.executable, "-m", "pip", "install", "--no-index", "--disable-pip-version-check"]
    wheels = str(root / "wheels")
    steps = (
        [*pip, "--only-binary=:all:", "--find-links", wheels, "-r", str(root / "requirements.txt")],
        [*pip, "--no-deps", str(root / manifest["ens_wheel"])],
    )
    for command in steps:
        subprocess.run(command, check=True, env=offline_env())


def predict_command(root: Path, data: str, out: str, extra: list[str]) -> list[str]:
    """`ens predict` on `data` with the bundle's ensemble file and members, writing `out`."""
    models = root / "models"
    return [
        sys.executable, "-m", "ensemble", "predict",
        "--ensemble", str(models / "ensemble.json"), "--models-dir", str(models),
        "--data", data, "--out", out, *extra,
    ]  # fmt: skip


def main(argv: list[str], root: Path) -> int:
    """Verify, install, predict; a damaged bundle stops before anything is installed."""
    parser = argparse.ArgumentParser(description="Install ens from this bundle offline and predict.")
    parser.add_argument("data", help="a folder of images or a course-format .npz")
    parser.add_argument("--out", default="submission.csv", help="the CSV to write (default: %(default)s)")
    parser.add_argument("predict_args", nargs="*", help="more `ens predict` options, after --")
    args = parser.parse_args(argv)
    try:
        manifest = read_manifest(root)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    problem = bundle_problem(root, manifest)
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        return 1
    print(f"verified {len(manifest['files'])} files of {root}; installing from wheels/", flush=True)
    try:
        install(root, manifest)
    except subprocess.CalledProcessError as exc:
        print(f"error: pip install from wheels/ failed (exit {exc.returncode}); see pip's output above",
              file=sys.stderr)  # fmt: skip
        return 1
    print(f"predicting {args.data} -> {args.out}", flush=True)
    return subprocess.run(predict_command(root, args.data, args.out, args.predict_args)).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], Path(__file__).resolve().parent))
