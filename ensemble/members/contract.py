"""The member contract: its names and limits, and the metadata a member records (written by the
exporters, read back and checked against the graph when a member is loaded).

Contract: one input float32 (N, C_in, H, W) of raw 0..255 pixels (C_in = 1 grayscale, 3 RGB in
that order), one output float32 (N, C, H, W) of softmax probabilities; everything framework-specific
is folded into the graph at export time. Provenance lives in the model's metadata_props under the
`ens.` prefix. Contract version 2 records C_in (`ens.input_channels`) and the multiple H and W must
be padded to (`ens.size_multiple`); a version 1 member (no such keys) takes 1 channel, any size.
`ens.upsample_factor` (optional) records that the source's output was that many times smaller than
its input and is resized inside the graph.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import onnx

from ensemble.errors import EnsError
from ensemble.optionvalues import MAX_CLASSES

CONTRACT_VERSION = "2"
READ_VERSIONS = ("1", "2")
CHANNELS = (1, 3)
MAX_SIZE_MULTIPLE = 1024
MAX_UPSAMPLE_FACTOR = 32
INPUT_NAME = "pixels"
OUTPUT_NAME = "probs"
PREFIX = "ens."
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
    input_channels: int = 1
    size_multiple: int = 1
    upsample_factor: int = 1  # the source's output was this many times smaller; resized in the graph
    quantization: str | None = None  # how an int8 copy of another member was made

    @property
    def n_classes(self) -> int:
        return len(self.class_names)


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
    if info.contract_version != "1":
        props["input_channels"] = str(info.input_channels)
        props["size_multiple"] = str(info.size_multiple)
    if info.val_miou is not None:
        props["val_miou"] = repr(float(info.val_miou))
    if info.upsample_factor > 1:
        props["upsample_factor"] = str(info.upsample_factor)
    if info.quantization is not None:
        props["quantization"] = info.quantization
    return {PREFIX + key: value for key, value in props.items()}


def read_info(model: onnx.ModelProto, path: Path) -> MemberInfo:
    """The contract metadata of `model` (read from `path`), checked against its graph; a model that
    breaks the contract is refused with an export hint."""
    props = {p.key[len(PREFIX) :]: p.value for p in model.metadata_props if p.key.startswith(PREFIX)}
    where = repr(str(path))
    if "contract_version" not in props:
        raise EnsError(f"{where} is an ONNX model but not an ens member (no ens.* metadata); {EXPORT_HINT}")
    if props["contract_version"] not in READ_VERSIONS:
        raise EnsError(
            f"{where} follows member contract version {_clip(props['contract_version'])}; this ens reads "
            f"versions {' and '.join(map(repr, READ_VERSIONS))}; re-export it with this version"
        )
    fields = _MetadataReader(props, where)
    class_names = fields.class_names()
    channels, multiple = 1, 1
    if props["contract_version"] != "1":
        channels = fields.whole("input_channels", CHANNELS, "1 (grayscale) or 3 (RGB)")
        multiple = fields.whole("size_multiple", range(1, MAX_SIZE_MULTIPLE + 1), "a whole number 1..1024")
    upsample = 1
    if "upsample_factor" in props:
        upsample = fields.whole("upsample_factor", range(2, MAX_UPSAMPLE_FACTOR + 1), "a whole number 2..32")
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
    problems = []
    if _elem_type(inputs[0]) != onnx.TensorProto.FLOAT or len(in_dims) != 4 or in_dims[1] != channels:
        problems.append(
            f"input {inputs[0].name!r} is {_describe(inputs[0])}, expected float32 (N, {channels}, H, W)"
            + ("" if channels != 1 else " (a member with 3 input channels records ens.input_channels 3)")
        )
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
    if problems:
        raise EnsError(f"{where} breaks the member contract: {'; '.join(problems)}; {EXPORT_HINT}")
    return MemberInfo(
        contract_version=props["contract_version"],
        class_names=class_names,
        source_framework=props.get("source_framework", "unknown"),
        source_file=props.get("source_file", ""),
        source_sha256=props.get("source_sha256", ""),
        exporter_versions=fields.versions(),
        parity_max_abs_err=fields.number("parity_max_abs_err", "nan", low=0.0),
        opset=fields.opset(),
        preprocessing=props.get("preprocessing", ""),
        input_hw=(_static(in_dims[2]), _static(in_dims[3])),
        val_miou=fields.number("val_miou", None, low=0.0, high=1.0) if "val_miou" in props else None,
        input_channels=channels,
        size_multiple=multiple,
        upsample_factor=upsample,
        quantization=props.get("quantization"),
    )


class _MetadataReader:
    """Typed reads of the `ens.*` metadata strings; anything but what `ens export` writes is refused."""

    def __init__(self, props: dict[str, str], where: str) -> None:
        self.props, self.where = props, where

    def refuse(self, key: str, expected: str) -> EnsError:
        found = f"= {_clip(self.props[key])}" if key in self.props else "missing"
        return EnsError(
            f"{self.where} has ens.{key} {found}, expected {expected}; its metadata was not written "
            f"by `ens export`; {EXPORT_HINT}"
        )

    def json(self, key: str, default: str, kind: type, expected: str):
        try:
            value = json.loads(self.props.get(key, default))
        except (ValueError, RecursionError) as exc:
            raise self.refuse(key, expected) from exc
        if not isinstance(value, kind):
            raise self.refuse(key, expected)
        return value

    def class_names(self) -> tuple[str, ...]:
        expected = f'a JSON list of 2..{MAX_CLASSES} distinct class names (uint8 labels), e.g. ["a", "b"]'
        if "class_names" not in self.props:
            raise self.refuse("class_names", expected)
        names = self.json("class_names", "[]", list, expected)
        if not 2 <= len(names) <= MAX_CLASSES or not all(isinstance(n, str) and n.strip() for n in names):
            raise self.refuse("class_names", expected)
        if len(set(names)) != len(names):
            raise self.refuse("class_names", expected)
        return tuple(names)

    def versions(self) -> tuple[tuple[str, str], ...]:
        expected = 'a JSON object of package versions, like {"onnx": "1.17.0"}'
        versions = self.json("exporter_versions", "{}", dict, expected)
        if not all(isinstance(v, str) for v in versions.values()):
            raise self.refuse("exporter_versions", expected)
        return tuple(sorted(versions.items()))

    def number(self, key: str, default: str | None, low: float, high: float = math.inf) -> float:
        """A finite float in [low, high]; 'nan' (unknown) is allowed where the default is 'nan'."""
        expected = f"a number in [{low:g}, {high:g}]" if high < math.inf else f"a number >= {low:g}"
        try:
            value = float(self.props.get(key, default))
        except (TypeError, ValueError) as exc:
            raise self.refuse(key, expected) from exc
        if not (low <= value <= high and math.isfinite(value) or (default == "nan" and math.isnan(value))):
            raise self.refuse(key, expected)
        return value

    def whole(self, key: str, allowed, expected: str) -> int:
        """A whole number written in digits, one of `allowed`."""
        text = self.props.get(key, "")
        if not re.fullmatch(r"[0-9]{1,4}", text) or int(text) not in allowed:
            raise self.refuse(key, expected)
        return int(text)

    def opset(self) -> int:
        text = self.props.get("opset", "0")
        if not re.fullmatch(r"[0-9]{1,4}", text):
            raise self.refuse("opset", "a whole number like 17")
        return int(text)


def _clip(text: str, limit: int = 60) -> str:
    """`text` quoted, at most about `limit` characters, cut with an ellipsis."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + "…"


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
