"""A member is one exported ONNX model obeying the contract; its metadata is read from the file.

Contract: one input float32 (N, 1, H, W) of raw 0..255 pixels, one output float32 (N, C, H, W) of
softmax probabilities; everything framework-specific is folded into the graph at export time.
Provenance lives in the model's metadata_props under the `ens.` prefix.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import onnx

from ensemble.errors import EnsError

CONTRACT_VERSION = "1"
INPUT_NAME = "pixels"
OUTPUT_NAME = "probs"
PREFIX = "ens."
DEFAULT_STORE = Path(os.environ.get("ENS_MODELS", "models"))

EXPORT_HINT = "export it with `ens export SOURCE --name NAME` (see `ens export --help`)"


@dataclass(frozen=True)
class MemberInfo:
    """Contract metadata of one member, as recorded at export time."""

    contract_version: str
    class_names: tuple[str, ...]
    source_framework: str
    source_file: str
    source_sha256: str
    exporter_versions: tuple[tuple[str, str], ...]
    parity_max_abs_err: float
    opset: int
    preprocessing: str
    input_hw: tuple[int | None, int | None]
    val_miou: float | None = None

    @property
    def n_classes(self) -> int:
        return len(self.class_names)


@dataclass(frozen=True)
class Member:
    """A member file: where it is, its content hash and its contract metadata."""

    name: str
    path: Path
    sha256: str
    size_bytes: int
    info: MemberInfo

    @property
    def n_classes(self) -> int:
        return self.info.n_classes


def metadata_dict(info: MemberInfo) -> dict[str, str]:
    """The metadata_props entries that encode `info` (used by the exporters)."""
    props = {
        "contract_version": info.contract_version,
        "class_names": json.dumps(list(info.class_names)),
        "source_framework": info.source_framework,
        "source_file": info.source_file,
        "source_sha256": info.source_sha256,
        "exporter_versions": json.dumps(dict(info.exporter_versions)),
        "parity_max_abs_err": repr(float(info.parity_max_abs_err)),
        "opset": str(info.opset),
        "preprocessing": info.preprocessing,
    }
    if info.val_miou is not None:
        props["val_miou"] = repr(float(info.val_miou))
    return {PREFIX + key: value for key, value in props.items()}


def load_member(path: str | Path, name: str | None = None) -> Member:
    """Read and validate a member file; a non-contract ONNX file is rejected with an export hint."""
    path = Path(path)
    if not path.is_file():
        raise EnsError(f"member file {str(path)!r} does not exist; {EXPORT_HINT}")
    payload = path.read_bytes()
    try:
        model = onnx.load_model_from_string(payload)
    except Exception as exc:  # onnx raises DecodeError and friends
        raise EnsError(f"{str(path)!r} is not an ONNX model ({type(exc).__name__}); {EXPORT_HINT}") from None
    info = _read_info(model, path)
    return Member(
        name=name or path.stem,
        path=path,
        sha256=hashlib.sha256(payload).hexdigest(),
        size_bytes=len(payload),
        info=info,
    )


def _read_info(model: onnx.ModelProto, path: Path) -> MemberInfo:
    props = {p.key[len(PREFIX) :]: p.value for p in model.metadata_props if p.key.startswith(PREFIX)}
    where = repr(str(path))
    if "contract_version" not in props:
        raise EnsError(f"{where} is an ONNX model but not an ens member (no ens.* metadata); {EXPORT_HINT}")
    if props["contract_version"] != CONTRACT_VERSION:
        raise EnsError(
            f"{where} follows member contract v{props['contract_version']}; this ens reads "
            f"v{CONTRACT_VERSION}; re-export it with this version"
        )
    graph = model.graph
    initializers = {init.name for init in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise EnsError(
            f"{where} has {len(inputs)} inputs and {len(graph.output)} outputs; a member has "
            f"exactly one of each; {EXPORT_HINT}"
        )
    in_dims = _dims(inputs[0])
    out_dims = _dims(graph.output[0])
    class_names = tuple(json.loads(props.get("class_names", "[]")))
    problems = []
    if _elem_type(inputs[0]) != onnx.TensorProto.FLOAT or len(in_dims) != 4 or in_dims[1] != 1:
        problems.append(f"input {inputs[0].name!r} is {_describe(inputs[0])}, expected float32 (N, 1, H, W)")
    if _elem_type(graph.output[0]) != onnx.TensorProto.FLOAT or len(out_dims) != 4:
        problems.append(f"output is {_describe(graph.output[0])}, expected float32 (N, C, H, W)")
    elif isinstance(out_dims[1], int) and out_dims[1] != len(class_names):
        problems.append(f"output has {out_dims[1]} channels but {len(class_names)} class names")
    if inputs[0].name != INPUT_NAME or graph.output[0].name != OUTPUT_NAME:
        problems.append(
            f"its input/output are named {inputs[0].name!r}/{graph.output[0].name!r}, "
            f"expected {INPUT_NAME!r}/{OUTPUT_NAME!r}"
        )
    if in_dims and isinstance(in_dims[0], int) and in_dims[0] > 0:
        problems.append(f"its batch axis is fixed to {in_dims[0]}, a member's batch is dynamic")
    if len(class_names) < 2:
        problems.append(f"it records {len(class_names)} class names, at least 2 are needed")
    if problems:
        raise EnsError(f"{where} breaks the member contract: {'; '.join(problems)}; {EXPORT_HINT}")
    try:
        return MemberInfo(
            contract_version=props["contract_version"],
            class_names=class_names,
            source_framework=props.get("source_framework", "unknown"),
            source_file=props.get("source_file", ""),
            source_sha256=props.get("source_sha256", ""),
            exporter_versions=tuple(sorted(json.loads(props.get("exporter_versions", "{}")).items())),
            parity_max_abs_err=float(props.get("parity_max_abs_err", "nan")),
            opset=int(props.get("opset", "0")),
            preprocessing=props.get("preprocessing", ""),
            input_hw=(_static(in_dims[2]), _static(in_dims[3])),
            val_miou=float(props["val_miou"]) if "val_miou" in props else None,
        )
    except (ValueError, json.JSONDecodeError) as exc:
        raise EnsError(f"{where} has unreadable ens.* metadata ({exc}); re-export it") from None


def _elem_type(value: onnx.ValueInfoProto) -> int:
    return value.type.tensor_type.elem_type


def _dims(value: onnx.ValueInfoProto) -> list[int | str]:
    dims = value.type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims]


def _static(dim: int | str) -> int | None:
    return dim if isinstance(dim, int) and dim > 0 else None


def _describe(value: onnx.ValueInfoProto) -> str:
    elem = onnx.helper.tensor_dtype_to_np_dtype(_elem_type(value)) if _elem_type(value) else "?"
    return f"{elem} {tuple(_dims(value))}"
