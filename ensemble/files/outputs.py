"""No command writes over one of its own inputs: output paths are checked against the run's inputs
before any work starts, through symlinks and hard links (`os.path.samefile`)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ensemble.errors import EnsError
from ensemble.files.atomic import check_target

Named = Mapping[str, str | os.PathLike | Iterable[str | os.PathLike] | None]


def refuse_overwrite(outputs: Named, inputs: Named) -> None:
    """Raise EnsError when an output path is an existing input file, two outputs are one file, or an
    output cannot take a file at all (it is a folder, or lies under a file).

    Both mappings go from a label the user recognises (`--out`, `member 'unet'`) to a path, a list
    of paths, or None (absent). An output that does not exist yet cannot clobber anything.
    """
    ins = list(_flatten(inputs))
    outs = list(_flatten(outputs))
    for index, (out_label, out) in enumerate(outs):
        if not out.exists():
            continue
        for in_label, source in ins:
            if source.exists() and _same(out, source):
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


def run_inputs(
    data: Any = None, members: Sequence[Any] = (), ensemble: Path | None = None, split: Any = None
):
    """The input files of a prediction-like run, labelled for `refuse_overwrite`: the data file
    (a DataFile, an image folder or a path), each member (`.name`, `.path`), the ensemble file and
    the --val-ids file."""
    named: dict[str, Any] = (
        dict(data.input_paths()) if hasattr(data, "input_paths") else {"--data": getattr(data, "path", data)}
    )
    named.update({f"member {member.name!r}": member.path for member in members})
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
        if isinstance(value, str | os.PathLike):
            yield label, Path(value)
        else:
            for item in value:
                yield label, Path(item)


def _same(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False
