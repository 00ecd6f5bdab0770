"""The ensemble file written by `ens fit` and read by `ens predict` / `ens score`: members (with the
sha256 they were fitted with), fusion weights, TTA, cleanup thresholds and the fit's evidence.

`models/ensemble.json` (beside the members) is the default whenever `--members` is not given.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ensemble.atomic import write_text
from ensemble.errors import EnsError
from ensemble.member import Member
from ensemble.store import parse_names, resolve_members

FILE_NAME = "ensemble.json"
FORMAT = "ens-ensemble/1"


@dataclass(frozen=True)
class EnsembleSpec:
    """What to run: member names and hashes, (M, C) weights, TTA, (C,) min_area and decoding gains."""

    members: tuple[str, ...]
    member_sha256: tuple[str, ...]
    weights: tuple[tuple[float, ...], ...]
    tta: str
    min_area: tuple[int, ...]
    class_gain: tuple[float, ...] = ()
    connectivity: int = 4
    metric: str = "course"
    fit: dict = field(default_factory=dict)

    def weight_matrix(self) -> np.ndarray:
        return np.asarray(self.weights, np.float64)

    def gain_vector(self) -> np.ndarray:
        """(C,) decoding gains; all ones for files without gains."""
        return np.asarray(self.class_gain, np.float64) if self.class_gain else np.ones(len(self.min_area))

    def check_members(self, members: list[Member], path: Path) -> None:
        """Refuse members whose files changed since the fit: the weights belong to those exact files."""
        for member, name, sha in zip(members, self.members, self.member_sha256, strict=True):
            if member.sha256 != sha:
                raise EnsError(
                    f"member {name!r} ({member.path}) changed since {path} was fitted "
                    f"(sha256 {member.sha256[:12]}…, fitted {sha[:12]}…); re-run `ens fit` or pass --members"
                )

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT, **asdict(self)}, indent=2) + "\n"


def default_path(store: Path) -> Path:
    return Path(store) / FILE_NAME


def write_spec(path: Path, spec: EnsembleSpec) -> Path:
    write_text(path, spec.to_json())
    return Path(path)


def read_spec(path: Path) -> EnsembleSpec:
    """Parse an ensemble file, with one-line errors for missing or malformed files."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise EnsError(f"ensemble file {str(path)!r} does not exist; write one with `ens fit`") from None
    except (OSError, ValueError) as exc:
        raise EnsError(
            f"cannot read ensemble file {str(path)!r} ({exc}); re-create it with `ens fit`"
        ) from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        found = raw.get("format") if isinstance(raw, dict) else type(raw).__name__
        raise EnsError(f"{str(path)!r} is not an ens ensemble file (format {found!r}, expected {FORMAT!r})")
    try:
        spec = EnsembleSpec(
            members=tuple(raw["members"]),
            member_sha256=tuple(raw["member_sha256"]),
            weights=tuple(tuple(float(v) for v in row) for row in raw["weights"]),
            tta=str(raw["tta"]),
            min_area=tuple(int(v) for v in raw["min_area"]),
            class_gain=tuple(float(v) for v in raw.get("class_gain", ())),
            connectivity=int(raw.get("connectivity", 4)),
            metric=str(raw.get("metric", "course")),
            fit=dict(raw.get("fit", {})),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise EnsError(
            f"ensemble file {str(path)!r} is incomplete ({exc!r}); re-create it with `ens fit`"
        ) from None
    if len(spec.members) != len(spec.weights) or len(spec.members) != len(spec.member_sha256):
        raise EnsError(
            f"ensemble file {str(path)!r} lists {len(spec.members)} members but not as many weights"
        )
    return spec


def resolve_ensemble(
    members: str | None, ensemble: Path | None, store: Path
) -> tuple[list[Member], EnsembleSpec | None, Path | None]:
    """The members to run and the fitted spec that goes with them, if any.

    An explicit `--ensemble` file wins; without `--members`, `<store>/ensemble.json` is used when it
    exists; otherwise `--members` (or the whole store) with no spec.
    """
    path = Path(ensemble) if ensemble is not None else None
    if path is None and members is None and default_path(store).is_file():
        path = default_path(store)
    if path is None:
        return resolve_members(members, store), None, None
    spec = read_spec(path)
    if members is not None and parse_names(members) != list(spec.members):
        raise EnsError(
            f"--members {members!r} differs from the members of {str(path)!r} ({','.join(spec.members)}); "
            "drop one of the two options"
        )
    found = resolve_members(list(spec.members), store)
    spec.check_members(found, path)
    n_classes = found[0].n_classes
    sizes = [len(spec.min_area), *(len(row) for row in spec.weights), len(spec.class_gain) or n_classes]
    if any(size != n_classes for size in sizes):
        raise EnsError(
            f"ensemble file {str(path)!r} was fitted for another class count than the members' {n_classes}; "
            "re-run `ens fit`"
        )
    return found, spec, path
