"""How raw 0..255 pixels become the network's input, declared in a form nobody can misread.

The user names the value range the network was trained on, `--input-range 0-255|0-1|-1-1`, and
optionally the mean and std it then subtracts and divides by, in that range's units:
net input = (x mapped to the range - mean) / std. A PyTorch user's `x / 255` and a Keras user's
`Rescaling(1/255)` are both `--input-range 0-1`. There is no `--scale`: it reads as "divide by"
to one user and "multiply by" to another. Statistics that only make sense in another range
(0..1 statistics with 0-255, raw-pixel statistics with 0-1) are refused with the right spelling.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from ensemble.errors import EnsError

RANGES: dict[str, tuple[float, float]] = {"0-255": (0.0, 255.0), "0-1": (0.0, 1.0), "-1-1": (-1.0, 1.0)}
RANGE_HELP = "0-255 for raw pixels, 0-1 for x/255 (Keras Rescaling(1/255)), -1-1 for x/127.5-1"
STD_FLOOR = 100
"""A std below 1/100 of the range would blow the inputs up to +-50: statistics of another range."""


@dataclass(frozen=True)
class Normalisation:
    """Raw 0..255 pixels x -> network input: x mapped linearly onto `input_range`, then
    (value - mean) / std; folded into the member graph at export.

    >>> Normalisation("0-1", 0.5, 0.25).apply(np.array([0, 255])).tolist()
    [-2.0, 2.0]
    >>> Normalisation("-1-1").describe()
    'x/127.5-1 (input range -1-1; x = raw pixel 0..255)'
    """

    input_range: str = "0-255"
    mean: float = 0.0
    std: float = 1.0

    def __post_init__(self) -> None:
        if self.input_range not in RANGES:
            raise EnsError(
                f"--input-range {self.input_range!r} is not one of {', '.join(RANGES)}; declare the value "
                f"range the net was trained on: {RANGE_HELP}"
            )

    @classmethod
    def from_options(cls, input_range: str | None, mean: float | None, std: float | None) -> Normalisation:
        """Validate --input-range/--mean/--std; refuse statistics that belong to another range."""
        text = "0-255" if input_range is None else input_range.strip().replace("..", "-").replace(" ", "")
        norm = cls(text)
        if (mean is None) != (std is None):
            given = "--mean" if mean is not None else "--std"
            raise EnsError(
                f"{given} was given alone; pass --mean M --std S together, in the units of --input-range, "
                "e.g. --input-range 0-1 --mean 0.449 --std 0.226"
            )
        if mean is None:
            return norm
        for flag, value in (("--mean", mean), ("--std", std)):
            if not math.isfinite(value):
                raise EnsError(f"{flag} {value!r} is not allowed; give a finite number")
        low, high = RANGES[text]
        width = high - low
        other = "0-1" if text == "0-255" else "0-255"
        if not low <= mean <= high:
            raise EnsError(
                f"--mean {mean:g} lies outside --input-range {text} ({low:g}..{high:g}); mean and std are in "
                f"the units of --input-range, so statistics of {'raw pixels' if mean > 1 else '0..1 values'} "
                f"need --input-range {other if mean > high else '0-1'}"
            )
        if not width / STD_FLOOR <= std <= width:
            raise EnsError(
                f"--std {std:g} does not fit --input-range {text} (allowed {width / STD_FLOOR:g}.."
                f"{width:g}); mean and std are in the units of --input-range, so this std belongs to "
                f"--input-range {other}"
            )
        return cls(text, float(mean), float(std))

    def steps(self) -> list[tuple[str, float]]:
        """The graph's arithmetic as (ONNX op, constant) pairs, Div or Sub, in order."""
        low, high = RANGES[self.input_range]
        steps = [("Div", 255.0 / (high - low)), ("Sub", -low), ("Sub", self.mean), ("Div", self.std)]
        return [(op, value) for op, value in steps if value != (1.0 if op == "Div" else 0.0)]

    @property
    def is_identity(self) -> bool:
        return not self.steps()

    def apply(self, pixels: np.ndarray) -> np.ndarray:
        """The same arithmetic as the graph, in float32 numpy."""
        x = np.asarray(pixels, np.float32)
        for op, value in self.steps():
            x = x / np.float32(value) if op == "Div" else x - np.float32(value)
        return x

    def formula(self) -> str:
        """The net input as a formula of the raw pixel x, e.g. '(x/255-0.449)/0.226'."""
        low, high = RANGES[self.input_range]
        text = "x" if high - low == 255.0 else f"x/{255.0 / (high - low):g}"
        text += _minus(-low)
        if self.mean != 0.0 or self.std != 1.0:
            text = f"({text}{_minus(self.mean)})/{self.std:g}"
        return text

    def describe(self) -> str:
        """What the member records: the formula, the declaration it came from, and what x is."""
        stats = f", mean {self.mean:g}, std {self.std:g}" if self.mean != 0.0 or self.std != 1.0 else ""
        return f"{self.formula()} (input range {self.input_range}{stats}; x = raw pixel 0..255)"

    def options(self) -> list[str]:
        """The `ens export` options that declare this preprocessing.

        >>> Normalisation("0-1", 0.449, 0.226).options()
        ['--input-range', '0-1', '--mean', '0.449', '--std', '0.226']
        """
        options = ["--input-range", self.input_range]
        if self.mean != 0.0 or self.std != 1.0:
            options += ["--mean", f"{self.mean:g}", "--std", f"{self.std:g}"]
        return options

    def to_dict(self) -> dict:
        return {**asdict(self), "formula": f"net input = {self.formula()}, x = raw pixels 0..255"}

    @classmethod
    def from_record(cls, record: dict) -> Normalisation:
        """Read `to_dict()` back; sidecars written before --input-range hold {scale: 1 | 255, mean, std}
        with net input = (x / scale - mean) / std."""
        if "input_range" in record:
            return cls(record["input_range"], float(record["mean"]), float(record["std"]))
        ranges = {1.0: "0-255", 255.0: "0-1"}
        if float(record.get("scale", 0)) not in ranges:
            raise EnsError(f"preprocessing record {record} has no input_range; re-run `ens train`")
        return cls(ranges[float(record["scale"])], float(record["mean"]), float(record["std"]))


def _minus(value: float) -> str:
    """' - value' written as '-v' or '+v', empty for 0."""
    return "" if value == 0.0 else f"-{value:g}" if value > 0 else f"+{-value:g}"


def refuse_scale(value: float) -> EnsError:
    """`--scale` reads as 'divide by' to a PyTorch user and 'multiply by' to a Keras user: say which
    declaration the value most likely meant instead of guessing."""
    if math.isclose(value, 255.0) or math.isclose(value, 1 / 255.0):
        suggestion = "x/255 and Rescaling(1/255) are both --input-range 0-1"
    else:
        suggestion = f"declare the range the net was trained on: {RANGE_HELP}"
    return EnsError(
        f"--scale {value:g} is refused: a scale reads as 'divide by' in PyTorch and 'multiply by' in Keras, "
        f"so it has two meanings; {suggestion} (then --mean/--std in that range's units)"
    )
