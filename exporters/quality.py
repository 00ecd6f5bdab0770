"""Is an exported member any good? Its course mIoU on the shared validation split, compared with
always predicting the majority class, and how much of the labelled area it gives to one class.

Parity cannot catch wrong preprocessing: the source and its ONNX copy see the same wrong inputs
and agree. A net fed inputs far outside its training range predicts one class nearly everywhere,
which this check, run on the member itself with the project's metric, does catch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ensemble.data import open_data
from ensemble.decode import decode
from ensemble.metrics import ConfusionAccumulator, course_miou
from ensemble.session import MemberSession
from ensemble.sources import make_source
from ensemble.split import SplitSpec

DOMINANT_SHARE = 0.95
"""A member that gives one class more than this share of the labelled pixels is degenerate."""
CLAIM_TOLERANCE = 0.01
"""Largest gap between a --val-miou claim and the measured val mIoU (same split, same metric)."""
BATCH = 32


@dataclass(frozen=True)
class Quality:
    """A member's scores on the labelled validation images (course metric: true-0 pixels dropped)."""

    val_miou: float
    baseline_miou: float
    majority_class: int
    top_class: int
    top_share: float
    scored_on: str

    def problem(self, class_names: tuple[str, ...]) -> str | None:
        """Why the member is degenerate, or None."""
        if self.top_share > DOMINANT_SHARE:
            return (
                f"it predicts {class_names[self.top_class]!r} on {self.top_share:.1%} of the labelled "
                f"pixels (val mIoU {self.val_miou:.4f})"
            )
        if self.val_miou < self.baseline_miou:
            return (
                f"its val mIoU {self.val_miou:.4f} is below the {self.baseline_miou:.4f} of always "
                f"predicting the majority class {class_names[self.majority_class]!r}"
            )
        return None

    def summary(self) -> str:
        return (
            f"val course mIoU {self.val_miou:.4f} on {self.scored_on} "
            f"(majority-class baseline {self.baseline_miou:.4f})"
        )


def measure_quality(
    session: MemberSession, data: Path | None, spec: SplitSpec, n_classes: int
) -> tuple[Quality | None, str]:
    """Score the member on the validation split of `data`; (None, why) when there is nothing to score."""
    if data is None or not data.is_file():
        return None, f"val mIoU not measured: {'no --data given' if data is None else f'{data} absent'}"
    handle = open_data(data)
    n_val = len(spec.val_ids) if spec.val_ids is not None else int(round(handle.n_train * spec.val_fraction))
    if handle.n_train == 0 or n_val == 0:
        return None, f"val mIoU not measured: {data.name} has no labelled validation images"
    source = make_source(handle, "val", spec)
    truth = source.truth()
    if int(truth.max(initial=0)) >= n_classes:
        return None, (
            f"val mIoU not measured: {data.name} has labels up to {int(truth.max())} but the model "
            f"predicts {n_classes} classes"
        )
    confusion = ConfusionAccumulator(n_classes)
    start = 0
    for _, images in source.batches(BATCH):
        probs = session.run(images[:, None].astype(np.float32))
        confusion.update(truth[start : start + len(images)], decode(probs))
        start += len(images)
    matrix = confusion.matrix
    labelled = matrix[1:]
    if labelled.sum() == 0:
        return None, f"val mIoU not measured: the validation images of {data.name} hold only class 0"
    predicted = labelled.sum(axis=0)
    majority = 1 + int(np.argmax(labelled.sum(axis=1)[:]))
    baseline = np.zeros_like(matrix)
    baseline[:, majority] = matrix.sum(axis=1)
    quality = Quality(
        val_miou=course_miou(matrix),
        baseline_miou=course_miou(baseline),
        majority_class=majority,
        top_class=int(np.argmax(predicted)),
        top_share=float(predicted.max() / predicted.sum()),
        scored_on=f"{source.n_images} validation image{'s' * (source.n_images != 1)} of {data.name} "
        f"({source.description})",
    )
    return quality, quality.summary()
