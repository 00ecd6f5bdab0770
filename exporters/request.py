"""What a user asks of one export: the source file, how to build it, and how raw pixels are normalised."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from ensemble.course import CLASS_NAMES
from ensemble.data.split import SplitSpec
from ensemble.errors import EnsError, first_line
from ensemble.files.jsonfile import unique_keys
from ensemble.members.contract import CHANNELS, MAX_SIZE_MULTIPLE
from ensemble.members.member import DEFAULT_STORE
from ensemble.optionvalues import MAX_CLASSES, name_list
from exporters.preprocessing import Normalisation

NAME_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")
KERAS_BACKENDS = ("auto", "torch", "tensorflow")


@dataclass(frozen=True)
class ExportRequest:
    """All options of `ens export`, validated where they can be without loading the source."""

    source: Path
    name: str
    factory: str | None = None
    factory_kwargs: dict = field(default_factory=dict)
    normalisation: Normalisation = Normalisation()
    custom_objects: Path | None = None
    data: Path | None = None
    trust: bool = False
    tolerance: float = 1e-4
    height: int | None = None
    width: int | None = None
    class_names: tuple[str, ...] | None = None
    val_miou: float | None = None
    out_dir: Path = DEFAULT_STORE
    force: bool = False
    split: SplitSpec = SplitSpec()
    channels: int | None = None
    masks: Path | None = None
    size_multiple: int | None = None
    output: str | None = None
    gray_to_rgb: bool = False
    keras_backend: str = "auto"

    def __post_init__(self) -> None:
        if not NAME_PATTERN.fullmatch(self.name):
            raise EnsError(
                f"--name {self.name!r} is not a simple identifier; use letters, digits, '_' or '-', "
                "starting with a letter (e.g. unet_a)"
            )
        if (self.height is None) != (self.width is None):
            raise EnsError("--height and --width go together; pass both, e.g. --height 64 --width 128")
        if self.val_miou is not None and not 0.0 <= self.val_miou <= 1.0:
            raise EnsError(
                f"--val-miou {self.val_miou!r} is not a fraction; give the mIoU as 0..1, e.g. 0.62"
            )
        if self.channels not in (None, *CHANNELS):
            raise EnsError(f"--channels {self.channels} is not 1 (grayscale) or 3 (RGB)")
        if self.gray_to_rgb and self.channels == 1:
            raise EnsError(
                "--gray-to-rgb copies a grayscale image into the R, G and B inputs of an RGB net, but "
                "--channels 1 says the net takes one channel; pass --channels 3, or drop --gray-to-rgb"
            )
        if self.size_multiple is not None and not 1 <= self.size_multiple <= MAX_SIZE_MULTIPLE:
            raise EnsError(
                f"--size-multiple {self.size_multiple} is outside 1..{MAX_SIZE_MULTIPLE}; give the number H "
                "and W must be divisible by (e.g. 32 for a net with five 2x poolings)"
            )
        if self.output is not None and not self.output.strip():
            raise EnsError(
                "--output is empty; give the output's name (a dict key or Keras output layer) or its index"
            )
        if self.keras_backend not in KERAS_BACKENDS:
            raise EnsError(
                f"--keras-backend {self.keras_backend!r} is not one of {', '.join(KERAS_BACKENDS)}; "
                "auto uses torch and moves to tensorflow when torch fails"
            )
        if not (self.tolerance >= 0 and math.isfinite(self.tolerance)):
            raise EnsError(f"--tolerance {self.tolerance!r} is not allowed; give a number >= 0 like 1e-4")

    @property
    def target(self) -> Path:
        return self.out_dir / f"{self.name}.onnx"


def parse_factory_kwargs(text: str | None) -> dict:
    """--factory-kwargs '{"in_channels": 1}' -> dict; anything but a JSON object, or a key given twice,
    is refused in one line.

    >>> parse_factory_kwargs('{"width": 16}')
    {'width': 16}
    """
    if not text:
        return {}
    shown = text if len(text) <= 60 else text[:57] + "..."
    example = "write an object like '{\"out_channels\": 5}'"
    try:
        value = json.loads(text, object_pairs_hook=unique_keys)
    except json.JSONDecodeError as exc:
        raise EnsError(
            f"--factory-kwargs {shown!r} is not valid JSON ({exc.msg} at char {exc.pos}); {example}"
        ) from exc
    except RecursionError as exc:
        raise EnsError(f"--factory-kwargs {shown!r} nests too deeply to read; {example}") from exc
    except ValueError as exc:  # e.g. an integer longer than Python converts
        reason = first_line(exc, 80)
        raise EnsError(f"--factory-kwargs {shown!r} cannot be read ({reason}); {example}") from exc
    if not isinstance(value, dict):
        raise EnsError(f"--factory-kwargs {shown!r} is a JSON {type(value).__name__}; {example}")
    return value


def parse_class_names(text: str | None) -> tuple[str, ...] | None:
    """'a,b,c' -> ('a', 'b', 'c'), refusing empty or repeated names."""
    if text is None:
        return None
    names = tuple(name_list(text, "--class-names", "background,soil,bedrock,sand,big rock"))
    if len(names) < 2:
        raise EnsError(
            f"--class-names {text!r} must list at least 2 distinct, non-empty names like "
            "background,soil,bedrock,sand,big rock"
        )
    return names


def class_names_for(n_classes: int, given: tuple[str, ...] | None) -> tuple[str, ...]:
    """The given names (checked against the net's channel count) or the defaults for C classes;
    at most MAX_CLASSES, since labels are uint8."""
    if n_classes > MAX_CLASSES:
        raise EnsError(
            f"the model outputs {n_classes} class channels; a member has at most {MAX_CLASSES} classes "
            f"(labels are uint8, 0..{MAX_CLASSES - 1}); export a model with fewer classes"
        )
    if given is not None:
        if len(given) != n_classes:
            raise EnsError(
                f"--class-names lists {len(given)} names but the model outputs {n_classes} channels; "
                f"give exactly {n_classes} names"
            )
        return given
    if n_classes == len(CLASS_NAMES):
        return CLASS_NAMES
    return tuple(f"class_{i}" for i in range(n_classes))
