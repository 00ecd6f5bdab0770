"""How raw 0..255 pixels become the network's input, declared in a form nobody can misread.

The user names the value range the network was trained on, `--input-range 0-255|0-1|-1-1`, and
optionally the mean and std it then subtracts and divides by, in that range's units:
net input = (x mapped to the range - mean) / std. A PyTorch user's `x / 255` and a Keras user's
`Rescaling(1/255)` are both `--input-range 0-1`. There is no `--scale`: it reads as "divide by"
to one user and "multiply by" to another. Statistics that only make sense in another range
(0..1 statistics with 0-255, raw-pixel statistics with 0-1) are refused with the right spelling.
RGB nets take one mean and std per channel (`--mean 0.485,0.456,0.406`), in the net's channel
order; a net trained on BGR images (`--channel-order bgr`) gets the member's RGB input reversed first.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from ensemble.errors import EnsError
from ensemble.optionvalues import parse_number

RANGES: dict[str, tuple[float, float]] = {"0-255": (0.0, 255.0), "0-1": (0.0, 1.0), "-1-1": (-1.0, 1.0)}
RANGE_HELP = "0-255 for raw pixels, 0-1 for x/255 (Keras Rescaling(1/255)), -1-1 for x/127.5-1"
STD_FLOOR = 100
"""A std below 1/100 of the range would blow the inputs up to +-50: statistics of another range."""
CHANNEL_ORDERS = ("rgb", "bgr")
Stat = float | tuple[float, ...]


@dataclass(frozen=True)
class Normalisation:
    """Raw 0..255 pixels x -> network input: x mapped linearly onto `input_range`, then
    (value - mean) / std; folded into the member graph at export.

    >>> Normalisation("0-1", 0.5, 0.25).apply(np.array([0, 255])).tolist()
    [-2.0, 2.0]
    >>> Normalisation("-1-1").describe()
    'x/127.5-1 (input range -1-1; x = raw pixel 0..255)'
    >>> Normalisation("0-1", (0.5, 0.4, 0.3), (0.2, 0.2, 0.2), "bgr").formula()
    '(x/255-(0.5,0.4,0.3))/(0.2,0.2,0.2)'
    """

    input_range: str = "0-255"
    mean: Stat = 0.0
    std: Stat = 1.0
    channel_order: str = "rgb"

    def __post_init__(self) -> None:
        if self.input_range not in RANGES:
            raise EnsError(
                f"--input-range {self.input_range!r} is not one of {', '.join(RANGES)}; declare the value "
                f"range the net was trained on: {RANGE_HELP}"
            )
        if self.channel_order not in CHANNEL_ORDERS:
            raise EnsError(
                f"--channel-order {self.channel_order!r} is not one of {', '.join(CHANNEL_ORDERS)}; name "
                "the channel order the net was trained on (OpenCV reads images as BGR)"
            )

    @classmethod
    def from_options(
        cls,
        input_range: str | None,
        mean: float | str | Sequence[float] | None,
        std: float | str | Sequence[float] | None,
        channel_order: str = "rgb",
        channels: int | None = 1,
    ) -> Normalisation:
        """Validate --input-range (in one of its spellings exactly), --mean/--std (one value, or one per
        channel) and --channel-order; refuse statistics that belong to another range. `channels` None:
        not known yet (a Keras model declares it), checked against the model by `check_channels`."""
        text = "0-255" if input_range is None else input_range
        if channel_order != "rgb" and channels not in (None, 3):
            raise EnsError(
                f"--channel-order {channel_order} needs an RGB net (--channels 3); a grayscale net has one "
                "channel to order"
            )
        norm = cls(text, channel_order=channel_order)
        if (mean is None) != (std is None):
            given = "--mean" if mean is not None else "--std"
            raise EnsError(
                f"{given} was given alone; pass --mean M --std S together, in the units of --input-range, "
                "e.g. --input-range 0-1 --mean 0.449 --std 0.226"
            )
        if mean is None:
            return norm
        means, stds = _values("--mean", mean, channels), _values("--std", std, channels)
        low, high = RANGES[text]
        width = high - low
        other = "0-1" if text == "0-255" else "0-255"
        for value in means:
            if not low <= value <= high:
                raise EnsError(
                    f"--mean {value:g} lies outside --input-range {text} ({low:g}..{high:g}); mean and std "
                    f"are in the units of --input-range, so statistics of "
                    f"{'raw pixels' if value > 1 else '0..1 values'} need --input-range "
                    f"{other if value > high else '0-1'}"
                )
        for value in stds:
            if not width / STD_FLOOR <= value <= width:
                raise EnsError(
                    f"--std {value:g} does not fit --input-range {text} (allowed {width / STD_FLOOR:g}.."
                    f"{width:g}); mean and std are in the units of --input-range, so this std belongs to "
                    f"--input-range {other}"
                )
        return cls(text, _stat(means), _stat(stds), channel_order)

    def steps(self) -> list[tuple[str, Stat]]:
        """The graph's arithmetic as (ONNX op, constant) pairs, Div or Sub, in order; a per-channel
        constant is a tuple (in the net's channel order, applied after the channel reversal)."""
        low, high = RANGES[self.input_range]
        steps = [("Div", 255.0 / (high - low)), ("Sub", -low), ("Sub", self.mean), ("Div", self.std)]
        return [(op, value) for op, value in steps if not _neutral(op, value)]

    def check_channels(self, channels: int) -> None:
        """Refuse per-channel statistics or a channel order that do not fit a net of `channels`."""
        for flag, value in (("--mean", self.mean), ("--std", self.std)):
            if isinstance(value, tuple) and len(value) != channels:
                rgb = " (--channels 3 for an RGB net, plus --gray-to-rgb to feed it grayscale images)"
                raise EnsError(
                    f"{flag} lists {len(value)} values but the net takes {channels} channel(s); give one "
                    f"value, or one per channel in the net's channel order{rgb if len(value) == 3 else ''}"
                )
        if self.channel_order != "rgb" and channels != 3:
            raise EnsError(
                f"--channel-order {self.channel_order} needs an RGB net, but this one takes 1 channel"
            )

    @property
    def is_identity(self) -> bool:
        return not self.steps() and self.channel_order == "rgb"

    @property
    def per_channel(self) -> bool:
        return isinstance(self.mean, tuple) or isinstance(self.std, tuple)

    def apply(self, pixels: np.ndarray) -> np.ndarray:
        """The same arithmetic as the graph, in float32 numpy, on (N, C, H, W) raw pixels."""
        x = np.asarray(pixels, np.float32)
        if self.channel_order == "bgr":
            x = x[:, ::-1]
        for op, value in self.steps():
            constant = np.float32(value) if not isinstance(value, tuple) else _per_channel(value)
            x = x / constant if op == "Div" else x - constant
        return x

    def formula(self) -> str:
        """The net input as a formula of the raw pixel x, e.g. '(x/255-0.449)/0.226'."""
        low, high = RANGES[self.input_range]
        text = "x" if high - low == 255.0 else f"x/{255.0 / (high - low):g}"
        text += _minus(-low)
        if self.has_stats:
            text = f"({text}{_minus(self.mean)})/{_text(self.std)}"
        return text

    @property
    def has_stats(self) -> bool:
        return not (_neutral("Sub", self.mean) and _neutral("Div", self.std))

    def describe(self) -> str:
        """What the member records: the formula, the declaration it came from, and what x is."""
        stats = f", mean {_text(self.mean)}, std {_text(self.std)}" if self.has_stats else ""
        order = ", channels reversed to BGR" if self.channel_order == "bgr" else ""
        return f"{self.formula()} (input range {self.input_range}{stats}{order}; x = raw pixel 0..255)"

    def options(self) -> list[str]:
        """The `ens export` options that declare this preprocessing.

        >>> Normalisation("0-1", 0.449, 0.226).options()
        ['--input-range', '0-1', '--mean', '0.449', '--std', '0.226']
        """
        options = ["--input-range", self.input_range]
        if self.has_stats:
            options += ["--mean", _text(self.mean, ""), "--std", _text(self.std, "")]
        if self.channel_order != "rgb":
            options += ["--channel-order", self.channel_order]
        return options

    def to_dict(self) -> dict:
        record = {**asdict(self), "formula": f"net input = {self.formula()}, x = raw pixels 0..255"}
        if self.channel_order == "rgb":
            del record["channel_order"]
        return {key: list(value) if isinstance(value, tuple) else value for key, value in record.items()}

    @classmethod
    def from_record(cls, record: dict) -> Normalisation:
        """Read `to_dict()` back; sidecars written before --input-range hold {scale: 1 | 255, mean, std}
        with net input = (x / scale - mean) / std."""
        if "input_range" in record:
            return cls(
                record["input_range"],
                _stat(record["mean"]),
                _stat(record["std"]),
                record.get("channel_order", "rgb"),
            )
        ranges = {1.0: "0-255", 255.0: "0-1"}
        if float(record.get("scale", 0)) not in ranges:
            raise EnsError(f"preprocessing record {record} has no input_range; re-run `ens train`")
        return cls(ranges[float(record["scale"])], float(record["mean"]), float(record["std"]))


def _minus(value: Stat) -> str:
    """' - value' written as '-v' or '+v', empty for 0; a per-channel value as '-(a,b,c)'."""
    if isinstance(value, tuple):
        return f"-{_text(value)}"
    return "" if value == 0.0 else f"-{value:g}" if value > 0 else f"+{-value:g}"


def _text(value: Stat, brackets: str = "()") -> str:
    """'0.5', or '(0.5,0.4,0.3)' for a per-channel value."""
    if not isinstance(value, tuple):
        return f"{value:g}"
    inner = ",".join(f"{v:g}" for v in value)
    return f"{brackets[:1]}{inner}{brackets[1:]}"


def _neutral(op: str, value: Stat) -> bool:
    neutral = 1.0 if op == "Div" else 0.0
    return all(v == neutral for v in value) if isinstance(value, tuple) else value == neutral


def _stat(values) -> Stat:
    """One value as a float, several as a tuple of floats."""
    if isinstance(values, (list, tuple)):
        return float(values[0]) if len(values) == 1 else tuple(float(v) for v in values)
    return float(values)


def _per_channel(values: tuple[float, ...]) -> np.ndarray:
    return np.asarray(values, np.float32).reshape(1, -1, 1, 1)


def _values(flag: str, given, channels: int) -> list[float]:
    """--mean/--std as floats: one value, or one per channel ('0.485,0.456,0.406')."""
    if isinstance(given, str):
        hint = "e.g. 0.449, or 0.485,0.456,0.406 for an RGB net"
        values = [parse_number(part, flag, hint) for part in given.split(",")]
    elif isinstance(given, (list, tuple)):
        values = [float(v) for v in given]
    else:
        values = [float(given)]
    for value in values:
        if not math.isfinite(value):
            raise EnsError(f"{flag} {value!r} is not allowed; give a finite number")
    if channels is not None and len(values) not in (1, channels):  # not known yet: check_channels
        raise EnsError(
            f"{flag} lists {len(values)} values but the net takes {channels} channel(s); give one value, "
            f"or one per channel in the net's channel order (--channels {len(values)} for an RGB net)"
        )
    return values


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
