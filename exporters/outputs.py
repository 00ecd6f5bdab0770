"""Which of a model's outputs a member is built from, when the model returns several.

Deep-supervision nets return auxiliary heads beside the main one, torchvision a dict, Hugging Face
a ModelOutput, multi-output Keras models a list named by their output layers. The choice is made
once, on the export's first batch: the output named by --output; else the one per-pixel score map
at the input size with the class count the other heads share; else, when no output is at the input
size, the one at the largest fraction of it (1/f on both axes, resized at export); else the
conventional 'out' (torchvision) or 'logits' (transformers). Anything else is refused with every
output and its shape.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ensemble.errors import EnsError
from exporters.upsample import reduction_factor

CONVENTIONAL = ("out", "logits")
ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth")
SHOWN = 8  # outputs listed in a message


@dataclass(frozen=True)
class OutputChoice:
    """The kept output: its key in the raw result (dict key or index, None for a single tensor),
    how the user names it ('main' or [1]) and the note that records why it was kept."""

    key: Any = None
    label: str = ""
    note: str = ""
    count: int = 1  # outputs the model returns

    @property
    def what(self) -> str:
        """How messages about this output name it."""
        return f"the model's output {self.label}" if self.label else "the model"


@dataclass(frozen=True)
class _Output:
    key: Any  # dict key or sequence index
    position: int
    name: str | None  # dict key or Keras output name; None for a tuple item
    shape: tuple[int, ...] | None  # None: not an array (a nested list, None, ...)
    floating: bool = True

    @property
    def label(self) -> str:
        return repr(self.name) if self.name is not None else f"[{self.position}]"

    def described(self) -> str:
        return f"{self.label} {self.shape}" if self.shape is not None else f"{self.label} (not an array)"


def choose_output(
    raw: Any,
    *,
    channels_last: bool,
    n: int,
    hw: tuple[int, int],
    requested: str | None = None,
    names: Sequence[str] = (),
) -> OutputChoice:
    """Choose among the outputs of one run on `n` images of size `hw` (see the module docstring).

    `names` are the model's own names for the items of a list output (Keras output layers)."""
    outputs = _outputs(raw, names)
    if outputs is None:
        if requested is not None:
            raise EnsError(
                f"--output {requested!r}: the model returns a single tensor {np.shape(raw)}, so there is "
                "no output to choose; drop --output"
            )
        return OutputChoice()
    if not outputs:
        raise EnsError(
            f"the model returned an empty {type(raw).__name__}; a member needs one per-pixel score map"
        )
    factors = {o.label: score_map_factor(o.shape, channels_last, n, hw) for o in outputs if o.floating}
    if requested is not None:
        kept = _requested(outputs, requested, channels_last)
        _refuse_reduced_beside_full(kept, outputs, factors, channels_last)
        note = f"kept output {kept.label}, chosen by --output"
        return OutputChoice(kept.key, kept.label, note, len(outputs))
    if len(outputs) == 1:
        only = outputs[0]
        return OutputChoice(only.key, only.label if only.name is not None else "")
    classes = _class_counts(outputs, channels_last)
    factor = min((f for f in factors.values() if f is not None), default=1)  # a full-size head first
    at_size = [o for o in outputs if factors.get(o.label) == factor]
    common = Counter(classes.values()).most_common(2)
    if len(at_size) > 1 and (len(common) == 1 or common[0][1] > common[1][1]):
        at_size = [o for o in at_size if classes[o.label] == common[0][0]] or at_size
    if len(at_size) == 1:
        kept = at_size[0]
        where = "at the input size" if factor == 1 else f"at 1/{factor} of the input size, none at it"
        note = f"{_kept(kept, len(outputs))}, the only one {where}"
        return OutputChoice(kept.key, kept.label, note, len(outputs))
    pool = at_size or outputs
    conventional = next((o for name in CONVENTIONAL for o in pool if o.name == name), None)
    if conventional is not None:
        note = f"kept output {conventional.label} of outputs {[o.name for o in outputs]}"
        return OutputChoice(conventional.key, conventional.label, note, len(outputs))
    raise _undecided(outputs, at_size, channels_last, hw, factor)


def take_output(raw: Any, key: Any) -> np.ndarray:
    """The output a choice kept, from a later run of the same model, as float32."""
    value = raw if key is None else raw[key]
    array = np.asarray(value)
    if array.dtype.kind != "f":
        raise EnsError(
            f"the model's output has dtype {array.dtype}; a member needs float scores (logits or "
            "probabilities), not labels"
        )
    return array.astype(np.float32, copy=False)


def _outputs(raw: Any, names: Sequence[str]) -> list[_Output] | None:
    """Each output with its key, label and shape; None when `raw` is a single tensor."""
    if isinstance(raw, Mapping):
        items = [(key, str(key)) for key in raw]
    elif isinstance(raw, Sequence) and not isinstance(raw, (str, bytes)):
        named = len(names) == len(raw) and len(set(names)) == len(names)
        items = [(index, str(names[index]) if named else None) for index in range(len(raw))]
    else:
        return None
    return [_Output(key, i, name, *_shape(raw[key])) for i, (key, name) in enumerate(items)]


def _shape(value: Any) -> tuple[tuple[int, ...] | None, bool]:
    """An output's shape (None unless it is a numeric array) and whether it holds floats."""
    try:
        array = np.asarray(value)
    except (ValueError, TypeError):  # ragged nested lists
        return None, False
    return (tuple(array.shape) if array.dtype.kind in "fiub" else None), array.dtype.kind == "f"


def _class_counts(outputs: list[_Output], channels_last: bool) -> dict[str, int]:
    """The channel count of every 4-D output, by label."""
    return {o.label: o.shape[3 if channels_last else 1] for o in outputs if o.shape and len(o.shape) == 4}


def score_map_factor(
    shape: tuple[int, ...] | None, channels_last: bool, n: int, hw: tuple[int, int]
) -> int | None:
    """For a per-pixel score map of `n` images (C >= 2): 1 at the input size `hw`, f when it is f times
    smaller on both axes; None for anything else."""
    if shape is None or len(shape) != 4 or shape[0] != n:
        return None
    spatial, classes = (shape[1:3], shape[3]) if channels_last else (shape[2:], shape[1])
    return reduction_factor(tuple(spatial), tuple(hw)) if classes >= 2 else None


def _requested(outputs: list[_Output], requested: str, channels_last: bool) -> _Output:
    """The output --output names: a dict key or Keras output name, or an index (negative from the end)."""
    by_name = [o for o in outputs if o.name == requested]
    if by_name:
        return by_name[0]
    indexed = all(isinstance(o.key, int) and o.key == o.position for o in outputs)
    try:
        index = int(requested)
    except ValueError:
        index = None
    if indexed and index is not None and -len(outputs) <= index < len(outputs):
        return outputs[index]
    names = [o.label for o in outputs if o.name is not None]
    allowed = ", ".join(names) if names else f"an index 0..{len(outputs) - 1}"
    if names and indexed:
        allowed += f" or an index 0..{len(outputs) - 1}"
    raise EnsError(
        f"--output {requested!r} is not one of the model's {len(outputs)} outputs "
        f"{_listing(outputs, channels_last)}; pass {allowed}"
    )


def _refuse_reduced_beside_full(
    kept: _Output, outputs: list[_Output], factors: dict[str, int | None], channels_last: bool
) -> None:
    """A head below the input size is resized into a member only when no head is at the input size:
    beside a full-size head it is an auxiliary (deep-supervision) output, not the prediction."""
    factor = factors.get(kept.label)
    full = [o for o in outputs if factors.get(o.label) == 1]
    if factor is None or factor == 1 or not full:
        return
    raise EnsError(
        f"--output {kept.label}: the model's output {kept.label} is at 1/{factor} of the input size while "
        f"{full[0].label} is at it (outputs {_listing(outputs, channels_last)}); an output below the input "
        f"size is resized only when none is at it; choose the full-size head (--output "
        f"{full[0].name if full[0].name is not None else full[0].position}) or drop --output"
    )


def _undecided(
    outputs: list[_Output], at_size: list[_Output], channels_last: bool, hw: tuple[int, int], factor: int
) -> EnsError:
    """The one-line refusal when no output, or several, could be the member's."""
    last = (at_size or outputs)[-1]
    example = last.name if last.name is not None else last.position
    if at_size:
        where = "" if factor == 1 else f"1/{factor} of "
        what = f"{len(at_size)} of them are score maps at {where}the input size {hw[0]}x{hw[1]}"
        hint = "choose the member's with --output"
    else:
        what = (
            f"none is a score map at the input size {hw[0]}x{hw[1]} or smaller by one integer factor "
            "on both axes"
        )
        hint = "add the final upsampling to the net, or choose an output with --output"
    return EnsError(
        f"the model returns {len(outputs)} outputs {_listing(outputs, channels_last)} and {what}; "
        f"{hint} NAME|INDEX (e.g. --output {example})"
    )


def _listing(outputs: list[_Output], channels_last: bool) -> str:
    layout = "(N, H, W, C)" if channels_last else "(N, C, H, W)"
    shown = ", ".join(o.described() for o in outputs[:SHOWN])
    more = f", +{len(outputs) - SHOWN} more" if len(outputs) > SHOWN else ""
    return f"[{shown}{more}] (shapes {layout})"


def _kept(kept: _Output, count: int) -> str:
    """The note for a kept output: by name ("kept output 'main' (the second of 2)"), or by index for
    a tuple item ("kept the second of 2 outputs (index 1)")."""
    place = ORDINALS[kept.position] if kept.position < len(ORDINALS) else f"#{kept.position + 1}"
    if kept.name is not None:
        return f"kept output {kept.label} (the {place} of {count})"
    return f"kept the {place} of {count} outputs (index {kept.position})"
