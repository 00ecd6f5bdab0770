"""The Keras side of `zoo.training.train`: compile with AdamW and cosine decay, `train_on_batch`
with one-hot targets and per-pixel sample weights, save a `.keras` file.

Categorical cross-entropy on one-hot labels is used instead of the sparse variant: with Keras 3.15
on torch 2.13, the sparse loss on a softmax output fails in backward ("grad_input must be
contiguous"). KERAS_BACKEND defaults to "torch" (set it before keras is first imported to change it).
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402

from ensemble.files.atomic import write_bytes  # noqa: E402
from ensemble.machine import physical_cores
from zoo.batches import one_hot  # noqa: E402
from zoo.registry import Arch  # noqa: E402
from zoo.training import TrainConfig  # noqa: E402


class KerasTrainer:
    """Holds the compiled model of one run; `step` trains on one batch."""

    def __init__(self, arch: Arch, config: TrainConfig, total_steps: int) -> None:
        versions = {"keras": keras.__version__, "keras_backend": keras.backend.backend()}
        if keras.backend.backend() == "torch":
            import torch

            torch.set_num_threads(config.threads or physical_cores())
            versions["torch"] = torch.__version__
        keras.utils.set_random_seed(config.seed)
        self.arch = arch
        self.n_classes = config.n_classes
        self.loss = keras.losses.CategoricalCrossentropy()
        self.model = arch.build(**config.factory_kwargs)
        schedule = keras.optimizers.schedules.CosineDecay(config.lr, decay_steps=total_steps)
        self.model.compile(
            optimizer=keras.optimizers.AdamW(learning_rate=schedule, weight_decay=config.weight_decay),
            loss=self.loss,
        )
        self.n_params = self.model.count_params()
        self.versions = versions

    def inputs(self, images: np.ndarray) -> np.ndarray:
        """uint8 (B, H, W) raw pixels -> the model's float32 (B, H, W, 1) input."""
        return self.arch.preprocessing.apply(images)[..., None]

    def step(self, images: np.ndarray, masks: np.ndarray, weights: np.ndarray) -> float:
        return float(
            self.model.train_on_batch(
                self.inputs(images), one_hot(masks, self.n_classes), sample_weight=weights
            )
        )

    def scores(self, images: np.ndarray) -> np.ndarray:
        """Softmax probabilities, transposed to (B, C, H, W)."""
        probs = keras.ops.convert_to_numpy(self.model(self.inputs(images), training=False))
        return probs.transpose(0, 3, 1, 2)

    def save(self, path: Path) -> None:
        """Save architecture and weights without the optimizer state (a third of the size): the
        compiled model is saved to scratch and reloaded uncompiled, then that copy is moved into
        place atomically."""
        with tempfile.TemporaryDirectory() as scratch:
            staged = Path(scratch) / Path(path).name
            self.model.save(staged)
            bare = keras.models.load_model(staged, compile=False)
            bare.save(staged)
            write_bytes(path, staged.read_bytes())


def make_trainer(arch: Arch, config: TrainConfig, total_steps: int) -> KerasTrainer:
    return KerasTrainer(arch, config, total_steps)
