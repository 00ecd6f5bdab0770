"""What decides the labels besides the members and the images, and where each setting comes from:
an explicit choice wins, then the ensemble file `ens fit` wrote, then the defaults."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ensemble.members.ensemblefile import EnsembleSpec
from ensemble.members.member import Member
from ensemble.members.session import Device

DEFAULT_BATCH = 64
DEFAULT_TTA = "flip"
DEFAULT_CONNECTIVITY = 4


@dataclass(frozen=True)
class PredictOptions:
    """Everything that decides the labels, besides the members and the images."""

    tta: str = DEFAULT_TTA
    weights: np.ndarray | None = None
    allow_background: bool = False
    min_area: np.ndarray | int = 0
    class_gain: np.ndarray | None = None
    connectivity: int = DEFAULT_CONNECTIVITY
    batch_size: int = DEFAULT_BATCH
    device: str = Device.auto.value
    threads: int | None = None
    gray_to_rgb: bool = False
    workers: int | None = None
    runtime: str = "auto"


def resolve_options(
    members: list[Member],
    spec: EnsembleSpec | None,
    base: PredictOptions = PredictOptions(),
    *,
    tta: str | None = None,
    weights: np.ndarray | None = None,
    class_gain: np.ndarray | None = None,
    min_area: np.ndarray | None = None,
    connectivity: int | None = None,
) -> PredictOptions:
    """`base` with each fusion, decoding and cleanup setting taken from the explicit value, else the
    ensemble file, else the default (flip TTA, equal weights, gains of 1, no cleanup, 4-connectivity).

    The file's `metric` and `fit` are the fit's evidence: they decide nothing here.
    """
    n_classes = members[0].n_classes
    if spec is None:
        spec_values = (DEFAULT_TTA, None, None, np.zeros(n_classes, np.int64), DEFAULT_CONNECTIVITY)
    else:
        spec_values = (
            spec.tta,
            spec.weight_matrix(),
            spec.gain_vector(),
            np.asarray(spec.min_area, np.int64),
            spec.connectivity,
        )
    given = (tta, weights, class_gain, min_area, connectivity)
    chosen = [
        value if value is not None else fallback for value, fallback in zip(given, spec_values, strict=True)
    ]
    names = ("tta", "weights", "class_gain", "min_area", "connectivity")
    return replace(base, **dict(zip(names, chosen, strict=True)))
