"""The ensemble file written by `ens fit` and read by `ens predict` / `ens score`: members (with the
sha256 they were fitted with), fusion weights, TTA, cleanup thresholds and the fit's evidence.

`models/ensemble.json` (beside the members) is the default whenever `--members` is not given.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np

from ensemble.bounds import MAX_AREA, MAX_GAIN, MIN_GAIN
from ensemble.data.metrics import list_metrics
from ensemble.data.tta import list_tta
from ensemble.errors import EnsError
from ensemble.files.atomic import write_text
from ensemble.files.jsonfile import unique_keys
from ensemble.members.member import Member
from ensemble.members.store import parse_names, resolve_members

FILE_NAME = "ensemble.json"
FORMAT = "ens-ensemble/1"


@dataclass(frozen=True)
class EnsembleSpec:
    """What to run: member names and hashes, (M, C) weights, TTA, (C,) min_area and decoding gains;
    `dropped` names the members the fit gave weight 0 everywhere, left out because they cannot
    change a fused score."""

    members: tuple[str, ...]
    member_sha256: tuple[str, ...]
    weights: tuple[tuple[float, ...], ...]
    tta: str
    min_area: tuple[int, ...]
    class_gain: tuple[float, ...] = ()
    connectivity: int = 4
    metric: str = "course"
    dropped: tuple[str, ...] = ()
    fit: dict = field(default_factory=dict)

    def weight_matrix(self) -> np.ndarray:
        return np.asarray(self.weights, np.float64)

    def gain_vector(self) -> np.ndarray:
        """(C,) decoding gains; all ones for files without gains."""
        return np.asarray(self.class_gain, np.float64) if self.class_gain else np.ones(len(self.min_area))

    def without_idle(self) -> EnsembleSpec:
        """The spec without its members whose weights are all 0, named in `dropped`: a zero weight
        adds exactly 0 to every fused score, so the labels stay byte-identical while those members
        are never run. Unchanged when no member (or every member) has only zero weights."""
        idle = ~self.weight_matrix().any(axis=1)
        if not idle.any() or idle.all():
            return self
        keep = np.flatnonzero(~idle)
        return replace(
            self,
            members=tuple(self.members[i] for i in keep),
            member_sha256=tuple(self.member_sha256[i] for i in keep),
            weights=tuple(self.weights[i] for i in keep),
            dropped=(*self.dropped, *(self.members[i] for i in np.flatnonzero(idle))),
        )

    def check_members(self, members: list[Member], path: Path) -> None:
        """Refuse members whose files changed since the fit: the weights belong to those exact files."""
        for member, name, sha in zip(members, self.members, self.member_sha256, strict=True):
            if member.sha256 != sha:
                raise EnsError(
                    f"member {name!r} ({member.path}) changed since {path} was fitted "
                    f"(sha256 {member.sha256[:12]}…, fitted {sha[:12]}…); re-run `ens fit` or pass --members"
                )

    def to_json(self) -> str:
        """The file's text; `dropped` only when members were left out, so readers that predate it
        still read every other file."""
        content = {"format": FORMAT, **asdict(self)}
        if not self.dropped:
            del content["dropped"]
        return json.dumps(content, indent=2) + "\n"


def default_path(store: Path) -> Path:
    return Path(store) / FILE_NAME


def write_spec(path: Path, spec: EnsembleSpec) -> Path:
    write_text(path, spec.to_json())
    return Path(path)


def read_spec(path: Path) -> EnsembleSpec:
    """Parse an ensemble file, with one-line errors for missing, malformed or out-of-range fields.

    Every field is checked for its exact JSON type and range (8.9 is not an area, `true` is not a
    weight, a repeated key is not overwritten) and a field this reader does not know is refused.
    """
    path = Path(path)
    try:
        raw = json.loads(path.read_bytes().decode("utf-8"), object_pairs_hook=unique_keys)
    except FileNotFoundError:
        raise EnsError(f"ensemble file {str(path)!r} does not exist; write one with `ens fit`") from None
    except (OSError, ValueError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise EnsError(
            f"cannot read ensemble file {str(path)!r} ({reason}); re-create it with `ens fit`"
        ) from exc
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        found = raw.get("format") if isinstance(raw, dict) else type(raw).__name__
        raise EnsError(f"{str(path)!r} is not an ens ensemble file (format {found!r}, expected {FORMAT!r})")
    unknown = sorted(set(raw) - {"format", *FIELDS})
    if unknown:
        raise EnsError(
            f"ensemble file {str(path)!r} has unknown field {unknown[0]!r}; the fields are "
            f"{', '.join(FIELDS)}; remove it or re-create the file with `ens fit`"
        )
    field_of = _FieldReader(path, raw)
    spec = EnsembleSpec(
        members=field_of.names("members"),
        member_sha256=field_of.hashes("member_sha256"),
        weights=field_of.weights("weights"),
        tta=field_of.choice("tta", list_tta()),
        min_area=tuple(field_of.ints("min_area", 0, MAX_AREA)),
        class_gain=tuple(field_of.numbers("class_gain", MIN_GAIN, MAX_GAIN, default=())),
        connectivity=field_of.choice("connectivity", [4, 8], default=4),
        metric=field_of.choice("metric", list_metrics(), default="course"),
        dropped=field_of.names("dropped", default=[]),
        fit=field_of.object("fit"),
    )
    if len(spec.members) != len(spec.weights) or len(spec.members) != len(spec.member_sha256):
        raise EnsError(
            f"ensemble file {str(path)!r} lists {len(spec.members)} members but {len(spec.weights)} weight "
            f"rows and {len(spec.member_sha256)} hashes; re-create it with `ens fit`"
        )
    return spec


FIELDS = tuple(f.name for f in fields(EnsembleSpec))
_REQUIRED = ("members", "member_sha256", "weights", "tta", "min_area")


def _short(value) -> str:
    """A received value for an error message: JSON, cut to 60 characters."""
    try:
        text = json.dumps(value)
    except RecursionError:
        text = "a deeply nested value"
    return text if len(text) <= 60 else text[:57] + "..."


class _FieldReader:
    """Typed access to the fields of a parsed ensemble file, each refusal naming file and field."""

    def __init__(self, path: Path, raw: dict) -> None:
        self.path, self.raw = path, raw

    def _get(self, name: str, default):
        if name not in self.raw:
            if name in _REQUIRED:
                raise EnsError(
                    f"ensemble file {str(self.path)!r} has no {name!r} field; re-create it with `ens fit`"
                )
            return default
        return self.raw[name]

    def _refuse(self, name: str, value, expected: str) -> EnsError:
        return EnsError(
            f"ensemble file {str(self.path)!r}: {name!r} is {_short(value)}; expected {expected}; "
            "fix the field or re-create the file with `ens fit`"
        )

    def _list(self, name: str, default=None) -> list:
        value = self._get(name, default)
        if not isinstance(value, list):
            raise self._refuse(name, value, "a JSON list")
        return value

    def names(self, name: str, default=None) -> tuple[str, ...]:
        value = self._list(name, default)
        empty = not value and default is None
        if empty or not all(isinstance(v, str) and v for v in value) or len(set(value)) != len(value):
            raise self._refuse(name, value, "a list of distinct member names")
        return tuple(value)

    def hashes(self, name: str) -> tuple[str, ...]:
        value = self._list(name)
        if not all(isinstance(v, str) and len(v) == 64 and set(v) <= set(_HEX) for v in value):
            raise self._refuse(name, value, "a list of sha256 hex digests (64 characters 0-9a-f)")
        return tuple(value)

    def ints(self, name: str, low: int, high: int) -> list[int]:
        value = self._list(name)
        if not all(type(v) is int and low <= v <= high for v in value):
            raise self._refuse(name, value, f"a list of whole numbers in {low}..{high} (no fractions)")
        return value

    def numbers(self, name: str, low: float, high: float, default=None) -> list[float]:
        value = self._list(name, default)
        if not all(_is_number(v) and low <= v <= high for v in value):
            raise self._refuse(name, value, f"a list of numbers in {low:g}..{high:g}")
        return [float(v) for v in value]

    def weights(self, name: str) -> tuple[tuple[float, ...], ...]:
        rows = self._list(name)
        if not all(isinstance(row, list) and len(row) == len(rows[0]) for row in rows):
            raise self._refuse(name, rows, "one list of per-class weights per member, all of one length")
        if not all(_is_number(v) and v >= 0 for row in rows for v in row):
            raise self._refuse(name, rows, "finite numbers >= 0")
        return tuple(tuple(float(v) for v in row) for row in rows)

    def choice(self, name: str, allowed: list, default=None):
        value = self._get(name, default)
        if type(value) not in {type(a) for a in allowed} or value not in allowed:
            raise self._refuse(name, value, f"one of {', '.join(json.dumps(a) for a in allowed)}")
        return value

    def object(self, name: str) -> dict:
        value = self._get(name, {})
        if not isinstance(value, dict):
            raise self._refuse(name, value, "a JSON object (the fit's evidence)")
        return value


_HEX = "0123456789abcdef"


def _is_number(value) -> bool:
    """A finite JSON number; true/false are not numbers."""
    return type(value) in (int, float) and math.isfinite(value)


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
    spec = spec.without_idle()
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
