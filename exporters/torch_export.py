"""PyTorch sources: a state_dict + `--factory`, TorchScript, a torch.export `.pt2`, or a pickled model.

The loader follows the file's content (`exporters.formats`). A state_dict is loaded with
`torch.load(weights_only=True)` or from a `.safetensors` file, neither of which can run code; a
pickled nn.Module, a TorchScript program and a torch.export archive (whose loader unpickles with
weights_only=False) can, so they are only loaded with `--trust`. The graph is traced by the TorchScript
ONNX exporter (fast, single file, takes TorchScript too); the dynamo exporter is the fallback.
"""

from __future__ import annotations

import contextlib
import io
import pickle
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from ensemble.capture import quiet
from ensemble.errors import EnsError, first_line, shorten
from exporters.pickles import code_imports, file_imports
from exporters.request import ExportRequest
from exporters.source import LoadedSource, has_batchnorm
from exporters.torch_weights import find_state_dict, with_factory
from exporters.trust import FORMAT_RISKS, untrusted

OPSET = 18


def load_torch(request: ExportRequest, source_format: str) -> LoadedSource:
    """Load a PyTorch file of the format its content shows and describe how to run and convert it."""
    path = request.source
    if source_format == "torch.export":
        module, kind = _load_program(path, request), "torch.export program"
    elif source_format == "torchscript":
        module, kind = _load_script(path, request), "TorchScript module"
    elif source_format == "safetensors":
        module, kind = with_factory(_read_safetensors(path), "", path, request)
    else:
        module, kind = _load_checkpoint(path, request)
    if request.factory and not kind.startswith("state_dict"):
        raise EnsError(
            f"--factory is only used with a state_dict checkpoint, but {str(path)!r} is a {kind} "
            "that already holds its network; drop --factory"
        )
    return module_source(module, kind)


def module_source(module: torch.nn.Module, kind: str, versions: dict[str, str] | None = None) -> LoadedSource:
    """Describe how to run and convert a loaded torch module (`versions`: other libraries it came from);
    a Hugging Face model's config says how many channels it takes."""
    with contextlib.suppress(NotImplementedError):  # torch.export modules refuse eval()
        module.eval()

    def run(batch: np.ndarray) -> Any:
        with torch.no_grad():
            return _to_numpy(module(torch.from_numpy(np.ascontiguousarray(batch))))

    def to_onnx(example: np.ndarray, dynamic_hw: bool, key: Any) -> tuple[onnx.ModelProto, int]:
        model, index, note = _to_onnx(module, example, dynamic_hw, key)
        if note and note not in source.notes:
            source.notes.append(note)
        return model, index

    source = LoadedSource(
        framework="torch",
        kind=kind,
        channels_last=False,
        run=run,
        to_onnx=to_onnx,
        versions={"torch": torch.__version__.split("+")[0], **(versions or {})},
        channels=_config_channels(module),
        batchnorm=has_batchnorm(module),
    )
    return source


def _config_channels(module: torch.nn.Module) -> int | None:
    """The input channels a transformers model's config declares (`num_channels`), else None."""
    channels = getattr(getattr(module, "config", None), "num_channels", None)
    return channels if isinstance(channels, int) and not isinstance(channels, bool) else None


def _load_program(path: Path, request: ExportRequest) -> torch.nn.Module:
    if not request.trust:
        raise untrusted(f"{str(path)!r} {FORMAT_RISKS['torch.export'][0]}", FORMAT_RISKS["torch.export"][1])
    try:
        with quiet():
            return torch.export.load(str(path)).module()
    except Exception as exc:  # torch raises many types for a bad archive
        raise EnsError(
            f"cannot load {str(path)!r} with torch.export.load ({type(exc).__name__}: {_first(exc)}); "
            "save it with torch.export.save(torch.export.export(model, (x,)), 'model.pt2')"
        ) from exc


def _load_script(path: Path, request: ExportRequest) -> torch.nn.Module:
    if not request.trust:
        raise untrusted(f"{str(path)!r} {FORMAT_RISKS['torchscript'][0]}", FORMAT_RISKS["torchscript"][1])
    try:
        return torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # RuntimeError from the TorchScript loader
        raise EnsError(
            f"cannot load {str(path)!r} with torch.jit.load ({_first(exc)}); the file looks like "
            "TorchScript but is damaged or from a newer torch"
        ) from exc


def _load_checkpoint(path: Path, request: ExportRequest) -> tuple[torch.nn.Module, str]:
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols before refusing them
            warnings.simplefilter("ignore")
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        names = code_imports(file_imports(path))
        if not names:
            detail = re.search(r"WeightsUnpickler error:\s*([^\n]+)", str(exc))
            raise _unloadable(path, detail.group(1) if detail else "a damaged pickle") from exc
        if not request.trust:
            raise untrusted(
                f"{str(path)!r} is not just weights: it holds pickled Python objects that import {names}",
                "unpickling it calls them, which can run any code",
            ) from exc
        obj = _load_trusted(path)
    except Exception as exc:  # RuntimeError/EOFError/ValueError for damaged files
        raise _unloadable(path, f"{type(exc).__name__}: {_first(exc)}") from exc
    if isinstance(obj, torch.nn.Module):
        return obj.float(), "pickled nn.Module"
    return with_factory(*find_state_dict(obj, path), path, request)


def _read_safetensors(path: Path) -> dict:
    """The tensors of a .safetensors file (a format that holds no code)."""
    try:
        from safetensors import SafetensorError
        from safetensors.torch import load_file
    except ImportError as exc:
        raise EnsError(
            f"{str(path)!r} is a safetensors file, which needs the safetensors package; "
            "pip install 'ens[transformers]'"
        ) from exc
    try:
        state = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise _unloadable(path, f"{type(exc).__name__}: {_first(exc)}") from exc
    if not state:
        raise EnsError(f"{str(path)!r} holds no tensors; save the model's state_dict with safetensors")
    return state


def _load_trusted(path: Path) -> Any:
    try:
        return torch.load(str(path), map_location="cpu", weights_only=False)
    except (ModuleNotFoundError, AttributeError) as exc:
        raise EnsError(
            f"{str(path)!r} needs the class it was pickled with ({_first(exc)}); run from the folder "
            "that holds its module (or set PYTHONPATH), or save a state_dict and use --factory"
        ) from exc
    except Exception as exc:  # damaged pickle
        raise _unloadable(path, f"{type(exc).__name__}: {_first(exc)}") from exc


def _unloadable(path: Path, reason: str) -> EnsError:
    return EnsError(
        f"cannot load {str(path)!r} as a PyTorch checkpoint ({reason}); expected a state_dict saved "
        "with torch.save, a TorchScript file or a .pt2 program"
    )


def _first(exc: BaseException) -> str:
    """The first sentence of an exception message, without colour codes."""
    return shorten(re.split(r"(?<=[a-z])\. ", first_line(exc))[0], 160)


def _to_numpy(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().float().cpu().numpy()
    if isinstance(value, dict):
        return {k: _to_numpy(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [_to_numpy(v) for v in value]
    return value


class _Select(torch.nn.Module):
    """The source net with its chosen output only (a tuple item or dict entry)."""

    def __init__(self, net: torch.nn.Module, key: Any) -> None:
        super().__init__()
        self.net = net
        self.key = key
        self.training = net.training  # the exporter restores this mode afterwards: keep eval

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        return out if self.key is None else out[self.key]

    def train(self, mode: bool = True) -> _Select:
        self.training = mode
        with contextlib.suppress(NotImplementedError):  # torch.export modules refuse train()
            self.net.train(mode)
        return self


def _to_onnx(module: torch.nn.Module, example: np.ndarray, dynamic_hw: bool, key: Any) -> tuple:
    """Trace to ONNX with a dynamic batch (and H/W when asked); return (model, output index, note
    naming the exporter when the fallback was needed)."""
    scripted = isinstance(module, torch.jit.ScriptModule)
    if scripted and isinstance(key, str):
        raise EnsError(
            "this TorchScript model returns a dict, which ONNX cannot carry; script or trace it "
            "returning the output tensor, or export its state_dict with --factory"
        )
    target, index = (module, key or 0) if scripted else (_Select(module, key), 0)
    x = torch.from_numpy(np.ascontiguousarray(example))
    axes = {0: "N", 2: "H", 3: "W"} if dynamic_hw else {0: "N"}
    with quiet() as legacy_log:
        try:
            buffer = io.BytesIO()
            torch.onnx.export(
                target, (x,), buffer, input_names=["x"], dynamic_axes={"x": axes},
                opset_version=OPSET, dynamo=False, do_constant_folding=True,
            )  # fmt: skip
            return onnx.load_from_string(buffer.getvalue()), index, ""
        except Exception as exc:  # any tracing failure: try the dynamo exporter
            legacy_error = f"{type(exc).__name__}: {_first(exc)}"
    if scripted:
        raise EnsError(f"torch.onnx cannot export this TorchScript model ({legacy_error})")
    dim = torch.export.Dim.DYNAMIC
    shapes = ({0: dim, 2: dim, 3: dim} if dynamic_hw else {0: dim},)
    with quiet() as dynamo_log:
        try:
            program = torch.onnx.export(
                target, (x,), None, input_names=["x"], dynamic_shapes=shapes,
                opset_version=OPSET, dynamo=True, external_data=False, verbose=False,
            )  # fmt: skip
            note = f"ONNX by the dynamo exporter (the TorchScript exporter failed: {legacy_error})"
            return program.model_proto, index, note
        except Exception as exc:  # both exporters failed: report both, one line
            dynamo_error = f"{type(exc).__name__}: {_first(exc)}"
    detail = legacy_log.last_line() or dynamo_log.last_line()
    raise EnsError(
        f"torch.onnx cannot export this model (TorchScript exporter: {legacy_error}; dynamo exporter: "
        f"{dynamo_error}){f'; last message: {detail}' if detail else ''}"
    )
