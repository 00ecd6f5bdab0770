"""A member file: where it is, its content hash and its contract metadata, read and validated on load
(the contract itself, its names and metadata, lives in `members/contract.py`)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError

from ensemble.errors import EnsError
from ensemble.files.hashing import files_sha256
from ensemble.members.contract import EXPORT_HINT, MemberInfo, read_info

DEFAULT_STORE = Path(os.environ.get("ENS_MODELS", "models"))

MAX_MEMBER_BYTES = 2**31 - 1  # protobuf's limit on one message; larger weights live in external data


@dataclass(frozen=True)
class Member:
    """A member file: where it is, its content hash and its contract metadata.

    `sha256` covers the .onnx file and, for a member with external data, those files too, so an
    edited weight file is a changed member.
    """

    name: str
    path: Path
    sha256: str
    size_bytes: int
    info: MemberInfo
    external_data: tuple[Path, ...] = ()

    @property
    def n_classes(self) -> int:
        return self.info.n_classes

    @property
    def channels(self) -> int:
        return self.info.input_channels


def load_member(path: str | Path, name: str | None = None) -> Member:
    """Read and validate a member file; a non-contract ONNX file is rejected with an export hint."""
    path = Path(path)
    if not path.is_file():
        raise EnsError(f"member file {str(path)!r} does not exist; {EXPORT_HINT}")
    model, size = _read_model(path)
    info = read_info(model, path)
    external = _external_files(model, path)
    return Member(
        name=name or path.stem,
        path=path,
        sha256=files_sha256([path, *external], root=path.parent),
        size_bytes=size + sum(file.stat().st_size for file in external),
        info=info,
        external_data=external,
    )


def _read_model(path: Path) -> tuple[onnx.ModelProto, int]:
    """Parse the .onnx file (without external data), refusing empty and oversized files before reading."""
    where = repr(str(path))
    size = path.stat().st_size
    if size == 0:
        raise EnsError(f"{where} is empty (0 bytes), not an ONNX model; {EXPORT_HINT}")
    if size > MAX_MEMBER_BYTES:
        raise EnsError(
            f"{where} is {size / 2**30:.1f} GiB; an .onnx file holds at most 2 GiB (protobuf's limit, "
            f"larger weights go in external data), so it is not a member; {EXPORT_HINT}"
        )
    try:
        model = onnx.load_model_from_string(path.read_bytes())
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise EnsError(f"{where} is not an ONNX model ({type(exc).__name__}); {EXPORT_HINT}") from exc
    if not model.HasField("graph") or not model.ir_version:
        raise EnsError(f"{where} is not an ONNX model (no graph or IR version); {EXPORT_HINT}")
    return model, size


def _external_files(model: onnx.ModelProto, path: Path) -> tuple[Path, ...]:
    """The external data files the member's tensors point to; each must be a file beside it or below."""
    folder = path.parent.resolve()
    found: dict[Path, None] = {}
    for tensor in _tensors(model.graph):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = next((entry.value for entry in tensor.external_data if entry.key == "location"), "")
        target = (path.parent / location).resolve()
        if not location or Path(location).is_absolute() or not target.is_relative_to(folder):
            raise EnsError(
                f"{str(path)!r} keeps tensor {tensor.name!r} in external data at {location!r}, outside "
                "the member's folder; external data must sit beside the .onnx file; re-export it"
            )
        if not target.is_file():
            raise EnsError(
                f"{str(path)!r} keeps tensor {tensor.name!r} in {location!r}, which does not exist beside "
                "it; copy the member with its external data files"
            )
        found[target] = None
    return tuple(sorted(found))


def _tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    """Every tensor of a graph: initializers, sparse initializers and node attributes, subgraphs too."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield from (sparse.values, sparse.indices)
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            if attribute.HasField("g"):
                yield from _tensors(attribute.g)
            for subgraph in attribute.graphs:
                yield from _tensors(subgraph)
