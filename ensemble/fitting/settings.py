"""What `ens fit` is asked and what it returns: the fit settings and their checks, the scores of the
stages, one fit's weights, gains and min_area, and the final result with its CV estimates."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ensemble.data.metrics import get_metric
from ensemble.errors import EnsError
from ensemble.inference.cleanup import check_connectivity
from ensemble.optionvalues import check_int, check_seed, short_repr

DEFAULT_FOLDS = 5
WEIGHTS_PER = ("auto", "member", "class")


@dataclass(frozen=True)
class FitSettings:
    """`weights_per`: "member" (one weight per member), "class" (per member and class) or "auto"
    (whichever cross-validates better)."""

    weights_per: str = "auto"
    metric: str = "course"
    connectivity: int = 4
    folds: int = DEFAULT_FOLDS
    seed: int = 0


@dataclass(frozen=True)
class Stages:
    """Scores of the stages on one set of images: equal weights, learned weights, + class gains,
    + cleanup (each stage on top of the previous one)."""

    equal: float
    learned: float
    gained: float
    cleaned: float

    @property
    def weight_gain(self) -> float:
        return self.learned - self.equal

    @property
    def class_gain_gain(self) -> float:
        return self.gained - self.learned

    @property
    def cleanup_gain(self) -> float:
        return self.cleaned - self.gained

    def to_dict(self) -> dict:
        return {
            "equal": self.equal,
            "learned": self.learned,
            "learned+gains": self.gained,
            "learned+gains+cleanup": self.cleaned,
            "weight_gain": self.weight_gain,
            "class_gain_gain": self.class_gain_gain,
            "cleanup_gain": self.cleanup_gain,
        }


@dataclass(frozen=True)
class Fitted:
    """One fit: normalised (M, C) weights, (C,) decoding gains and (C,) min_area."""

    weights: np.ndarray
    gains: np.ndarray
    min_area: np.ndarray


@dataclass(frozen=True)
class FitResult:
    """The final fit (stages whose CV gain was not positive switched off), its in-sample scores, the
    nested cross-validated ones (`cv`) and those of the CV that made the choices (`selection`)."""

    fitted: Fitted
    in_sample: Stages
    cv: Stages | None
    use: tuple[bool, bool, bool]
    notes: list[str] = field(default_factory=list)
    weights_per: str = "member"
    cv_by_weights_per: dict[str, float] = field(default_factory=dict)
    folds: int = 0
    selection: Stages | None = None

    @property
    def weights(self) -> np.ndarray:
        return self.fitted.weights

    @property
    def gains(self) -> np.ndarray:
        return self.fitted.gains

    @property
    def min_area(self) -> np.ndarray:
        return self.fitted.min_area


def check_settings(settings: FitSettings, n_images: int) -> int:
    """The number of folds to use; refuses settings the fit cannot honour as asked."""
    if not isinstance(settings, FitSettings):
        raise EnsError(
            f"fit settings {type(settings).__name__} are not FitSettings; e.g. FitSettings(folds=5)"
        )
    if not isinstance(settings.weights_per, str) or settings.weights_per not in WEIGHTS_PER:
        raise EnsError(
            f"--weights-per {short_repr(settings.weights_per)} is unknown; "
            f"choose one of {', '.join(WEIGHTS_PER)}"
        )
    if n_images < 1:
        raise EnsError("there are no validation images to fit on; check the split options")
    get_metric(settings.metric)
    check_connectivity(settings.connectivity)
    check_seed(check_int(settings.seed, "seed", 0, None, "use a non-negative seed such as 0"), "seed")
    check_int(settings.folds, "--folds", 0, None, f"use e.g. --folds {DEFAULT_FOLDS}, or 0 for none")
    if not 0 <= settings.folds <= n_images:
        raise EnsError(
            f"--folds {settings.folds} is outside 0..{n_images}: each fold needs at least one of the "
            f"{n_images} validation images; use e.g. --folds {min(DEFAULT_FOLDS, n_images)}, or 0 for none"
        )
    return settings.folds


def check_labelled(truths: list[np.ndarray]) -> None:
    """Refuse masks that are class 0 everywhere: both metrics drop those pixels, so no weight or
    threshold could be learned (and the fit would divide by zero)."""
    if not any(np.any(truth) for truth in truths):
        n_images = sum(len(truth) for truth in truths)
        raise EnsError(
            f"the {n_images} validation images hold no labelled pixels (every mask is class 0, which "
            "the metric ignores), so there is nothing to fit; check --masks and the split options"
        )
