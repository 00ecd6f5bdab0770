"""What a compiled graph was built from, recorded in its ONNX metadata, and whether a run matches it.

The stamp holds the sha256 of the ensemble file and of every member, and the settings baked into
the graph (TTA, normalised weights, class gains, allow_background, input channels). A graph whose
stamp differs from the run's in any of them is stale for that run and is not used. The file is
sealed: its metadata also holds the sha256 of its own bytes (that value zeroed), checked before the
graph is used, so a graph edited after `ens compile` (weights zeroed, outputs replaced) never runs.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import onnx

from ensemble.errors import EnsError, first_line
from ensemble.files.hashing import bytes_sha256, file_sha256
from ensemble.files.jsonfile import JsonProblem, loads_object
from ensemble.inference.fusion import gain_array, normalise_weights
from ensemble.inference.options import PredictOptions
from ensemble.members.member import Member

FORMAT = "ens-compiled/1"
METADATA_KEY = "ens.compiled"
SEAL_KEY = "ens.compiled.sha256"
FOLDER = "compiled"
_BLANK = "0" * 64
_HEX = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class GraphStamp:
    """The inputs and settings of one compiled graph."""

    ensemble_sha256: str
    members: tuple[str, ...]
    member_sha256: tuple[str, ...]
    tta: str
    weights: tuple[tuple[float, ...], ...]
    class_gain: tuple[float, ...]
    allow_background: bool
    channels: int

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT, **asdict(self)}, sort_keys=True)

    def mismatch(self, wanted: GraphStamp) -> str | None:
        """Why a run wanting `wanted` cannot use this graph, or None when it can."""
        if self.ensemble_sha256 != wanted.ensemble_sha256:
            return "the ensemble file changed since the graph was compiled"
        if self.members != wanted.members:
            return f"it fuses members {','.join(self.members)}, the run {','.join(wanted.members)}"
        for name, have, want in zip(self.members, self.member_sha256, wanted.member_sha256, strict=True):
            if have != want:
                return f"member {name!r} changed since the graph was compiled"
        labels = {
            "tta": f"--tta {wanted.tta} differs from its {self.tta}",
            "weights": "the run's weights differ from its weights",
            "class_gain": "the run's class gains differ from its gains",
            "allow_background": f"--allow-background is {'on' if wanted.allow_background else 'off'} in the "
            f"run, {'on' if self.allow_background else 'off'} in the graph",
            "channels": f"it takes {self.channels} input channel(s), the members {wanted.channels}",
        }
        for name, reason in labels.items():
            if getattr(self, name) != getattr(wanted, name):
                return reason
        return None


def wanted_stamp(members: list[Member], options: PredictOptions, ensemble_file: Path) -> GraphStamp:
    """The stamp a graph needs to serve a run of `members` with resolved `options`."""
    n_members, n_classes = len(members), members[0].n_classes
    weights = normalise_weights(
        np.ones(n_members) if options.weights is None else options.weights, n_members, n_classes
    )
    return GraphStamp(
        ensemble_sha256=file_sha256(ensemble_file),
        members=tuple(m.name for m in members),
        member_sha256=tuple(m.sha256 for m in members),
        tta=options.tta,
        weights=tuple(tuple(float(w) for w in row) for row in weights),
        class_gain=tuple(float(g) for g in gain_array(options.class_gain, n_classes)),
        allow_background=bool(options.allow_background),
        channels=members[0].channels,
    )


def graph_path(ensemble_file: Path) -> Path:
    """Where `ens compile` writes the graph of an ensemble file by default: `compiled/<stem>.onnx`
    beside it (a folder, so the member store's `*.onnx` listing never takes it for a member)."""
    ensemble_file = Path(ensemble_file)
    return ensemble_file.parent / FOLDER / f"{ensemble_file.stem}.onnx"


def stamp_model(model: onnx.ModelProto, stamp: GraphStamp) -> bytes:
    """Record `stamp` in the model's metadata_props and serialise it, sealed: SEAL_KEY holds the
    sha256 of the bytes with that value zeroed, so any later change to the file is seen."""
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, stamp.to_json()
    seal = model.metadata_props.add()
    seal.key, seal.value = SEAL_KEY, _BLANK
    data = model.SerializeToString()  # ValueError above 2 GiB
    blank = _seal_entry(_BLANK)
    if data.count(blank) != 1:
        raise EnsError("cannot seal the compiled graph (its seal is not unique in it); use --graph pipeline")
    at = data.index(blank)
    digest = bytes_sha256(data)
    return data[:at] + _seal_entry(digest) + data[at + len(blank) :]


def read_graph(path: Path) -> tuple[bytes, GraphStamp]:
    """The bytes and stamp of a compiled graph file whose seal matches its content; one-line errors
    for a file that is not one, or that changed after `ens compile` wrote it."""
    hint = "re-create it with `ens compile`"
    try:
        data = Path(path).read_bytes()
        model = onnx.load_model_from_string(data)
    except Exception as exc:  # protobuf's DecodeError, OSError
        raise EnsError(f"cannot read compiled graph {str(path)!r} ({first_line(exc, 120)}); {hint}") from exc
    props = {p.key: p.value for p in model.metadata_props}
    if SEAL_KEY not in props:
        raise EnsError(
            f"compiled graph {str(path)!r} records no sha256 of its content ({SEAL_KEY!r}); {hint}"
        )
    if not _sealed(data, props[SEAL_KEY]):
        raise EnsError(
            f"compiled graph {str(path)!r} changed after `ens compile` wrote it (its content does not "
            f"match the sha256 in its {SEAL_KEY!r} metadata); {hint}"
        )
    try:
        stamp = parse_stamp(props.get(METADATA_KEY, ""))
    except JsonProblem as exc:
        raise EnsError(
            f"{str(path)!r} is not a compiled ensemble graph of this version ({METADATA_KEY!r} metadata: "
            f"{exc}); {hint}"
        ) from exc
    return data, stamp


def read_stamp(path: Path) -> GraphStamp:
    """The stamp of a compiled graph file (checked against its seal; see `read_graph`)."""
    return read_graph(path)[1]


def _seal_entry(value: str) -> bytes:
    return onnx.StringStringEntryProto(key=SEAL_KEY, value=value).SerializeToString()


def _sealed(data: bytes, digest: str) -> bool:
    """True when `digest` is the sha256 of `data` with its seal entry blanked."""
    if not _HEX.fullmatch(digest):
        return False
    entry = _seal_entry(digest)
    if data.count(entry) != 1:
        return False
    at, view = data.index(entry), memoryview(data)
    return bytes_sha256(view[:at], _seal_entry(_BLANK), view[at + len(entry) :]) == digest


def parse_stamp(text: str) -> GraphStamp:
    """A stamp from its JSON text; JsonProblem naming the first field that is not what
    `GraphStamp.to_json` writes."""
    raw = loads_object(text)
    if raw.get("format") != FORMAT:
        raise JsonProblem(f"format {_clip(raw.get('format'))}, expected {FORMAT!r}")
    names = {f.name for f in fields(GraphStamp)}
    if set(raw) != names | {"format"}:
        extra = sorted(set(raw) - names - {"format"}) or sorted(names - set(raw))
        raise JsonProblem(f"field {extra[0]!r} is unexpected or missing")
    checks = {
        "ensemble_sha256": (lambda v: isinstance(v, str) and _HEX.fullmatch(v), "a sha256"),
        "members": (lambda v: _list_of(v, lambda n: isinstance(n, str) and n), "a list of names"),
        "member_sha256": (
            lambda v: (
                _list_of(v, lambda h: isinstance(h, str) and _HEX.fullmatch(h))
                and len(v) == len(raw["members"])
            ),
            "one sha256 per member",
        ),
        "tta": (lambda v: isinstance(v, str), "a TTA name"),
        "weights": (lambda v: _list_of(v, lambda row: _list_of(row, _is_number)), "lists of numbers"),
        "class_gain": (lambda v: _list_of(v, _is_number), "a list of numbers"),
        "allow_background": (lambda v: isinstance(v, bool), "true or false"),
        "channels": (lambda v: type(v) is int and v > 0, "a positive integer"),
    }
    for name, (valid, expected) in checks.items():
        if not valid(raw[name]):
            raise JsonProblem(f"{name!r} is {_clip(raw[name])}, expected {expected}")
    return GraphStamp(
        ensemble_sha256=raw["ensemble_sha256"],
        members=tuple(raw["members"]),
        member_sha256=tuple(raw["member_sha256"]),
        tta=raw["tta"],
        weights=tuple(tuple(float(w) for w in row) for row in raw["weights"]),
        class_gain=tuple(float(g) for g in raw["class_gain"]),
        allow_background=raw["allow_background"],
        channels=raw["channels"],
    )


def _list_of(value, valid) -> bool:
    return isinstance(value, list) and all(valid(item) for item in value)


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _clip(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."
