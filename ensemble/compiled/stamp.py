"""What a compiled graph was built from, recorded in its ONNX metadata, and whether a run matches it.

The stamp holds the sha256 of the ensemble file and of every member, and the settings baked into
the graph (TTA, normalised weights, class gains, allow_background, input channels). A graph whose
stamp differs from the run's in any of them is stale for that run and is not used.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import onnx

from ensemble.errors import EnsError
from ensemble.files.hashing import file_sha256
from ensemble.inference.fusion import gain_array, normalise_weights
from ensemble.inference.options import PredictOptions
from ensemble.members.member import Member

FORMAT = "ens-compiled/1"
METADATA_KEY = "ens.compiled"
FOLDER = "compiled"


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


def stamp_model(model: onnx.ModelProto, stamp: GraphStamp) -> None:
    """Record `stamp` in the model's metadata_props."""
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, stamp.to_json()


def read_stamp(path: Path) -> GraphStamp:
    """The stamp of a compiled graph file; one-line errors for a file that is not one."""
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError, OSError
        raise EnsError(
            f"cannot read compiled graph {str(path)!r} ({exc}); re-create it with `ens compile`"
        ) from exc
    props = {p.key: p.value for p in model.metadata_props}
    try:
        raw = json.loads(props[METADATA_KEY])
        if raw.pop("format") != FORMAT:
            raise ValueError("unknown format")
        stamp = GraphStamp(**raw)
    except (KeyError, ValueError, TypeError) as exc:
        raise EnsError(
            f"{str(path)!r} is not a compiled ensemble graph of this version (no valid {METADATA_KEY!r} "
            "metadata); re-create it with `ens compile`"
        ) from exc
    return GraphStamp(
        **{
            f.name: _tuples(getattr(stamp, f.name))
            if isinstance(getattr(stamp, f.name), list)
            else getattr(stamp, f.name)
            for f in fields(GraphStamp)
        }
    )


def _tuples(value):
    """JSON lists back to (nested) tuples, as the stamp holds them."""
    return tuple(_tuples(v) if isinstance(v, list) else v for v in value)
