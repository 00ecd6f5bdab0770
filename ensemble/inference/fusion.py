"""From member probabilities to labels: weighted fusion as a streaming accumulator (append, then
result), decoding gains, and the argmax with the course metric in mind.

Weights are one per member or a (members x classes) matrix; each class column is normalised to sum
to 1 over members, so every fused class score is a weighted mean of that class's member
probabilities. Decoding gains multiply class scores before the argmax: members trained with
cross-entropy rarely pick a rare class (big rock is 0.13% of the pixels), yet the course metric weighs
every class equally. Gains are folded into the fusion weights, so they cost nothing at prediction
time. The course metric drops true-background pixels but counts class 0 whenever it is predicted, so
by default the argmax runs over classes 1..C-1.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ensemble.errors import EnsError
from ensemble.optionvalues import key_values, parse_int, parse_number, short_repr

MIN_GAIN, MAX_GAIN = 1e-6, 1e6


def parse_class_gain(text: str, n_classes: int) -> np.ndarray:
    """Parse `--class-gain 4=8,3=1.2` into a (C,) float64 array (unnamed classes keep 1).

    >>> parse_class_gain("4=8", 5).tolist()
    [1.0, 1.0, 1.0, 1.0, 8.0]
    """
    gains = np.ones(n_classes)
    for cls, value in key_values(text, "--class-gain", "4=8"):
        what = f"--class-gain entry '{cls}={value}':"
        index = parse_int(cls, f"{what} class", 0, n_classes - 1, "give CLASS=GAIN, e.g. --class-gain 4=8")
        gain = parse_number(value, f"{what} gain", "give CLASS=GAIN with GAIN > 0, e.g. --class-gain 4=8")
        if not MIN_GAIN <= gain <= MAX_GAIN:
            raise EnsError(
                f"--class-gain {cls}={value} is outside {MIN_GAIN:g}..{MAX_GAIN:g}; a gain multiplies "
                "the class score before the argmax, e.g. 4=8"
            )
        gains[index] = gain
    return gains


def gain_array(gain, n_classes: int) -> np.ndarray:
    """Check a gain vector (None: all ones); gains stay in MIN_GAIN..MAX_GAIN so that the float32
    fusion weights they scale neither overflow nor vanish."""
    try:
        gains = np.ones(n_classes) if gain is None else np.array(gain, np.float64)
    except (TypeError, ValueError, OverflowError) as exc:
        raise EnsError(
            f"class gains {short_repr(gain)} are not numbers; give {n_classes} numbers > 0"
        ) from exc
    if gains.shape != (n_classes,) or not ((gains >= MIN_GAIN) & (gains <= MAX_GAIN)).all():
        raise EnsError(
            f"class gains must be {n_classes} numbers in {MIN_GAIN:g}..{MAX_GAIN:g}, "
            f"got {short_repr(gains.tolist())}; e.g. 1 for every class but a rare one"
        )
    return gains


def scaled_weights(weights: np.ndarray, gain) -> np.ndarray:
    """Normalised (M, C) fusion weights with column c multiplied by gain[c], as float32."""
    gains = gain_array(gain, weights.shape[1])
    return (np.asarray(weights, np.float64) * gains[None, :]).astype(np.float32)


def normalise_weights(weights: np.ndarray | Sequence[float], n_members: int, n_classes: int) -> np.ndarray:
    """Check and broadcast weights to a (members, classes) float32 matrix whose columns sum to 1.

    Each column is divided by its maximum before its sum is taken, so weights near the float64
    limit cannot overflow the sum to inf (which would zero the class).

    >>> normalise_weights([1.7e308, 1.7e308, 0.0], 3, 2)[:, 0].tolist()
    [0.5, 0.5, 0.0]
    """
    try:
        matrix = np.array(weights, dtype=np.float64)
    except (TypeError, ValueError, OverflowError) as exc:
        raise EnsError(
            f"fusion weights {short_repr(weights)} are not numbers; give one number >= 0 per member"
        ) from exc
    if matrix.ndim == 1:
        matrix = np.repeat(matrix[:, None], n_classes, axis=1)
    if matrix.shape != (n_members, n_classes):
        raise EnsError(
            f"fusion weights have shape {tuple(np.shape(weights))}; expected ({n_members},) or "
            f"({n_members}, {n_classes}) for {n_members} members and {n_classes} classes"
        )
    bad = ~np.isfinite(matrix) | (matrix < 0)
    if bad.any():
        member, cls = np.argwhere(bad)[0]
        raise EnsError(
            f"fusion weight {float(matrix[member, cls])!r} of member {member}, class {cls} is not allowed; "
            "weights must be finite numbers >= 0"
        )
    top = matrix.max(axis=0)
    if (top <= 0).any():
        raise EnsError(
            f"fusion weights of class {int(np.argmax(top <= 0))} are all 0; "
            "give at least one member a positive weight"
        )
    scaled = matrix / top
    return (scaled / scaled.sum(axis=0)).astype(np.float32)


class WeightedMerger:
    """Accumulate `weights[m, c] * probs_m` member by member for one batch."""

    def __init__(self, weights: np.ndarray) -> None:
        weights = np.asarray(weights, dtype=np.float32)
        if weights.ndim != 2:
            raise EnsError(f"WeightedMerger needs a (members, classes) matrix, got shape {weights.shape}")
        self.weights = weights
        self._total: np.ndarray | None = None
        self._scratch: np.ndarray | None = None
        self._seen: set[int] = set()

    def append(self, member: int, probs: np.ndarray) -> None:
        """Add member `member`'s (B, C, H, W) probabilities."""
        if member in self._seen:
            raise EnsError(f"member {member} was added twice to the same batch")
        if probs.shape[1] != self.weights.shape[1]:
            raise EnsError(
                f"member {member} gave {probs.shape[1]} classes, fusion expects {self.weights.shape[1]}"
            )
        column = self.weights[member][None, :, None, None]
        if self._total is None:
            self._total = probs * column
        elif probs.shape != self._total.shape:
            raise EnsError(
                f"member {member} gave probabilities of shape {probs.shape}, earlier members "
                f"{self._total.shape}; members must predict the same shape"
            )
        elif probs.dtype == self._total.dtype:
            # one reused product buffer instead of a fresh batch-sized temporary per member
            scratch = self._scratch
            if scratch is None or (scratch.shape, scratch.dtype) != (probs.shape, probs.dtype):
                scratch = self._scratch = np.empty_like(self._total)
            self._total += np.multiply(probs, column, out=scratch)
        else:
            self._total += probs * column
        self._seen.add(member)

    def result(self) -> np.ndarray:
        """The fused (B, C, H, W) probabilities; resets the merger for the next batch."""
        missing = sorted(set(range(len(self.weights))) - self._seen)
        if self._total is None or missing:
            raise EnsError(f"fusion is missing members {missing}; every member must be added")
        total, self._total, self._seen = self._total, None, set()
        return total


def fuse(
    probs: Sequence[np.ndarray], weights: np.ndarray | Sequence[float] | None = None, gain=None
) -> np.ndarray:
    """One-call fusion of per-member (B, C, H, W) probabilities; equal weights by default, class
    scores times `gain` (see `ensemble.inference.fusion`) when given, exactly as `ens predict` fuses them."""
    n_members, n_classes = len(probs), probs[0].shape[1]
    matrix = normalise_weights(np.ones(n_members) if weights is None else weights, n_members, n_classes)
    merger = WeightedMerger(matrix if gain is None else scaled_weights(matrix, gain))
    for index, member_probs in enumerate(probs):
        merger.append(index, member_probs)
    return merger.result()


def parse_weights(text: str, names: Sequence[str]) -> np.ndarray:
    """Parse `a=0.5,b=0.3,c=0.2` into per-member weights in the order of `names`.

    >>> parse_weights("b=1, a=3", ["a", "b"]).tolist()
    [3.0, 1.0]
    """
    example = ",".join(f"{n}=1" for n in names)
    weights = {}
    for name, value in key_values(text, "--weights", example):
        if name not in names:
            raise EnsError(f"--weights names {name!r}, which is not among the members {list(names)}")
        what = f"--weights entry '{name}={value}': weight"
        weight = parse_number(value, what, f"give NAME=WEIGHT with WEIGHT >= 0, e.g. --weights {example}")
        if weight < 0:
            raise EnsError(
                f"--weights {name}={value} is negative; weights are >= 0, e.g. --weights {example}"
            )
        weights[name] = weight
    missing = [n for n in names if n not in weights]
    if missing:
        raise EnsError(f"--weights gives no weight for {missing}; give one for every member, e.g. {example}")
    if not any(weights.values()):
        raise EnsError(f"--weights {text!r} gives every member weight 0; give at least one a weight > 0")
    return np.array([weights[n] for n in names], dtype=np.float64)


def decode(probs: np.ndarray, allow_background: bool = False) -> np.ndarray:
    """Argmax of (B, C, H, W) probabilities to uint8 (B, H, W) labels; ties go to the lower class.

    >>> p = np.array([[[[0.6]], [[0.3]], [[0.1]]]], np.float32)  # (1, 3, 1, 1)
    >>> decode(p).ravel().tolist(), decode(p, allow_background=True).ravel().tolist()
    ([1], [0])
    """
    first = 0 if allow_background else 1
    best = probs[:, first].copy()
    labels = np.full(best.shape, first, dtype=np.uint8)
    for cls in range(first + 1, probs.shape[1]):
        better = probs[:, cls] > best
        labels[better] = cls
        np.maximum(best, probs[:, cls], out=best)
    return labels
