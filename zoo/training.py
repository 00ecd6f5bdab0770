"""The training run behind `ens train`: one framework-free loop over a framework `Trainer`.

`train` resolves the course split, runs the epochs (shuffled, flipped batches, class-weighted
cross-entropy with background weight 0, cosine learning-rate decay), scores the validation part
with the course mIoU after every epoch, and writes the checkpoint and its JSON sidecar atomically.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ensemble.course import N_CLASSES
from ensemble.data.split import SplitSpec
from ensemble.errors import EnsError
from ensemble.files.atomic import write_text
from ensemble.optionvalues import check_seed
from zoo.batches import (
    background_free_weights,
    iter_batches,
    load_training_data,
    n_batches,
    pixel_weights,
    validation_miou,
)
from zoo.registry import FRAMEWORKS, Arch, get_arch, import_framework_module

CHECKPOINT_SUFFIXES = {"torch": (".pt", ".pth"), "keras": (".keras",)}

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
"""Idle OpenMP threads sleep instead of spinning (read when torch first loads): on a 2-core machine
shared with one other busy process, spinning made a 2-thread training step about 4x slower."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on; `seed` drives initialisation, shuffling and flips,
    `split` the validation split (keep it shared by every member of an ensemble), read from
    `val_ids_file` when explicit ids were given."""

    framework: str
    arch: str
    data: Path
    out: Path
    epochs: int = 20
    width: int = 16
    depth: int = 3
    n_classes: int = N_CLASSES
    seed: int = 0
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    split: SplitSpec = field(default_factory=SplitSpec)
    flip: bool = True
    class_weights: tuple[float, ...] | None = None
    threads: int | None = None
    val_ids_file: Path | None = None

    @property
    def weights(self) -> tuple[float, ...]:
        return self.class_weights or background_free_weights(self.n_classes)

    @property
    def factory_kwargs(self) -> dict[str, int]:
        return {"n_classes": self.n_classes, "width": self.width, "depth": self.depth, "in_channels": 1}

    def check(self) -> Arch:
        """Raise EnsError for an impossible option; return the architecture."""
        if self.framework not in FRAMEWORKS:
            raise EnsError(f"unknown framework {self.framework!r}; choose one of {', '.join(FRAMEWORKS)}")
        arch = get_arch(self.framework, self.arch)
        if importlib.util.find_spec(self.framework) is None:
            raise EnsError(
                f"--framework {self.framework} needs {self.framework}, which is not installed; "
                f"{FRAMEWORKS[self.framework][1]}"
            )
        check_seed(self.seed, "--seed")
        minimums = {"--epochs": 1, "--width": 1, "--depth": 1, "--batch-size": 1, "--n-classes": 2}
        values = (self.epochs, self.width, self.depth, self.batch_size, self.n_classes)
        for (name, low), value in zip(minimums.items(), values, strict=True):
            if value < low:
                raise EnsError(f"{name} {value} is too small; use at least {low}")
        if self.threads is not None and self.threads < 1:
            raise EnsError(f"--threads {self.threads} is too small; use at least 1, or leave it out")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise EnsError(f"--lr {self.lr} must be a positive number, e.g. 2e-3")
        if len(self.weights) != self.n_classes or min(self.weights) < 0 or max(self.weights) <= 0:
            raise EnsError(
                f"class weights {self.weights} must be {self.n_classes} non-negative numbers, not all 0"
            )
        suffixes = CHECKPOINT_SUFFIXES[self.framework]
        if Path(self.out).suffix not in suffixes:
            raise EnsError(
                f"--out {str(self.out)!r} does not end in {' or '.join(suffixes)}, which a "
                f"{self.framework} checkpoint needs; e.g. --out models/src/{self.arch}{suffixes[0]}"
            )
        return arch


class Trainer(Protocol):
    """What a framework module provides: `make_trainer(arch, config, total_steps) -> Trainer`."""

    model: Any
    n_params: int
    versions: dict[str, str]

    def step(self, images: np.ndarray, masks: np.ndarray, weights: np.ndarray) -> float: ...

    def scores(self, images: np.ndarray) -> np.ndarray: ...

    def save(self, path: Path) -> None: ...


@dataclass(frozen=True)
class EpochReport:
    """One finished epoch: mean training loss, validation course mIoU (None without a validation
    part) and wall-clock seconds including validation."""

    epoch: int
    epochs: int
    loss: float
    val_miou: float | None
    seconds: float


@dataclass(frozen=True)
class TrainResult:
    """The written files, the scores, and the trained in-memory model."""

    checkpoint: Path
    sidecar: Path
    val_miou: float | None
    history: tuple[EpochReport, ...]
    seconds: float
    n_params: int
    export_command: str
    model: Any


def sidecar_path(checkpoint: str | os.PathLike) -> Path:
    """`<checkpoint>.json`, e.g. unet.pt -> unet.pt.json (a .pt and a .keras never collide)."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.name + ".json")


def train(
    config: TrainConfig,
    on_step: Callable[[int, int], None] | None = None,
    on_epoch: Callable[[EpochReport], None] | None = None,
) -> TrainResult:
    """Train `config.arch`, report every step (done, total) and epoch, write checkpoint + sidecar."""
    arch = config.check()
    module = import_framework_module(FRAMEWORKS[config.framework][0])
    data = load_training_data(config.data, config.split, config.n_classes, 2**config.depth)
    steps = n_batches(len(data.train_images), config.batch_size)
    trainer: Trainer = module.make_trainer(arch, config, steps * config.epochs)
    rng = np.random.default_rng(config.seed)
    history: list[EpochReport] = []
    started = time.perf_counter()
    for epoch in range(1, config.epochs + 1):
        epoch_start = time.perf_counter()
        losses = []
        batches = iter_batches(data.train_images, data.train_masks, config.batch_size, rng, config.flip)
        for done, (images, masks) in enumerate(batches, 1):
            losses.append(trainer.step(images, masks, pixel_weights(masks, config.weights)))
            if on_step is not None:
                on_step(done, steps)
        score = validation_miou(
            trainer.scores, data.val_images, data.val_masks, config.n_classes, config.batch_size
        )
        history.append(
            EpochReport(
                epoch, config.epochs, float(np.mean(losses)), score, time.perf_counter() - epoch_start
            )
        )
        if on_epoch is not None:
            on_epoch(history[-1])
    seconds = time.perf_counter() - started
    trainer.save(Path(config.out))
    sidecar = sidecar_path(config.out)
    command = export_command(arch, config, history[-1].val_miou)
    record = _sidecar(arch, config, data, trainer, history, seconds, command)
    write_text(sidecar, json.dumps(record, indent=2) + "\n")
    return TrainResult(
        checkpoint=Path(config.out),
        sidecar=sidecar,
        val_miou=history[-1].val_miou,
        history=tuple(history),
        seconds=seconds,
        n_params=trainer.n_params,
        export_command=command,
        model=trainer.model,
    )


def _sidecar(
    arch: Arch, config: TrainConfig, data, trainer: Trainer, history, seconds: float, command: str
) -> dict:
    """What a user needs to rebuild, export and trust the checkpoint."""
    return {
        "checkpoint": Path(config.out).name,
        "framework": arch.framework,
        "arch": arch.name,
        "factory": arch.factory,
        "factory_kwargs": config.factory_kwargs,
        "n_params": trainer.n_params,
        "input": {
            "layout": arch.layout,
            "channels": 1,
            "preprocessing": arch.preprocessing.to_dict(),
            "size_multiple": 2**config.depth,
        },
        "output": {"kind": arch.output, "n_classes": config.n_classes, "layout": arch.layout},
        "training": {
            "epochs": config.epochs,
            "seed": config.seed,
            "batch_size": config.batch_size,
            "lr": config.lr,
            "lr_schedule": "cosine decay to 0, per step",
            "optimizer": "AdamW",
            "weight_decay": config.weight_decay,
            "class_weights": list(config.weights),
            "hflip": config.flip,
            "seconds": round(seconds, 2),
            "loss_per_epoch": [round(report.loss, 6) for report in history],
        },
        "data": {"path": str(config.data), "sha256": data.data_sha256, "image_shape": list(data.image_shape)},
        "split": {
            **config.split.to_dict(),
            "description": data.split.description,
            "n_train": len(data.split.train),
            "n_val": len(data.split.val),
        },
        "val_miou": history[-1].val_miou,
        "val_miou_per_epoch": [report.val_miou for report in history],
        "val_metric": "course",
        "versions": trainer.versions,
        "export_command": command,
    }


def export_command(arch: Arch, config: TrainConfig, val_miou: float | None) -> str:
    """The `ens export` call that turns the checkpoint into a contract member."""
    name = re.sub(r"[^A-Za-z0-9_-]", "_", Path(config.out).stem)[:63]
    args = ["ens", "export", str(config.out), "--name", name if name[:1].isalpha() else f"m{name}"]
    if arch.framework == "torch":
        args += ["--factory", arch.factory, "--factory-kwargs", json.dumps(config.factory_kwargs)]
    args += [
        *arch.preprocessing.options(),
        "--data",
        str(config.data),
        *split_options(config.split, config.val_ids_file),
    ]
    if val_miou is not None:
        args += ["--val-miou", f"{val_miou:.4f}"]
    return shlex.join(args)


def split_options(spec: SplitSpec, val_ids_file: Path | None = None) -> list[str]:
    """The options that give `ens export` (and fit, score) the validation split this run used."""
    if spec.val_ids is not None:
        return ["--val-ids", str(val_ids_file)] + ([] if spec.drop_outliers else ["--keep-outliers"])
    default = SplitSpec()
    options = [] if spec.seed == default.seed else ["--split-seed", str(spec.seed)]
    if spec.val_fraction != default.val_fraction:
        options += ["--val-fraction", f"{spec.val_fraction:g}"]
    return options + ([] if spec.drop_outliers else ["--keep-outliers"])
