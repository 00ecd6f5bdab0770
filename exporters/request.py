"""What a user asks of one export: the source file, how to build it, and how raw pixels are normalised."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ensemble.errors import EnsError
from ensemble.member import DEFAULT_STORE

NAME_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")
AN2DL_CLASSES = ("background", "soil", "bedrock", "sand", "big rock")


@dataclass(frozen=True)
class Normalisation:
    """Raw 0..255 pixels -> network input: ((x / scale) - mean) / std, folded into the member."""

    scale: float = 1.0
    mean: float = 0.0
    std: float = 1.0

    @classmethod
    def from_options(cls, scale: float | None, mean: float | None, std: float | None) -> Normalisation:
        """Validate --scale/--mean/--std: positive finite divisors, mean and std given together."""
        if (mean is None) != (std is None):
            given = "--mean" if mean is not None else "--std"
            raise EnsError(
                f"{given} was given alone; pass --mean M --std S together, e.g. --mean 127.5 --std 127.5"
            )
        for flag, value, positive in (
            ("--scale", scale, True),
            ("--mean", mean, False),
            ("--std", std, True),
        ):
            if value is not None and (not math.isfinite(value) or (positive and value <= 0)):
                allowed = "a positive number" if positive else "a finite number"
                raise EnsError(f"{flag} {value!r} is not allowed; give {allowed} (e.g. --scale 255)")
        return cls(
            scale=1.0 if scale is None else float(scale),
            mean=0.0 if mean is None else float(mean),
            std=1.0 if std is None else float(std),
        )

    @property
    def is_identity(self) -> bool:
        return self.scale == 1.0 and self.mean == 0.0 and self.std == 1.0

    def describe(self) -> str:
        """A formula like 'x/255' or '(x/255-0.5)/0.25'."""
        if self.is_identity:
            return "none (raw 0..255 pixels)"
        text = "x" if self.scale == 1.0 else f"x/{self.scale:g}"
        if self.mean != 0.0 or self.std != 1.0:
            text = f"({text}-{self.mean:g})/{self.std:g}"
        return text

    def apply(self, pixels: np.ndarray) -> np.ndarray:
        """The same arithmetic as the graph, in float32 numpy."""
        x = pixels.astype(np.float32)
        if self.scale != 1.0:
            x = x / np.float32(self.scale)
        if self.mean != 0.0:
            x = x - np.float32(self.mean)
        if self.std != 1.0:
            x = x / np.float32(self.std)
        return x


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
        if not (self.tolerance >= 0 and math.isfinite(self.tolerance)):
            raise EnsError(f"--tolerance {self.tolerance!r} is not allowed; give a number >= 0 like 1e-4")

    @property
    def target(self) -> Path:
        return self.out_dir / f"{self.name}.onnx"


def parse_factory_kwargs(text: str | None) -> dict:
    """--factory-kwargs '{"in_channels": 1}' -> dict; anything but a JSON object is refused."""
    import json

    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise EnsError(
            f"--factory-kwargs {text!r} is not valid JSON ({exc.msg} at char {exc.pos}); "
            "write an object like '{\"out_channels\": 5}'"
        ) from None
    if not isinstance(value, dict):
        raise EnsError(
            f"--factory-kwargs {text!r} is a JSON {type(value).__name__}; write an object like "
            "'{\"out_channels\": 5}'"
        )
    return value


def parse_class_names(text: str | None) -> tuple[str, ...] | None:
    """'a,b,c' -> ('a', 'b', 'c'), refusing empty or repeated names."""
    if text is None:
        return None
    names = tuple(part.strip() for part in text.split(","))
    if any(not name for name in names) or len(set(names)) != len(names) or len(names) < 2:
        raise EnsError(
            f"--class-names {text!r} must list at least 2 distinct, non-empty names like "
            "background,soil,bedrock,sand,big rock"
        )
    return names


def class_names_for(n_classes: int, given: tuple[str, ...] | None) -> tuple[str, ...]:
    """The given names (checked against the net's channel count) or the defaults for C classes."""
    if given is not None:
        if len(given) != n_classes:
            raise EnsError(
                f"--class-names lists {len(given)} names but the model outputs {n_classes} channels; "
                f"give exactly {n_classes} names"
            )
        return given
    if n_classes == len(AN2DL_CLASSES):
        return AN2DL_CLASSES
    return tuple(f"class_{i}" for i in range(n_classes))
