"""The PyTorch side of `zoo.training.train`: model, AdamW, cosine schedule, weighted cross-entropy,
and a `torch.save(state_dict)` checkpoint loadable with `torch.load(..., weights_only=True)`."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ensemble.files.atomic import atomic_write
from ensemble.machine import physical_cores
from zoo.registry import Arch
from zoo.training import TrainConfig


def weighted_cross_entropy(logits: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Mean of per-pixel cross-entropy times per-pixel weights (see zoo.batches.pixel_weights)."""
    return (F.cross_entropy(logits, target, reduction="none") * weights).mean()


class TorchTrainer:
    """Holds the model and optimiser state of one run; `step` trains on one batch."""

    def __init__(self, arch: Arch, config: TrainConfig, total_steps: int) -> None:
        torch.set_num_threads(config.threads or physical_cores())
        torch.manual_seed(config.seed)
        self.arch = arch
        self.model = arch.build(**config.factory_kwargs)
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay
        )
        self.schedule = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps))
        )
        self.n_params = sum(p.numel() for p in self.model.parameters())
        self.versions = {"torch": torch.__version__}

    def inputs(self, images: np.ndarray) -> torch.Tensor:
        """uint8 (B, H, W) raw pixels -> the model's preprocessed float32 (B, 1, H, W) input."""
        return torch.from_numpy(self.arch.preprocessing.apply(images)[:, None])

    def step(self, images: np.ndarray, masks: np.ndarray, weights: np.ndarray) -> float:
        self.model.train()
        logits = self.model(self.inputs(images))
        loss = weighted_cross_entropy(
            logits, torch.from_numpy(masks.astype(np.int64)), torch.from_numpy(weights)
        )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.schedule.step()
        return float(loss.detach())

    @torch.inference_mode()
    def scores(self, images: np.ndarray) -> np.ndarray:
        """Logits (B, C, H, W) in eval mode."""
        self.model.eval()
        return self.model(self.inputs(images)).numpy()

    def save(self, path: Path) -> None:
        with atomic_write(path) as handle:
            torch.save(self.model.state_dict(), handle)


def make_trainer(arch: Arch, config: TrainConfig, total_steps: int) -> TorchTrainer:
    return TorchTrainer(arch, config, total_steps)
