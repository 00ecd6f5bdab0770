"""A loaded source model as the export pipeline sees it, whatever its framework.

Each framework loader returns a `LoadedSource`: a way to run the model on a numpy batch (for the
parity reference and the logits/probabilities check) and a way to turn it into a raw ONNX graph,
which `exporters.contract` then wraps into a member.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

from ensemble.errors import EnsError
from exporters.upsample import reduction_factor


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
    output_names: tuple[str, ...] = ()  # the model's names for the items of a list output (Keras)
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


def check_source_output(
    out: np.ndarray, channels_last: bool, n: int, hw: tuple[int, int], what: str = "the model", count: int = 1
) -> np.ndarray:
    """Return the output as (N, C, h, w) after checking it holds per-pixel scores at the input size
    or smaller by one integer factor on both axes (resized at export); `what` names it in messages
    ("the model's output 'aux'"), one of `count` outputs."""
    layout = "(N, H, W, C)" if channels_last else "(N, C, H, W)"
    if out.ndim != 4:
        raise EnsError(
            f"{what} returns shape {out.shape} for input size {hw}; a member needs per-pixel class "
            f"scores shaped {layout}"
        )
    nchw = np.transpose(out, (0, 3, 1, 2)) if channels_last else out
    if nchw.shape[0] != n or reduction_factor(nchw.shape[2:], hw) is None:
        fix = "choose the full-size head with --output, or add" if count > 1 else "add"
        raise EnsError(
            f"{what} returns {layout} = {out.shape} for {n} images of {hw[0]}x{hw[1]}; a member must "
            "return one score map per image at the input size, or smaller by one integer factor on both "
            f"axes, which is resized ({fix} the final upsampling to the net)"
        )
    if nchw.shape[1] < 2:
        raise EnsError(
            f"{what} returns {nchw.shape[1]} channel(s); a member needs C >= 2 class channels "
            "(a single sigmoid channel is not a softmax over classes)"
        )
    return np.ascontiguousarray(nchw)
