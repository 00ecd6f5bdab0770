"""`ens score --val`: what each stage wins — every member alone, equal fusion, learned fusion, + TTA,
+ class gains, + cleanup — scored on labelled images from cached member probabilities, batch by batch."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ensemble.data.metrics import ConfusionAccumulator, get_metric, iou_per_class
from ensemble.data.tta import get_views
from ensemble.fitting.cache import ProbCache, view_mean
from ensemble.inference.cleanup import remove_small_regions
from ensemble.inference.fusion import decode, fuse, normalise_weights
from ensemble.members.ensemblefile import EnsembleSpec
from ensemble.members.member import Member

GALLERY_IMAGES = 6


@dataclass(frozen=True)
class Row:
    """One ablation configuration: which members, their (M, C) weights, TTA, (C,) decoding gains
    and (C,) min_area."""

    name: str
    members: tuple[int, ...]
    weights: np.ndarray
    tta: str
    min_area: np.ndarray
    gain: np.ndarray | None = None
    connectivity: int = 4


@dataclass(frozen=True)
class RowScore:
    row: Row
    confusion: np.ndarray
    miou: float
    iou: np.ndarray


@dataclass(frozen=True)
class Ablation:
    """Scores of every row, plus truth and final-row predictions of the first images for a gallery."""

    rows: list[RowScore]
    metric: str
    member_names: tuple[str, ...]
    class_names: tuple[str, ...]
    n_images: int
    gallery: tuple[np.ndarray, np.ndarray, np.ndarray]

    def to_json(self) -> dict:
        return {
            "metric": self.metric,
            "n_images": self.n_images,
            "rows": [_row_json(s, self.member_names, self.class_names) for s in self.rows],
        }


def build_rows(
    n_members: int, n_classes: int, spec: EnsembleSpec | None, tta: str, names, min_area=None, connectivity=4
) -> list[Row]:
    """Members alone (no TTA), equal fusion, learned fusion (with a spec), then cumulative rows:
    + TTA, + class gains, + cleanup. `min_area` (C,) replaces the spec's thresholds for the last row."""
    zeros = np.zeros(n_classes, np.int64)
    every = tuple(range(n_members))
    rows = [Row(name, (m,), np.ones((1, n_classes)), "none", zeros) for m, name in enumerate(names)]
    equal = normalise_weights(np.ones(n_members), n_members, n_classes)
    if n_members > 1:
        rows.append(Row("equal fusion", every, equal, "none", zeros))
    weights = equal
    if spec is not None and n_members > 1:
        weights = normalise_weights(spec.weight_matrix(), n_members, n_classes)
        rows.append(Row("learned fusion", every, weights, "none", zeros))
    if tta != "none":
        rows.append(Row(f"+ TTA {tta}", every, weights, tta, zeros))
    gain = None
    if spec is not None and (spec.gain_vector() != 1).any():
        gain = spec.gain_vector()
        rows.append(Row("+ class gains", every, weights, tta, zeros, gain))
    if spec is not None:  # the fitted neighbourhood applies to --min-area thresholds too
        connectivity = spec.connectivity
        min_area = spec.min_area if min_area is None else min_area
    if min_area is not None and any(min_area):
        areas = np.asarray(min_area, np.int64)
        rows.append(Row("+ cleanup", every, weights, tta, areas, gain, connectivity))
    return rows


def run_ablation(
    members: list[Member],
    cache: ProbCache,
    truth: np.ndarray | list[np.ndarray],
    rows: list[Row],
    metric: str = "course",
    batch_size: int = 256,
    on_batch: Callable[[int], None] | None = None,
) -> Ablation:
    """Score every row on the cache's images (`truth` as one array, or one per image size); memory
    is bounded by `batch_size`."""
    get_metric(metric)
    n_classes = members[0].n_classes
    truths = truth if isinstance(truth, list) else [truth]
    views = {name: get_views(name) for name in {row.tta for row in rows}}
    needed = {view for vs in views.values() for view in vs}
    parts = {
        (m, view.name): cache.get_parts(member, view) for m, member in enumerate(members) for view in needed
    }
    accumulators = [ConfusionAccumulator(n_classes) for _ in rows]
    gallery_pred = None
    for part, part_truth in enumerate(truths):
        arrays = {key: found[part] for key, found in parts.items()}
        for start in range(0, len(part_truth), batch_size):
            stop = min(start + batch_size, len(part_truth))
            merged: dict[tuple[int, str], np.ndarray] = {}
            for row_index, row in enumerate(rows):
                probs = [
                    _member_batch(arrays, merged, m, row.tta, views[row.tta], start, stop)
                    for m in row.members
                ]
                labels = decode(fuse(probs, row.weights, row.gain))
                if row.min_area.any():
                    labels = remove_small_regions(
                        labels, row.min_area, n_classes, row.connectivity, out=labels
                    )
                accumulators[row_index].update(part_truth[start:stop], labels)
                if part == 0 and start == 0 and row_index == len(rows) - 1:
                    gallery_pred = labels[:GALLERY_IMAGES].copy()
            if on_batch is not None:
                on_batch(stop - start)
    reduce = get_metric(metric).reduce
    scores = [
        RowScore(row, acc.matrix, reduce(acc.matrix), iou_per_class(acc.matrix))
        for row, acc in zip(rows, accumulators, strict=True)
    ]
    _, first_images = next(cache.source.batches(GALLERY_IMAGES, members[0].channels))
    return Ablation(
        scores,
        metric,
        tuple(m.name for m in members),
        members[0].info.class_names,
        sum(len(t) for t in truths),
        (first_images, truths[0][:GALLERY_IMAGES], gallery_pred),
    )


def _member_batch(arrays, merged, member: int, tta: str, views, start: int, stop: int) -> np.ndarray:
    """TTA mean of one member's cached views for images start:stop, computed once per batch."""
    key = (member, tta)
    if key not in merged:
        merged[key] = view_mean([arrays[member, view.name][start:stop] for view in views])
    return merged[key]


def _row_json(score: RowScore, names: tuple[str, ...], class_names: tuple[str, ...]) -> dict:
    row = score.row
    used = [names[m] for m in row.members]
    weights = row.weights
    if np.allclose(weights, weights[:, :1]):
        weight_json = {n: round(float(w), 6) for n, w in zip(used, weights[:, 0], strict=True)}
    else:
        weight_json = {n: [round(float(v), 6) for v in w] for n, w in zip(used, weights, strict=True)}
    cleanup = None
    gain = None if row.gain is None else {class_names[c]: float(g) for c, g in enumerate(row.gain) if c > 0}
    if row.min_area.any():
        cleanup = {
            "min_area": {class_names[c]: int(a) for c, a in enumerate(row.min_area) if c > 0},
            "connectivity": row.connectivity,
        }
    return {
        "name": row.name,
        "members": used,
        "tta": row.tta,
        "weights": weight_json,
        "class_gain": gain,
        "cleanup": cleanup,
        "miou": score.miou,
        "per_class": {
            class_names[c]: (None if np.isnan(v) else float(v)) for c, v in enumerate(score.iou) if c > 0
        },
    }
