"""Is an exported member any good? Its course mIoU on the shared validation split, compared with
always predicting the majority class, and how much of the labelled area it gives to one class.

Parity cannot catch wrong preprocessing or BatchNorm statistics that differ from training: the
source and its ONNX copy see the same inputs, use the same statistics and agree. This check runs
the member itself with the project's metric: a net fed inputs far outside its training range, or
normalised with statistics it was not trained with, predicts one or two classes nearly everywhere
(while the labels spread over more), or scores clearly better when its input is remapped to
another of the declarable ranges, and either is refused unless forced.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ensemble.data.datafile import open_data
from ensemble.data.folder import open_folder
from ensemble.data.metrics import ConfusionAccumulator, course_miou
from ensemble.data.sources import make_source
from ensemble.data.split import SplitSpec
from ensemble.data.tta import IDENTITY
from ensemble.inference.fusion import decode
from ensemble.inference.runner import member_probs
from ensemble.members.channels import check_channels, to_pixels
from ensemble.members.session import MemberSession
from exporters.preprocessing import RANGES, Normalisation

DOMINANT_SHARE = 0.95
"""A member that gives one class more than this share of the labelled pixels is degenerate."""
CLAIM_TOLERANCE = 0.01
"""Largest gap between a --val-miou claim and the measured val mIoU (same split, same metric)."""
PROBE_IMAGES = 64
PROBE_MARGIN = 0.05
"""Another --input-range that scores this much higher on the probe images means a misread range."""
BATCH = 32
COVER_SHARE = 0.95
"""Predictions that need at least COLLAPSED fewer classes than the labels to cover this share of the
labelled pixels have collapsed onto a few classes."""
COLLAPSED = 2
BATCHNORM = (
    "BatchNorm statistics that differ between training and eval mode (running mean/var never "
    "updated, or not matching the training batches)"
)


def likely_causes(preprocessing: str, batchnorm: bool) -> str:
    """The likely causes of a member that scores far below what it should, likeliest first:
    BatchNorm statistics lead when the net has BatchNorm layers, preprocessing otherwise."""
    wrong_input = f"preprocessing that differs from training ({preprocessing})"
    if batchnorm:
        return f"likely causes: {BATCHNORM}, then {wrong_input}"
    return f"likely causes: {wrong_input}, or {BATCHNORM}"


def cover(shares: np.ndarray, share: float = COVER_SHARE) -> int:
    """How many classes, largest first, it takes for `shares` to exceed `share` of the total.

    >>> cover(np.array([0.0, 0.76, 0.24, 0.0])), cover(np.array([0.4, 0.3, 0.2, 0.1]))
    (2, 4)
    """
    ordered = np.sort(np.asarray(shares, np.float64))[::-1]
    return int(np.searchsorted(np.cumsum(ordered), share * ordered.sum(), side="right")) + 1


@dataclass(frozen=True)
class RangeProbe:
    """The member's course mIoU on the first validation images as declared, and fed as if the best
    other --input-range had been declared instead."""

    declared: float
    other_range: str
    other: float
    n_images: int


@dataclass(frozen=True)
class Quality:
    """A member's scores on the labelled validation images (course metric: true-0 pixels dropped)."""

    val_miou: float
    baseline_miou: float
    majority_class: int
    top_class: int
    top_share: float
    scored_on: str
    probe: RangeProbe | None = None
    predicted_shares: tuple[float, ...] = ()
    labelled_shares: tuple[float, ...] = ()

    def problem(
        self, class_names: tuple[str, ...], declared: Normalisation, batchnorm: bool = False
    ) -> str | None:
        """Why the member must not enter the store unforced, with the likely causes; None if it may."""
        preprocessing = f"net input = {declared.formula()}; check --input-range/--mean/--std"
        causes = likely_causes(preprocessing, batchnorm)
        probe = self.probe
        if probe is not None and probe.other > probe.declared + PROBE_MARGIN:
            return (
                f"on the first {probe.n_images} validation images it scores {probe.declared:.4f} as declared "
                f"(--input-range {declared.input_range}) but {probe.other:.4f} when fed as --input-range "
                f"{probe.other_range}, so the net was most likely trained on {probe.other_range} inputs: "
                f"pass --input-range {probe.other_range} if it was"
            )
        if self.top_share > DOMINANT_SHARE:
            return (
                f"on {self.scored_on} it predicts {class_names[self.top_class]!r} on {self.top_share:.1%} of "
                f"the labelled pixels (val mIoU {self.val_miou:.4f}); {causes}; else an untrained or "
                "broken model"
            )
        collapse = self.collapse(class_names)
        if collapse:
            return f"on {self.scored_on} {collapse} (val mIoU {self.val_miou:.4f}); {causes}"
        if self.val_miou < self.baseline_miou:
            return (
                f"on {self.scored_on} its val mIoU {self.val_miou:.4f} is below the {self.baseline_miou:.4f} "
                f"of always predicting the majority class {class_names[self.majority_class]!r}; {causes}; "
                "else an untrained or broken model"
            )
        return None

    def collapse(self, class_names: tuple[str, ...]) -> str | None:
        """What is wrong when the predictions cover far fewer classes than the labels, or None."""
        if not self.predicted_shares or not self.labelled_shares:
            return None
        predicted, labelled = np.array(self.predicted_shares), np.array(self.labelled_shares)
        used, spread = cover(predicted), cover(labelled)
        if used > spread - COLLAPSED:
            return None

        def shares(values: np.ndarray) -> str:
            top = np.argsort(-values, kind="stable")[: max(used, spread)]
            return ", ".join(f"{class_names[1 + c]!r} {values[c]:.0%}" for c in top if values[c] > 0)

        return (
            f"{used} class{'es' * (used != 1)} cover over {COVER_SHARE:.0%} of its predictions "
            f"({shares(predicted)}) while the labels spread over {spread} ({shares(labelled)})"
        )

    def summary(self) -> str:
        return (
            f"val course mIoU {self.val_miou:.4f} on {self.scored_on} "
            f"(majority-class baseline {self.baseline_miou:.4f})"
        )


def measure_quality(
    session: MemberSession,
    data: Path | None,
    spec: SplitSpec,
    n_classes: int,
    declared: Normalisation | None = None,
    masks: Path | None = None,
    channels: int = 1,
) -> tuple[Quality | None, str]:
    """Score the member on the validation split of `data` (an npz, or an image folder with `masks`);
    (None, why) when there is nothing to score.

    With `declared` (raw pixels -> net input, no mean/std), the first validation images are also
    scored as if each other input range had been declared, to catch a misread range."""
    if data is None or not data.exists():
        return None, f"val mIoU not measured: {'no --data given' if data is None else f'{data} absent'}"
    if data.is_dir():
        if masks is None:
            return None, f"val mIoU not measured: the image folder {data.name} was given without --masks"
        handle = open_folder(data, masks)
        n_labelled = handle.n_images
    else:
        handle = open_data(data)
        n_labelled = handle.n_train
    n_val = len(spec.val_ids) if spec.val_ids is not None else int(round(n_labelled * spec.val_fraction))
    if n_labelled == 0 or n_val == 0:
        return None, f"val mIoU not measured: {data.name} has no labelled validation images"
    source = make_source(handle, "val", spec)
    truths = source.truth_parts()
    top = max(int(t.max(initial=0)) for t in truths)
    if top >= n_classes:
        return None, (
            f"val mIoU not measured: {data.name} has labels up to {top} but the model "
            f"predicts {n_classes} classes"
        )
    check_channels(channels, source.channels, gray_to_rgb=True)
    confusion, first = ConfusionAccumulator(n_classes), ConfusionAccumulator(n_classes)
    probe_images: list[np.ndarray] = []
    probe_truth: list[np.ndarray] = []
    for group, truth in enumerate(truths):
        start = 0
        for _, images in source.group_batches(group, BATCH, channels):
            labels = decode(member_probs(session, to_pixels(images, channels), (IDENTITY,)))
            confusion.update(truth[start : start + len(images)], labels)
            if group == 0 and start < PROBE_IMAGES:
                keep = min(len(images), PROBE_IMAGES - start)
                first.update(truth[start : start + keep], labels[:keep])
                probe_images.append(images[:keep])
                probe_truth.append(truth[start : start + keep])
            start += len(images)
    matrix = confusion.matrix
    if matrix[1:].sum() == 0:
        return None, f"val mIoU not measured: the validation images of {data.name} hold only class 0"
    probe = None
    if declared is not None and not declared.has_stats and declared.channel_order == "rgb":
        images = to_pixels(np.concatenate(probe_images), channels)
        probe = _probe_ranges(session, images, np.concatenate(probe_truth), n_classes, declared, first.matrix)
    quality = Quality(
        **_scores(matrix),
        scored_on=f"{source.n_images} validation image{'s' * (source.n_images != 1)} of {data.name} "
        f"({source.description})",
        probe=probe,
    )
    return quality, quality.summary()


def _scores(matrix: np.ndarray) -> dict:
    """Course mIoU, the majority-class baseline and the most predicted class over labelled pixels."""
    labelled = matrix[1:]
    predicted = labelled.sum(axis=0)
    majority = 1 + int(np.argmax(labelled.sum(axis=1)))
    baseline = np.zeros_like(matrix)
    baseline[:, majority] = matrix.sum(axis=1)
    return {
        "val_miou": course_miou(matrix),
        "baseline_miou": course_miou(baseline),
        "majority_class": majority,
        "top_class": int(np.argmax(predicted)),
        "top_share": float(predicted.max() / max(predicted.sum(), 1)),
        "predicted_shares": tuple(float(v) for v in predicted[1:] / max(predicted.sum(), 1)),
        "labelled_shares": tuple(float(v) for v in labelled.sum(axis=1) / max(labelled.sum(), 1)),
    }


def _probe_ranges(
    session: MemberSession,
    images: np.ndarray,
    truth: np.ndarray,
    n_classes: int,
    declared: Normalisation,
    declared_matrix: np.ndarray,
) -> RangeProbe | None:
    """Feed the member pixels (from raw float32 (N, C_in, H, W) `images`) that its declared mapping
    turns into each other range's net input; the best other range that gives a sound member (not one
    class, above the baseline) is returned."""
    low, high = RANGES[declared.input_range]
    best = RangeProbe(course_miou(declared_matrix), "", 0.0, len(images))
    for other in RANGES:
        if other == declared.input_range:
            continue
        net_input = Normalisation(other).apply(images)
        pixels = (net_input - np.float32(low)) * np.float32(255.0 / (high - low))
        confusion = ConfusionAccumulator(n_classes)
        for start in range(0, len(images), BATCH):
            batch = np.ascontiguousarray(pixels[start : start + BATCH], np.float32)
            probs = member_probs(session, batch, (IDENTITY,))
            confusion.update(truth[start : start + BATCH], decode(probs))
        scores = _scores(confusion.matrix)
        collapsed = (
            cover(np.array(scores["predicted_shares"]))
            <= cover(np.array(scores["labelled_shares"])) - COLLAPSED
        )
        sound = (
            scores["top_share"] <= DOMINANT_SHARE
            and scores["val_miou"] > scores["baseline_miou"]
            and not collapsed
        )
        if sound and scores["val_miou"] > best.other:
            best = RangeProbe(best.declared, other, scores["val_miou"], len(images))
    return best if best.other_range else None
