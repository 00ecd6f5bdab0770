"""The validation split: deterministic from (seed, fraction) or an explicit file of indices.

`fit`, `score`, `predict --split val` and `ens train` all resolve the same SplitSpec the same way,
so a model is never validated on images it was trained on.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ensemble.data.outliers import find_duplicate_masks
from ensemble.errors import EnsError
from ensemble.optionvalues import check_seed, parse_int

DEFAULT_SEED = 0
DEFAULT_VAL_FRACTION = 0.2
MAX_ID = 2**62  # far above any image count; keeps ids in int64


@dataclass(frozen=True)
class Split:
    """Sorted training-set indices of the train and validation parts."""

    train: np.ndarray
    val: np.ndarray
    description: str
    val_outliers: int = 0  # validation images dropped as duplicated-mask outliers


@dataclass(frozen=True)
class SplitSpec:
    """How to split the labelled images; `resolve` turns it into indices."""

    seed: int = DEFAULT_SEED
    val_fraction: float = DEFAULT_VAL_FRACTION
    val_ids: tuple[int, ...] | tuple[str, ...] | None = None
    drop_outliers: bool = True
    ids_file: Path | None = field(default=None, compare=False)  # where val_ids were read, an input

    def resolve(
        self, n_images: int, outliers: np.ndarray | None = None, names: Sequence[str] | None = None
    ) -> Split:
        """Return the split of `n_images` labelled images, without `outliers` if asked to drop them.

        With `names` (an image folder's stems, in order), --val-ids name images by stem."""
        if self.val_ids is not None:
            ids = tuple(self.val_ids) if names is None else _positions(self.val_ids, names)
            val = _check_ids(ids, n_images)
            described = f"{len(val)} explicit validation ids"
        else:
            check_seed(self.seed, "--split-seed")
            if not 0.0 <= self.val_fraction < 1.0:
                raise EnsError(f"--val-fraction {self.val_fraction} is outside [0, 1); use e.g. 0.2")
            order = np.random.default_rng(self.seed).permutation(n_images)
            val = np.sort(order[: int(round(n_images * self.val_fraction))])
            described = f"seed {self.seed}, val fraction {self.val_fraction}"
        train = np.setdiff1d(np.arange(n_images), val)
        n_val = len(val)
        if self.drop_outliers and outliers is not None and len(outliers):
            train = np.setdiff1d(train, outliers)
            val = np.setdiff1d(val, outliers)
            described += f", {len(outliers)} outliers dropped"
        return Split(train, val, described, n_val - len(val))

    def to_dict(self) -> dict:
        return {
            "seed": self.seed,
            "val_fraction": self.val_fraction,
            "val_ids": None if self.val_ids is None else list(self.val_ids),
            "drop_outliers": self.drop_outliers,
        }


def read_ids_file(path: str | Path, names: bool = False) -> tuple[int, ...] | tuple[str, ...]:
    """Read training-set indices (or, with `names`, image stems) separated by commas, spaces or
    newlines (# starts a comment)."""
    raw = Path(path).read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise EnsError(
            f"--val-ids file {str(path)!r} is not UTF-8 text (byte {raw[exc.start]:#04x} at offset "
            f"{exc.start}); expected image indices in digits 0-9, separated by commas or newlines"
        ) from exc
    tokens = [t for line in text.splitlines() for t in re.split(r"[,\s]+", line.split("#")[0]) if t]
    if names:
        return tuple(tokens)
    what = f"--val-ids file {str(path)!r}: entry"
    hint = "expected training-set indices in digits 0-9, separated by commas or newlines"
    return tuple(parse_int(t, what, -MAX_ID, MAX_ID, hint) for t in tokens)


def _positions(ids: Sequence[int | str], names: Sequence[str]) -> tuple[int, ...]:
    """Stems named by --val-ids as positions among `names`."""
    where = {name: index for index, name in enumerate(names)}
    unknown = [str(i) for i in ids if str(i) not in where]
    if unknown:
        raise EnsError(
            f"validation id {unknown[0]!r} is not an image of the folder ({len(names)} images, e.g. "
            f"{names[0]!r}); list image file stems in the --val-ids file"
        )
    seen: set[str] = set()
    for name in map(str, ids):
        if name in seen:
            raise EnsError(f"validation id {name!r} is listed twice; list each once")
        seen.add(name)
    return tuple(where[str(i)] for i in ids)


def _check_ids(ids: tuple[int, ...], n_images: int) -> np.ndarray:
    if len(ids) == 0:
        raise EnsError("the --val-ids file is empty; list at least one training-set index")
    out_of_range = [i for i in ids if not 0 <= i < n_images]
    if out_of_range:
        raise EnsError(
            f"validation id {out_of_range[0]} is outside 0..{n_images - 1} "
            f"(the training set has {n_images} images); list indices of the training set"
        )
    unique, counts = np.unique(np.asarray(ids, dtype=np.int64), return_counts=True)
    if (counts > 1).any():
        raise EnsError(f"validation id {int(unique[counts > 1][0])} is listed twice; list each once")
    return unique


def split_masks(masks: np.ndarray, spec: SplitSpec) -> Split:
    """The split of these labelled images, without the duplicated-mask outliers when `spec` drops them."""
    outliers = find_duplicate_masks(masks).indices if spec.drop_outliers else None
    return spec.resolve(len(masks), outliers)
