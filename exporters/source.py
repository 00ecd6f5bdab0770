"""A loaded source model as the export pipeline sees it, whatever its framework.

Each framework loader returns a `LoadedSource`: a way to run the model on a numpy batch (for the
parity reference and the logits/probabilities check) and a way to turn it into a raw ONNX graph,
which `exporters.contract` then wraps into a member.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

from ensemble.errors import EnsError


@dataclass
class LoadedSource:
    """A model ready to run and to convert.

    run: float32 batch in the model's layout -> its raw output (tensor, tuple or dict, as numpy).
    to_onnx: (example batch, dynamic H/W?, output key) -> (raw ONNX graph with one input, index of
    the graph output that holds the chosen output).
    """

    framework: str
    kind: str
    channels_last: bool
    run: Callable[[np.ndarray], Any]
    to_onnx: Callable[[np.ndarray, bool, Any], tuple[onnx.ModelProto, int]]
    versions: dict[str, str]
    builtin_preprocessing: str = ""
    fixed_hw: tuple[int, int] | None = None
    notes: list[str] = field(default_factory=list)
    channels: int | None = None  # what the model's input declares, when it does
    batchnorm: bool = False  # the net holds BatchNorm layers (a likely cause of a poor member)


def has_batchnorm(net) -> bool:
    """Whether a torch module or a Keras model holds a BatchNorm layer, found by class name so that
    neither framework is imported here."""
    modules = getattr(net, "modules", None)
    if callable(modules):
        return any("BatchNorm" in getattr(m, "original_name", type(m).__name__) for m in modules())
    layers = getattr(net, "_flatten_layers", None)
    if callable(layers):
        return any("BatchNormalization" in type(layer).__name__ for layer in layers(include_self=False))
    return False


def pick_output(raw: Any) -> tuple[np.ndarray, Any, str]:
    """The tensor a member is built from, its key (index or dict key) and a note on the choice.

    A single tensor is used as is; a tuple/list gives its first item; a dict its "out" entry,
    else its first entry. Extra outputs (deep supervision, aux heads) are dropped and recorded.
    """
    if isinstance(raw, Mapping):
        keys = list(raw)
        if not keys:
            raise EnsError("the model returned an empty dict; a member needs one (N, C, H, W) output")
        key = "out" if "out" in raw else keys[0]
        return _array(raw[key]), key, f"kept output {key!r} of a dict with keys {keys}"
    if isinstance(raw, Sequence) and not isinstance(raw, (str, bytes)):
        if not raw:
            raise EnsError("the model returned an empty sequence; a member needs one (N, C, H, W) output")
        if len(raw) == 1:
            return _array(raw[0]), 0, ""
        return _array(raw[0]), 0, f"kept the first of {len(raw)} outputs"
    return _array(raw), None, ""


def _array(value: Any) -> np.ndarray:
    array = np.asarray(value)
    if array.dtype.kind != "f":
        raise EnsError(
            f"the model's output has dtype {array.dtype}; a member needs float scores (logits or "
            "probabilities), not labels"
        )
    return array.astype(np.float32, copy=False)


def check_source_output(out: np.ndarray, channels_last: bool, n: int, hw: tuple[int, int]) -> np.ndarray:
    """Return the output as (N, C, H, W) after checking it holds per-pixel scores at input size."""
    layout = "(N, H, W, C)" if channels_last else "(N, C, H, W)"
    if out.ndim != 4:
        raise EnsError(
            f"the model returns shape {out.shape} for input size {hw}; a member needs per-pixel class "
            f"scores shaped {layout}"
        )
    nchw = np.transpose(out, (0, 3, 1, 2)) if channels_last else out
    if nchw.shape[0] != n or nchw.shape[2:] != tuple(hw):
        raise EnsError(
            f"the model returns {layout} = {out.shape} for {n} images of {hw[0]}x{hw[1]}; a member must "
            "return one score map per image at the input size (add the final upsampling to the net)"
        )
    if nchw.shape[1] < 2:
        raise EnsError(
            f"the model returns {nchw.shape[1]} channel(s); a member needs C >= 2 class channels "
            "(a single sigmoid channel is not a softmax over classes)"
        )
    return np.ascontiguousarray(nchw)
