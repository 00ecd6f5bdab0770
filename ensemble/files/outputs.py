"""No command writes over one of its own inputs: output paths are checked against the run's inputs
before any work starts, through symlinks and hard links (same device and inode). A folder input
covers every file under it, and no output may lie inside it."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ensemble.errors import EnsError
from ensemble.files.atomic import check_target

Named = Mapping[str, str | os.PathLike | Iterable[str | os.PathLike] | None]


def refuse_overwrite(outputs: Named, inputs: Named) -> None:
    """Raise EnsError when an output path is an existing input file (or a file under an input
    folder), lies inside an input folder, two outputs are one file, or an output cannot take a file
    at all (it is a folder, or lies under a file).

    Both mappings go from a label the user recognises (`--out`, `member 'unet'`) to a path, a list
    of paths, or None (absent). An output that does not exist yet cannot clobber a file, but one
    inside an input folder would still change that input.
    """
    ins = list(_flatten(inputs))
    outs = list(_flatten(outputs))
    folders = [(label, path) for label, path in ins if path.is_dir()]
    for out_label, out in outs:
        _refuse_inside(out_label, out, folders)
    files = _input_files(ins) if any(out.exists() for _, out in outs) else {}
    for index, (out_label, out) in enumerate(outs):
        if not out.exists():
            continue
        found = files.get(_identity(out))
        if found is not None:
            in_label, source = found
            raise EnsError(
                f"{out_label} {str(out)!r} is the same file as {in_label} {str(source)!r}; "
                f"writing it would destroy that input; choose another path for {out_label}"
            )
        for other_label, other in outs[index + 1 :]:
            if other.exists() and _same(out, other):
                raise EnsError(
                    f"{out_label} {str(out)!r} and {other_label} {str(other)!r} are the same file; "
                    "give each output its own path"
                )
    _refuse_equal_new(outs)
    for _, out in outs:
        check_target(out)


def refuse_cache_folder(label: str, folder: Path, inputs: Named) -> None:
    """Raise EnsError when a folder the run writes into (a cache) is an input folder, lies inside one,
    or holds an input: its entries would land among the files the run reads."""
    ins = list(_flatten(inputs))
    _refuse_inside(label, folder, [(name, path) for name, path in ins if path.is_dir()])
    if not folder.is_dir():
        return
    real = Path(os.path.realpath(folder))
    for in_label, path in ins:
        if real in Path(os.path.realpath(path)).parents:
            raise EnsError(
                f"{label} {str(folder)!r} holds {in_label} {str(path)!r}, a file the run reads; cache "
                f"entries would be written among the inputs; choose a folder of its own for {label}"
            )


def _refuse_inside(out_label: str, out: Path, folders: list[tuple[str, Path]]) -> None:
    """An output that is an input folder, or lies under one (through symlinks too), would change it."""
    if not folders:
        return
    real = Path(os.path.realpath(out))
    around = {_identity(path) for path in (real, *real.parents) if path.exists()}
    for in_label, folder in folders:
        if _identity(folder) not in around:
            continue
        where = "is" if _identity(out) == _identity(folder) else "is inside"
        raise EnsError(
            f"{out_label} {str(out)!r} {where} {in_label} {str(folder)!r}, a folder the run reads; "
            f"writing there would change that input; choose a path outside it for {out_label}"
        )


def _input_files(ins: list[tuple[str, Path]]) -> dict[tuple[int, int], tuple[str, Path]]:
    """Every input file by (device, inode), a folder input's files found by walking it (a symlinked
    file counts as the file it points to)."""
    files: dict[tuple[int, int], tuple[str, Path]] = {}
    for label, path in ins:
        candidates = _walk(path) if path.is_dir() else [path]
        for candidate in candidates:
            key = _identity(candidate)
            if key is not None:
                files.setdefault(key, (label, candidate))
    return files


def _walk(folder: Path) -> Iterable[Path]:
    for root, _, names in os.walk(folder):
        for name in names:
            yield Path(root) / name


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        stat = os.stat(path)
    except (OSError, ValueError):  # ValueError: a NUL byte in the name
        return None
    return stat.st_dev, stat.st_ino


def run_inputs(
    data: Any = None, members: Sequence[Any] = (), ensemble: Path | None = None, split: Any = None
):
    """The input files of a prediction-like run, labelled for `refuse_overwrite`: the data file
    (a DataFile, an image folder or a path), each member (`.name`, `.path`) and its external data
    files (`.external_data`), the ensemble file and the --val-ids file."""
    named: dict[str, Any] = (
        dict(data.input_paths()) if hasattr(data, "input_paths") else {"--data": getattr(data, "path", data)}
    )
    for member in members:
        named[f"member {member.name!r}"] = member.path
        named[f"the external data of member {member.name!r}"] = list(member.external_data)
    named["the ensemble file"] = ensemble
    named["--val-ids"] = getattr(split, "ids_file", None)
    return named


def _refuse_equal_new(outs: list[tuple[str, Path]]) -> None:
    seen: dict[str, str] = {}
    for label, path in outs:
        key = os.path.realpath(path)
        if key in seen:
            raise EnsError(
                f"{label} {str(path)!r} and {seen[key]} name the same file; give each output its own path"
            )
        seen[key] = label


def _flatten(named: Named) -> Iterable[tuple[str, Path]]:
    for label, value in named.items():
        if value is None:
            continue
        for item in [value] if isinstance(value, str | os.PathLike) else value:
            path = Path(item)
            if "\0" in str(path):
                raise EnsError(
                    f"{label} {str(path)!r} holds a NUL character, which no file name can; fix the path"
                )
            yield label, path


def _same(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False
