"""The demo as image folders: synthetic Mars terrain in RGB (or grayscale) PNGs of two sizes.

`write_folder_demo` writes `train/images`, `train/masks`, `test/images` and `test/masks` under one
folder, the masks single-channel PNGs of class indices named like their images. Sizes are mixed
in id order, and each size has its own duplicated-mask outliers, like the npz demo. RGB images are
the grayscale scene through per-channel tone curves (a reddish Mars palette) under a per-image
colour cast, so colour carries no label the grayscale image does not. The folder is written
under a temporary name and renamed into place, so it appears complete or not at all.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ensemble.demo.synthetic import DemoSpec, generate_demo
from ensemble.errors import EnsError

SIZES = ((64, 96), (48, 80))
PARTS = ("train", "test")


@dataclass(frozen=True)
class FolderDemoSpec:
    """What to write: image counts (split evenly over the sizes), channels (1 or 3) and the seed."""

    seed: int = 0
    n_train: int = 240
    n_test: int = 160
    channels: int = 3
    sizes: tuple[tuple[int, int], ...] = SIZES

    def check(self) -> None:
        if self.channels not in (1, 3):
            raise EnsError(f"--channels {self.channels} is not 1 (grayscale) or 3 (RGB)")
        if self.n_train < 16 * len(self.sizes) or self.n_test < len(self.sizes):
            raise EnsError(
                f"--n-train {self.n_train} / --n-test {self.n_test} are too few for {len(self.sizes)} "
                f"sizes; use at least {16 * len(self.sizes)} training and {len(self.sizes)} test images"
            )


@dataclass(frozen=True)
class FolderDemoSummary:
    path: Path
    n_train: int
    n_test: int
    n_aliens: int
    seconds: float


def write_folder_demo(out: str | Path, spec: FolderDemoSpec = FolderDemoSpec()) -> FolderDemoSummary:
    """Generate `spec` and write it as image and mask folders under `out` (a new folder)."""
    spec.check()
    started = time.perf_counter()
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise EnsError(
            f"--out {str(out)!r} already exists; choose a new folder (the demo never writes into one)"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        n_aliens = _write(staging, spec)
        if out.exists():
            out.rmdir()
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return FolderDemoSummary(out, spec.n_train, spec.n_test, n_aliens, time.perf_counter() - started)


def _write(root: Path, spec: FolderDemoSpec) -> int:
    parts: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {name: ([], []) for name in PARTS}
    n_aliens = 0
    for index, (height, width) in enumerate(spec.sizes):
        share = DemoSpec(
            seed=spec.seed,
            n_train=_share(spec.n_train, len(spec.sizes), index),
            n_test=_share(spec.n_test, len(spec.sizes), index),
            height=height,
            width=width,
        )
        data = generate_demo(share)
        n_aliens += len(data.alien_indices)
        parts["train"][0].extend(data.train_images)
        parts["train"][1].extend(data.train_masks)
        parts["test"][0].extend(data.test_images)
        parts["test"][1].extend(data.test_masks)
    rng = np.random.default_rng([spec.seed, 7])
    for name, (images, masks) in parts.items():
        order = rng.permutation(len(images))  # mixes the sizes in id order
        for folder in ("images", "masks"):
            (root / name / folder).mkdir(parents=True)
        for number, k in enumerate(order.tolist()):
            stem = f"mars_{name}_{number:04d}"
            image = colour(images[k], rng) if spec.channels == 3 else images[k]
            Image.fromarray(image).save(root / name / "images" / f"{stem}.png")
            Image.fromarray(masks[k]).save(root / name / "masks" / f"{stem}.png")
    return n_aliens


def _share(total: int, parts: int, index: int) -> int:
    return total // parts + (1 if index < total % parts else 0)


_CURVES = np.stack(
    [
        np.clip(255 * (np.arange(256) / 255) ** 0.85 + 14, 0, 255),  # red: lifted
        np.clip(205 * (np.arange(256) / 255) ** 1.0 + 8, 0, 255),  # green
        np.clip(170 * (np.arange(256) / 255) ** 1.2, 0, 255),  # blue: darker, steeper
    ],
    axis=-1,
)


def colour(gray: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """uint8 (H, W, 3) Mars colours of a uint8 (H, W) image, under a random colour cast."""
    cast = 1.0 + rng.normal(0.0, 0.06, 3)
    return np.clip(np.rint(_CURVES[gray] * cast), 0, 255).astype(np.uint8)
