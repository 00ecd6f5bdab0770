"""Small-region cleanup on a whole test set of real predictions: the Numba kernel against a
per-image scipy.ndimage implementation of the same rule, in the same run.

    .venv/bin/python benchmarks/cleanup_bench.py [--csv submissions/demo.csv] [--min-area 20]

The label maps come from a submission CSV (default: the demo's, `make demo` writes it); scipy runs on
the first `--scipy-images` maps only and its time is scaled to the full set.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy import ndimage

from ensemble.inference.cleanup import parse_min_area, remove_small_regions
from ensemble.submission.io import read_submission


def scipy_cleanup(labels: np.ndarray, min_area: np.ndarray, connectivity: int) -> np.ndarray:
    """The same rule with scipy.ndimage, image by image and component by component."""
    structure = ndimage.generate_binary_structure(2, 1 if connectivity == 4 else 2)
    out = labels.copy()
    for img, dst in zip(labels, out, strict=True):
        for cls in np.flatnonzero(min_area):
            components, n = ndimage.label(img == cls, structure)
            sizes = np.bincount(components.ravel())
            for index in np.flatnonzero(sizes[1:] < min_area[cls]) + 1:
                region = components == index
                border = ndimage.binary_dilation(region, structure) & ~region
                counts = np.bincount(img[border], minlength=len(min_area))
                counts[0] = 0
                if counts.max() > 0:
                    dst[region] = np.argmax(counts)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--csv", default="submissions/demo.csv")
    parser.add_argument("--shape", default="64x128")
    parser.add_argument("--n-classes", type=int, default=5)
    parser.add_argument("--min-area", default="20")
    parser.add_argument("--connectivity", type=int, default=4, choices=(4, 8))
    parser.add_argument("--scipy-images", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    height, width = (int(v) for v in args.shape.split("x"))
    _, labels, _ = read_submission(args.csv, (height, width), args.n_classes)
    min_area = parse_min_area(args.min_area, args.n_classes)
    remove_small_regions(labels[:2], min_area, args.n_classes, args.connectivity)  # compile / load the cache
    numba_times = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        cleaned = remove_small_regions(labels, min_area, args.n_classes, args.connectivity)
        numba_times.append(time.perf_counter() - started)
    subset = labels[: args.scipy_images]
    started = time.perf_counter()
    reference = scipy_cleanup(subset, min_area, args.connectivity)
    scipy_seconds = (time.perf_counter() - started) * len(labels) / len(subset)
    assert np.array_equal(reference, cleaned[: len(subset)]), "the kernel and scipy disagree"
    changed = int((cleaned != labels).sum())
    best = min(numba_times)
    print(
        f"{len(labels)} maps of {height}x{width}, min_area {args.min_area}, {args.connectivity}-connectivity"
    )
    print(
        f"numba kernel: {best:.3f} s (best of {args.repeats}: {', '.join(f'{t:.3f}' for t in numba_times)})"
    )
    print(f"scipy.ndimage per image: {scipy_seconds:.1f} s (scaled from {len(subset)} maps)")
    print(
        f"speed-up: {scipy_seconds / best:.0f}x; {changed:,} pixels relabelled; identical on the scipy subset"
    )


if __name__ == "__main__":
    main()
