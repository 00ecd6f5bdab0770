"""Pictures of images and label maps: class colours, colour overlays and sample grids as PNG."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ensemble.course import CLASS_NAMES
from ensemble.errors import EnsError
from ensemble.files.atomic import write_bytes
from ensemble.files.outputs import refuse_overwrite

CLASS_COLORS = np.array(
    [
        [0, 0, 0],  # 0 background
        [196, 122, 62],  # 1 soil
        [120, 120, 200],  # 2 bedrock
        [236, 206, 96],  # 3 sand
        [220, 40, 40],  # 4 big rock
    ],
    np.uint8,
)
"""RGB colour of each class of the Mars data; further classes cycle through a fixed palette."""

_EXTRA = np.array([[60, 180, 75], [70, 240, 240], [240, 50, 230], [128, 128, 0]], np.uint8)


def class_colors(n_classes: int) -> np.ndarray:
    """(n_classes, 3) uint8 RGB colours: the Mars colours first, then a repeating palette."""
    extra = max(n_classes - len(CLASS_COLORS), 0)
    palette = np.concatenate([CLASS_COLORS, np.resize(_EXTRA, (extra, 3))])
    return palette[:n_classes]


def colorize(mask: np.ndarray, n_classes: int | None = None) -> np.ndarray:
    """Map an integer label map (..., H, W) to RGB uint8 (..., H, W, 3).

    >>> colorize(np.array([[0, 4]])).tolist()
    [[[0, 0, 0], [220, 40, 40]]]
    """
    mask = np.asarray(mask)
    top = int(mask.max(initial=0)) + 1
    return class_colors(max(n_classes or top, top))[mask]


def overlay(image: np.ndarray, mask: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """Blend the class colours of `mask` over a grayscale (H, W) or RGB (H, W, 3) uint8 image; class 0
    stays uncoloured."""
    image = np.asarray(image, np.float32)
    grey = image if image.ndim == 3 else np.repeat(image[..., None], 3, axis=-1)
    colour = colorize(mask).astype(np.float32)
    labelled = (np.asarray(mask) > 0)[..., None]
    blended = np.where(labelled, (1 - alpha) * grey + alpha * colour, grey)
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def save_sample_grid(
    images: np.ndarray,
    masks: Sequence[np.ndarray] | np.ndarray,
    path: str | Path,
    titles: Sequence[str] = ("image", "mask"),
    class_names: Sequence[str] | None = None,
    scale: float = 1.6,
    dpi: int = 100,
) -> Path:
    """Write a PNG with one row per image: the grayscale image, then each label map in colour.

    `masks` is one (N, H, W) array or a sequence of them (e.g. truth and prediction), shown as
    extra columns titled by `titles`. Written atomically; returns the path.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images = np.asarray(images)
    columns = [np.asarray(masks)] if np.ndim(masks) == 3 else [np.asarray(m) for m in masks]
    if images.ndim != 3 or any(m.shape != images.shape for m in columns):
        raise EnsError(
            f"images {images.shape} and masks {[m.shape for m in columns]} must all be (N, H, W) "
            "of the same shape; pass matching slices of the data set"
        )
    n_classes = max(int(m.max(initial=0)) for m in columns) + 1
    if class_names is not None:
        n_classes = max(n_classes, len(class_names))
    count, height, width = images.shape
    legend = 0.0 if class_names is None else 0.35
    panel = (scale * width / 64, scale * height / 64)
    fig, axes = plt.subplots(
        count,
        1 + len(columns),
        squeeze=False,
        figsize=(panel[0] * (1 + len(columns)), panel[1] * count + 0.3 + legend),
    )
    for row in range(count):
        axes[row, 0].imshow(images[row], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        for col, mask in enumerate(columns, start=1):
            axes[row, col].imshow(colorize(mask[row], n_classes), interpolation="nearest")
    for col, title in enumerate(titles[: 1 + len(columns)]):
        axes[0, col].set_title(title, fontsize=9)
    for axis in axes.ravel():
        axis.set_axis_off()
    if class_names is not None:
        from matplotlib.patches import Patch

        colors = class_colors(n_classes) / 255
        handles = [Patch(color=colors[i], label=f"{i} {name}") for i, name in enumerate(class_names)]
        fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    fig.tight_layout(pad=0.3, rect=(0, legend / fig.get_figheight(), 1, 1))
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    plt.close(fig)
    write_bytes(path, buffer.getvalue())
    return Path(path)


def save_data_grid(data_path: str | Path, out: str | Path, count: int = 6, start: int = 0) -> Path:
    """Write a sample grid of `count` training images from `start` of a course-format npz."""
    from ensemble.data.datafile import open_data

    refuse_overwrite({"--out": out}, {"the data file": data_path})
    data = open_data(data_path)
    if count < 1 or not 0 <= start < data.n_train:
        raise EnsError(
            f"--count {count} --start {start}: need count >= 1 and start in 0..{data.n_train - 1} "
            f"({data.n_train} training images in {str(data_path)!r})"
        )
    images, masks = data.load_train()
    images, masks = images[start : start + count], masks[start : start + count]
    names = CLASS_NAMES if int(masks.max(initial=0)) < len(CLASS_NAMES) else None
    return save_sample_grid(images, masks, out, class_names=names)
