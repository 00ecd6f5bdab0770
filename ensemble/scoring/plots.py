"""PNG figures of an ablation: per-class IoU bars per row, the normalised confusion matrix of the final
row, and a gallery of images with truth and prediction overlays."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from ensemble.files.atomic import ensure_dir, write_bytes
from ensemble.scoring.ablation import Ablation
from ensemble.scoring.gallery import overlay

PLOT_NAMES = ("iou_per_class.png", "confusion.png", "gallery.png")


def plot_paths(directory: Path) -> list[Path]:
    """The PNGs `save_plots` writes into `directory`."""
    return [Path(directory) / name for name in PLOT_NAMES]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    write_bytes(path, buffer.getvalue())
    return path


def save_plots(ablation: Ablation, directory: Path) -> list[Path]:
    """Write iou_per_class.png, confusion.png and gallery.png into `directory`; return their paths."""
    plt = _pyplot()
    bars, confusion, gallery = plot_paths(ensure_dir(directory))
    written = [
        _iou_bars(plt, ablation, bars),
        _confusion(plt, ablation, confusion),
        _gallery(plt, ablation, gallery),
    ]
    plt.close("all")
    return written


def _iou_bars(plt, ablation: Ablation, path: Path) -> Path:
    classes = list(range(1, len(ablation.class_names)))
    n_rows = len(ablation.rows)
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(classes) + 2), 3.6))
    width = 0.8 / n_rows
    for r, score in enumerate(ablation.rows):
        values = np.nan_to_num(score.iou[classes])
        ax.bar(np.arange(len(classes)) + (r - (n_rows - 1) / 2) * width, values, width,
               label=f"{score.row.name} ({score.miou:.3f})")  # fmt: skip
    ax.set_xticks(range(len(classes)), [ablation.class_names[c] for c in classes])
    ax.set_ylabel("IoU")
    ax.set_ylim(0, 1)
    ax.set_title(f"per-class IoU ({ablation.metric} mIoU in the legend)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _save(fig, path)


def _confusion(plt, ablation: Ablation, path: Path) -> Path:
    final = ablation.rows[-1]
    matrix = final.confusion[1:].astype(np.float64)
    rows = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(5, 4))
    image = ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    names = list(ablation.class_names)
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names) - 1), names[1:])
    for (i, j), value in np.ndenumerate(rows):
        ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7,
                color="white" if value > 0.5 else "black")  # fmt: skip
    ax.set_xlabel("predicted")
    ax.set_ylabel("true (rows sum to 1)")
    ax.set_title(final.row.name, fontsize=9)
    fig.colorbar(image, ax=ax)
    return _save(fig, path)


def _gallery(plt, ablation: Ablation, path: Path) -> Path:
    images, truth, pred = ablation.gallery
    count = len(images)
    fig, axes = plt.subplots(count, 3, figsize=(9, 1.6 * count), squeeze=False)
    for i in range(count):
        panels = (images[i], overlay(images[i], truth[i]), overlay(images[i], pred[i]))
        for ax, panel, title in zip(
            axes[i], panels, ("image", "truth", ablation.rows[-1].row.name), strict=True
        ):
            ax.imshow(panel, cmap="gray" if panel.ndim == 2 else None, vmin=0, vmax=255)
            ax.set_axis_off()
            if i == 0:
                ax.set_title(title, fontsize=9)
    return _save(fig, path)
