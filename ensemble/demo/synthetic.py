"""The embedded default data set: deterministic synthetic Mars terrain in the course npz format.

`generate_demo` draws the arrays, `write_demo` stores them as `training_set` (N, 2, H, W),
`test_set` (M, H, W) and `test_masks` (M, H, W), and `ensure_demo_data` creates the default file on
first use. The same spec gives the same bytes: every batch has its own seed, and the archive is
written with fixed zip timestamps.
"""

from __future__ import annotations

import sys
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ensemble.data.datafile import TEST_KEY, TEST_MASKS_KEY, TRAIN_KEY
from ensemble.data.outliers import DEFAULT_MIN_COPIES
from ensemble.demo.aliens import render_aliens
from ensemble.demo.terrain import render_scenes
from ensemble.errors import EnsError
from ensemble.files.atomic import atomic_write
from ensemble.optionvalues import check_seed

ALIEN_SHARE = 110 / 2615
"""Share of alien outliers in the course training set."""

_BATCH = 256
_TRAIN, _TEST, _ALIENS, _ALIEN_MASK, _ALIEN_PLACES = range(5)
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)
_MAX_BYTES = 8 << 30
_WRITE_ROWS = 512


@dataclass(frozen=True)
class DemoSpec:
    """What to generate; the defaults match the size of the course data."""

    seed: int = 0
    n_train: int = 2615
    n_test: int = 10022
    height: int = 64
    width: int = 128
    n_aliens: int | None = None

    @property
    def aliens(self) -> int:
        """Alien outliers in the training set: about 4%, and enough to be detectable."""
        if self.n_aliens is not None:
            return self.n_aliens
        return max(round(self.n_train * ALIEN_SHARE), min(DEFAULT_MIN_COPIES, self.n_train // 8))

    def check(self) -> None:
        """Raise EnsError for sizes or a seed the generator cannot honour."""
        check_seed(self.seed, "--seed")
        for name, value, low in (
            ("--n-train", self.n_train, 1),
            ("--n-test", self.n_test, 0),
            ("--height", self.height, 8),
            ("--width", self.width, 8),
        ):
            if value < low:
                raise EnsError(f"{name} {value} is too small; use {low} or more")
        if not 0 <= self.aliens <= self.n_train:
            raise EnsError(f"{self.aliens} aliens do not fit in {self.n_train} training images")
        size = 2 * (self.n_train + self.n_test) * self.height * self.width
        if size > _MAX_BYTES:
            raise EnsError(
                f"{self.n_train} + {self.n_test} images of {self.height}x{self.width} need "
                f"{size / 2**30:.1f} GiB; the limit is {_MAX_BYTES / 2**30:.0f} GiB, "
                "use fewer or smaller images"
            )


@dataclass(frozen=True)
class DemoData:
    """Generated arrays, all uint8: images and masks (N, H, W), test images and masks (M, H, W)."""

    train_images: np.ndarray
    train_masks: np.ndarray
    test_images: np.ndarray
    test_masks: np.ndarray
    alien_indices: np.ndarray


@dataclass(frozen=True)
class DemoSummary:
    """What `write_demo` wrote, for the one-line report of the CLI."""

    path: Path
    n_train: int
    n_test: int
    n_aliens: int
    seconds: float
    n_bytes: int


Progress = Callable[[int], None]


def generate_demo(spec: DemoSpec = DemoSpec(), progress: Progress | None = None) -> DemoData:
    """Draw the data set of `spec`; `progress` is called with each batch's image count."""
    spec.check()
    shape = (spec.height, spec.width)
    train_images, train_masks = _scenes(spec, _TRAIN, spec.n_train, progress)
    test_images, test_masks = _scenes(spec, _TEST, spec.n_test, progress)
    aliens = np.sort(
        np.random.default_rng([spec.seed, _ALIEN_PLACES]).choice(spec.n_train, spec.aliens, replace=False)
    )
    if len(aliens):
        train_masks[aliens] = _typical_mask(np.random.default_rng([spec.seed, _ALIEN_MASK]), shape)
        rng = np.random.default_rng([spec.seed, _ALIENS])
        train_images[aliens] = render_aliens(rng, len(aliens), *shape)
    return DemoData(train_images, train_masks, test_images, test_masks, aliens)


def _typical_mask(rng: np.random.Generator, shape: tuple[int, int], candidates: int = 32):
    """A label map whose class mix is close to the average one, so that ~4% of copies of it
    do not tilt the class shares of the training set."""
    labels = render_scenes(rng, candidates, *shape).labels
    counts = np.stack([np.bincount(m.ravel(), minlength=256) for m in labels]).astype(float)
    distance = np.abs(counts - counts.mean(axis=0)).sum(axis=1)
    return labels[int(np.argmin(distance))]


def _scenes(spec: DemoSpec, stream: int, count: int, progress: Progress | None):
    images = np.empty((count, spec.height, spec.width), np.uint8)
    masks = np.empty_like(images)
    for index, start in enumerate(range(0, count, _BATCH)):
        stop = min(start + _BATCH, count)
        rng = np.random.default_rng([spec.seed, stream, index])
        scenes = render_scenes(rng, stop - start, spec.height, spec.width)
        images[start:stop], masks[start:stop] = scenes.images, scenes.labels
        if progress is not None:
            progress(stop - start)
    return images, masks


def write_demo(
    path: str | Path,
    spec: DemoSpec = DemoSpec(),
    float64: bool = False,
    progress: Progress | None = None,
) -> DemoSummary:
    """Generate `spec` and write it atomically as a course-format npz.

    uint8 arrays are deflate-compressed (a few tens of MB at full size); `float64=True` stores
    uncompressed float64 like the real course file (about 1.6 GB at full size).
    """
    started = time.perf_counter()
    data = generate_demo(spec, progress)
    arrays = {
        TRAIN_KEY: np.stack([data.train_images, data.train_masks], axis=1),
        TEST_KEY: data.test_images,
        TEST_MASKS_KEY: data.test_masks,
    }
    path = Path(path)
    save_npz(path, arrays, np.float64 if float64 else np.uint8, compress=not float64)
    return DemoSummary(
        path,
        spec.n_train,
        spec.n_test,
        len(data.alien_indices),
        time.perf_counter() - started,
        path.stat().st_size,
    )


def save_npz(path: str | Path, arrays: dict[str, np.ndarray], dtype=np.uint8, compress: bool = True) -> None:
    """Write `arrays` as an npz readable by numpy.load, converting to `dtype` row chunk by chunk.

    Unlike numpy.savez, the archive carries fixed timestamps, so equal arrays give equal bytes.
    """
    dtype = np.dtype(dtype)
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with atomic_write(path) as handle, zipfile.ZipFile(handle, "w", compresslevel=1) as archive:
        for key, array in arrays.items():
            info = zipfile.ZipInfo(f"{key}.npy", _ZIP_TIME)
            info.compress_type = method
            info.external_attr = 0o644 << 16
            header = {
                "descr": np.lib.format.dtype_to_descr(dtype),
                "fortran_order": False,
                "shape": array.shape,
            }
            with archive.open(info, "w", force_zip64=True) as stream:
                np.lib.format.write_array_header_1_0(stream, header)
                for start in range(0, len(array), _WRITE_ROWS):
                    chunk = np.ascontiguousarray(array[start : start + _WRITE_ROWS], dtype)
                    stream.write(chunk.tobytes())


def ensure_demo_data(
    path: str | Path,
    notify: Callable[[str], None] | None = None,
    spec: DemoSpec = DemoSpec(),
) -> Path:
    """Return `path`, first generating the demo data (default spec) there if the file is missing.

    Meant for the default `--data` location only: a user-given path that is missing is a mistake
    to report, not a file to invent.
    """
    path = Path(path)
    if not path.exists():
        say = notify or (lambda line: print(line, file=sys.stderr, flush=True))
        say(f"generating the synthetic demo data at {path} (first use, takes a few seconds)")
        write_demo(path, spec)
    return path
