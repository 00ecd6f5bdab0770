"""Small-region cleanup: connected components smaller than their class's `min_area` are relabelled
to the most frequent class on their outer border (never to the ignored class 0).

All decisions read the input map, so the result does not depend on the order components are
visited. A component whose border holds no eligible class (it fills the image, or touches only
class 0) is kept.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numba
import numpy as np

from ensemble.bounds import MAX_AREA
from ensemble.errors import EnsError
from ensemble.optionvalues import check_n_classes, key_values, parse_int, short_repr

CONNECTIVITIES = (4, 8)  # pixel neighbourhoods of a region: edges only, or edges and corners

IGNORED_CLASS = 0
MinArea = int | Sequence[int] | Mapping[int, int] | np.ndarray
_DY = (-1, 1, 0, 0, -1, -1, 1, 1)  # 4-neighbours first, then the diagonals
_DX = (0, 0, -1, 1, -1, 1, -1, 1)


def parse_min_area(text: str, n_classes: int) -> np.ndarray:
    """Parse `--min-area`: one value for classes 1..C-1 (`20`) or per class (`1=30,2=30,4=5`).

    >>> parse_min_area("20", 5).tolist(), parse_min_area("1=30,4=5", 5).tolist()
    ([0, 20, 20, 20, 20], [0, 30, 0, 0, 5])
    """
    hint = "give one area (e.g. 20) or CLASS=AREA pairs (e.g. 1=30,2=30,3=30,4=5); 0 turns cleanup off"
    if "=" not in text:
        areas = np.full(n_classes, parse_int(text, "--min-area", 0, MAX_AREA, hint), dtype=np.int64)
        areas[IGNORED_CLASS] = 0
        return areas
    areas = np.zeros(n_classes, dtype=np.int64)
    for cls, value in key_values(text, "--min-area", "1=30,4=5"):
        what = f"--min-area entry '{cls}={value}':"
        index = parse_int(cls, f"{what} class", 0, n_classes - 1, hint)
        areas[index] = parse_int(value, f"{what} area", 0, MAX_AREA, hint)
    return areas


def min_area_array(min_area: MinArea, n_classes: int) -> np.ndarray:
    """Normalise a min_area given as one int, a per-class sequence or a {class: area} mapping.

    Areas must be whole numbers in 0..MAX_AREA: 8.9 or 1e30 are refused, not cut to an int64.
    """
    if isinstance(min_area, Mapping):
        areas = np.zeros(n_classes, dtype=np.int64)
        for cls, area in min_area.items():
            index = _whole(cls, min_area, n_classes)
            if not 0 <= index < n_classes:
                raise EnsError(
                    f"min_area {short_repr(min_area)} names class {cls}; classes are 0..{n_classes - 1}"
                )
            areas[index] = _whole(area, min_area, n_classes)
    elif not isinstance(min_area, list | tuple) and np.ndim(min_area) == 0:  # one area for all
        areas = np.full(n_classes, _whole(min_area, min_area, n_classes), dtype=np.int64)
        areas[IGNORED_CLASS] = 0
    else:
        if isinstance(min_area, np.ndarray) and min_area.ndim != 1:
            raise EnsError(f"min_area {short_repr(min_area)} must give {n_classes} areas (one per class)")
        areas = np.array([_whole(v, min_area, n_classes) for v in min_area], dtype=np.int64)
    if areas.shape != (n_classes,):
        raise EnsError(
            f"min_area {short_repr(min_area)} must give {n_classes} non-negative areas (one per class)"
        )
    return areas


def _whole(value, min_area, n_classes: int) -> int:
    """One area as an int in 0..MAX_AREA, refusing bools, fractions and non-numbers."""
    whole = isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
    if whole and 0 <= int(value) <= MAX_AREA:
        return int(value)
    raise EnsError(
        f"min_area {short_repr(min_area)} holds {short_repr(value)}; areas are whole numbers in "
        f"0..{MAX_AREA}, one per class or one for all {n_classes} classes"
    )


def check_connectivity(connectivity) -> int:
    """4 or 8, as an int (not 4.0, "4" or True): the neighbourhood of cleanup regions."""
    whole = isinstance(connectivity, int | np.integer) and not isinstance(connectivity, bool)
    if not whole or connectivity not in CONNECTIVITIES:
        raise EnsError(f"connectivity must be 4 or 8, got {short_repr(connectivity)}")
    return int(connectivity)


def remove_small_regions(
    labels: np.ndarray,
    min_area: MinArea,
    n_classes: int | None = None,
    connectivity: int = 4,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Relabel components smaller than `min_area` of their class, for a (H, W) or (N, H, W) uint8 map.

    Parameters
    ----------
    labels : uint8 array (H, W) or (N, H, W)
        Label maps; not modified unless passed again as `out`.
    min_area : int, sequence or mapping
        One area for classes 1..C-1, or one per class; 0 disables cleanup for a class.
    n_classes : int, optional
        Class count; defaults to the length of a per-class `min_area` or to labels.max() + 1.
    connectivity : {4, 8}
        Pixel neighbourhood used for components and their borders.
    out : uint8 array, optional
        Where to write the result (may be `labels` itself); a new array by default.

    Examples
    --------
    >>> m = np.array([[1, 1, 1], [1, 2, 1], [1, 1, 3]], np.uint8)
    >>> remove_small_regions(m, min_area=2)
    array([[1, 1, 1],
           [1, 1, 1],
           [1, 1, 1]], dtype=uint8)
    """
    if not isinstance(labels, np.ndarray) or labels.dtype != np.uint8 or labels.ndim not in (2, 3):
        got = f"{labels.dtype} {labels.shape}" if isinstance(labels, np.ndarray) else type(labels).__name__
        raise EnsError(f"labels must be a uint8 array of shape (H, W) or (N, H, W), got {got}")
    connectivity = check_connectivity(connectivity)
    if n_classes is not None:
        n_classes = check_n_classes(n_classes, "n_classes")
    else:
        sized = isinstance(min_area, list | tuple) or (
            isinstance(min_area, np.ndarray) and min_area.ndim == 1
        )
        n_classes = len(min_area) if sized else int(labels.max(initial=0)) + 1
    areas = min_area_array(min_area, n_classes)
    if labels.size and int(labels.max()) >= n_classes:
        raise EnsError(f"labels hold class {int(labels.max())} but only {n_classes} classes were given")
    if out is None:
        out = labels.copy()
    elif not isinstance(out, np.ndarray) or out.shape != labels.shape or out.dtype != np.uint8:
        got = f"{out.dtype} {out.shape}" if isinstance(out, np.ndarray) else type(out).__name__
        raise EnsError(f"out must be uint8 {labels.shape}, got {got}")
    elif out is not labels:
        out[...] = labels
    if not areas.any() or labels.size == 0:
        return out
    source = labels.copy() if np.shares_memory(out, labels) else np.ascontiguousarray(labels)
    batch = source.reshape((-1, *source.shape[-2:]))
    target = out if out.flags.c_contiguous else batch.copy()
    chunks = 4 * numba.get_num_threads()
    _cleanup_batch(batch, target.reshape(batch.shape), areas, connectivity == 8, chunks)
    if target is not out:
        out[...] = target.reshape(out.shape)
    return out


@numba.njit(parallel=True, cache=True, nogil=True)
def _cleanup_batch(labels, out, min_area, eight, n_chunks):  # pragma: no cover - compiled
    n, height, width = labels.shape
    n_chunks = min(n, n_chunks)
    for chunk in numba.prange(n_chunks):
        # scratch buffers are allocated once per chunk, not once per image
        seen = np.empty(height * width, np.bool_)
        stamp = np.empty(height * width, np.int32)
        pixels = np.empty(height * width, np.int32)
        counts = np.empty(min_area.shape[0], np.int64)
        for i in range(chunk * n // n_chunks, (chunk + 1) * n // n_chunks):
            _cleanup_image(labels[i], out[i], min_area, eight, seen, stamp, pixels, counts)


@numba.njit(cache=True, nogil=True)
def _cleanup_image(img, out, min_area, eight, seen, stamp, pixels, counts):  # pragma: no cover
    height, width = img.shape
    size = height * width
    seen[:] = False
    stamp[:] = -1
    flat = img.reshape(size)
    for start in range(size):
        if seen[start]:
            continue
        cls = flat[start]
        tail = _flood(flat, start, height, width, eight, seen, pixels)
        if tail >= min_area[cls]:
            continue
        best = _border_class(flat, start, tail, height, width, eight, stamp, pixels, counts)
        if best >= 0:
            for j in range(tail):
                out[pixels[j] // width, pixels[j] % width] = best


@numba.njit(cache=True, nogil=True)
def _flood(flat, start, height, width, eight, seen, pixels):  # pragma: no cover - compiled
    """Breadth-first flood fill of the component holding `start` into `pixels`; returns its size."""
    cls = flat[start]
    n_neighbours = 8 if eight else 4
    seen[start] = True
    pixels[0] = start
    head, tail = 0, 1
    while head < tail:
        p = pixels[head]
        head += 1
        y, x = p // width, p % width
        for k in range(n_neighbours):
            ny, nx = y + _DY[k], x + _DX[k]
            if 0 <= ny < height and 0 <= nx < width:
                q = ny * width + nx
                if not seen[q] and flat[q] == cls:
                    seen[q] = True
                    pixels[tail] = q
                    tail += 1
    return tail


@numba.njit(cache=True, nogil=True)
def _border_class(flat, start, tail, height, width, eight, stamp, pixels, counts):  # pragma: no cover
    """The most frequent class other than 0 on the outer border of the component in `pixels[:tail]`
    (each border pixel counted once, ties to the lower class), or -1 when there is none."""
    cls = flat[start]
    n_neighbours = 8 if eight else 4
    counts[:] = 0
    for j in range(tail):
        p = pixels[j]
        y, x = p // width, p % width
        for k in range(n_neighbours):
            ny, nx = y + _DY[k], x + _DX[k]
            if 0 <= ny < height and 0 <= nx < width:
                q = ny * width + nx
                other = flat[q]
                if other != cls and stamp[q] != start:
                    stamp[q] = start
                    counts[other] += 1
    best, best_count = -1, 0
    for c in range(counts.shape[0]):
        if c != IGNORED_CLASS and counts[c] > best_count:
            best, best_count = c, counts[c]
    return best


NO_TARGET = 255
"""`small_components` target of a pixel whose component is too large, or has no eligible border."""


def small_components(labels: np.ndarray, below: int, n_classes: int, connectivity: int = 4):
    """For each pixel of uint8 (N, H, W) `labels`: the size of its component, and the class cleanup
    would relabel it to (`NO_TARGET` when the component has `below` or more pixels, or keeps its
    class). Cleanup with any `min_area` under `below` relabels exactly the pixels whose size is under
    their class's area and whose target is not `NO_TARGET`, so a search over areas reads this once."""
    batch = np.ascontiguousarray(labels).reshape((-1, *labels.shape[-2:]))
    sizes = np.empty(batch.shape, np.int32)
    targets = np.empty(batch.shape, np.uint8)
    chunks = 4 * numba.get_num_threads()
    _components_batch(batch, sizes, targets, below, n_classes, connectivity == 8, chunks)
    return sizes.reshape(labels.shape), targets.reshape(labels.shape)


@numba.njit(parallel=True, cache=True, nogil=True)
def _components_batch(labels, sizes, targets, below, n_classes, eight, n_chunks):  # pragma: no cover
    n, height, width = labels.shape
    n_chunks = min(n, n_chunks)
    for chunk in numba.prange(n_chunks):
        seen = np.empty(height * width, np.bool_)
        stamp = np.empty(height * width, np.int32)
        pixels = np.empty(height * width, np.int32)
        counts = np.empty(n_classes, np.int64)
        for i in range(chunk * n // n_chunks, (chunk + 1) * n // n_chunks):
            flat, size_of, target_of = labels[i].reshape(-1), sizes[i].reshape(-1), targets[i].reshape(-1)
            seen[:] = False
            stamp[:] = -1
            for start in range(height * width):
                if seen[start]:
                    continue
                tail = _flood(flat, start, height, width, eight, seen, pixels)
                best = -1
                if tail < below:
                    best = _border_class(flat, start, tail, height, width, eight, stamp, pixels, counts)
                for j in range(tail):
                    size_of[pixels[j]] = tail
                    target_of[pixels[j]] = NO_TARGET if best < 0 else best
