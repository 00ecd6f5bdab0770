"""Five segmentation nets as the libraries people use build and save them, trained briefly on CPU.

smp `Unet` (RGB stem) and `FPN` (grayscale), torchvision `lraspp_mobilenet_v3_large` (RGB stem,
dict output), a Hugging Face SegFormer (logits at 1/4, saved with `save_pretrained`) and a Keras
U-Net with a MultiHeadAttention + LayerNormalization + gelu bottleneck (torch backend, saved as
`.keras`). Every net is trained the way its users train it: shuffled, flipped batches,
cross-entropy weighted 0 on background (the course metric ignores true-background pixels), AdamW
with cosine decay; torch nets' state_dicts are saved with `torch.save`. Each net carries the
`ens export` options of the README table "Models from other libraries".
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

from zoo.batches import background_free_weights, iter_batches, one_hot, pixel_weights  # noqa: E402

N_CLASSES = 5
IMAGENET = ["--input-range", "0-1", "--mean", "0.485,0.456,0.406", "--std", "0.229,0.224,0.225"]
GRAY = ["--input-range", "0-1", "--mean", "0.449", "--std", "0.226"]
UNET = {"encoder_name": "resnet18", "encoder_weights": None, "encoder_depth": 3,
        "decoder_channels": [64, 32, 16], "in_channels": 3, "classes": N_CLASSES}  # fmt: skip
FPN = {"encoder_name": "resnet18", "encoder_weights": None, "decoder_pyramid_channels": 64,
       "decoder_segmentation_channels": 32, "in_channels": 1, "classes": N_CLASSES}  # fmt: skip
LRASPP = {"weights": None, "weights_backbone": None, "num_classes": N_CLASSES}
SEGFORMER = {"num_channels": 1, "num_labels": N_CLASSES, "num_encoder_blocks": 3, "depths": [1, 1, 1],
             "sr_ratios": [4, 2, 1], "hidden_sizes": [16, 32, 64], "patch_sizes": [7, 3, 3],
             "strides": [4, 2, 2], "num_attention_heads": [1, 2, 4], "mlp_ratios": [2, 2, 2],
             "decoder_hidden_size": 64}  # fmt: skip


@dataclass(frozen=True)
class Net:
    """One library net: how to build it, what its input is, where it is saved and how it is exported."""

    name: str
    library: str
    source: str  # file or folder name the net is saved under
    export_args: tuple[str, ...]  # `ens export` options after the source and --name
    rgb: bool = False  # the net takes the gray channel copied to R, G, B
    mean: tuple[float, ...] = (0.449,)
    std: tuple[float, ...] = (0.226,)
    epochs_factor: int = 1  # cheap nets train for this many times the base epochs


def _factory(spec: str, kwargs: dict) -> tuple[str, ...]:
    return ("--factory", spec, "--factory-kwargs", json.dumps(kwargs))


NETS = (
    Net("smp_unet", "segmentation_models_pytorch Unet (resnet18, depth 3, RGB stem)", "smp_unet.pt",
        (*_factory("segmentation_models_pytorch:Unet", UNET), "--gray-to-rgb", *IMAGENET), True,
        (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    Net("smp_fpn", "segmentation_models_pytorch FPN (resnet18, grayscale)", "smp_fpn.pt",
        (*_factory("segmentation_models_pytorch:FPN", FPN), *GRAY)),
    Net("lraspp", "torchvision lraspp_mobilenet_v3_large (RGB stem)", "lraspp.pt",
        (*_factory("torchvision.models.segmentation:lraspp_mobilenet_v3_large", LRASPP),
         "--gray-to-rgb", *IMAGENET), True, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    Net("segformer", "transformers SegFormer (3 stages, save_pretrained)", "segformer", tuple(GRAY),
        epochs_factor=4),
    Net("keras_attn", "Keras U-Net, MultiHeadAttention + LayerNormalization + gelu", "keras_attn.keras", (),
        epochs_factor=2),
)  # fmt: skip


@dataclass(frozen=True)
class Training:
    """How long and how each net trains: `epochs` over `images` images, batches of `batch_size`."""

    epochs: int
    batch_size: int = 16
    lr: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 0


def build_torch(net: Net):
    """The torch module of `net`, freshly initialised from the global torch seed."""
    if net.name in ("smp_unet", "smp_fpn"):
        import segmentation_models_pytorch as smp

        return (smp.Unet(**UNET) if net.name == "smp_unet" else smp.FPN(**FPN)).float()
    if net.name == "lraspp":
        from torchvision.models.segmentation import lraspp_mobilenet_v3_large

        return lraspp_mobilenet_v3_large(**LRASPP)
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    return SegformerForSemanticSegmentation(SegformerConfig(**SEGFORMER))


def _logits(output):
    """The score map of a torch net's output: a tensor, torchvision's dict `out`, transformers' `logits`."""
    if isinstance(output, dict) and "out" in output:
        return output["out"]
    return getattr(output, "logits", output)


def _net_input(net: Net, images: np.ndarray):
    """uint8 (B, H, W) -> the float32 (B, C, H, W) input the net was trained on (0..1, mean/std)."""
    import torch

    x = images[:, None].astype(np.float32) / 255.0
    if net.rgb:
        x = np.repeat(x, 3, axis=1)
    mean = np.asarray(net.mean, np.float32)[:, None, None]
    std = np.asarray(net.std, np.float32)[:, None, None]
    return torch.from_numpy((x - mean) / std)


def _cosine(step: int, total: int) -> float:
    return 0.5 * (1 + math.cos(math.pi * min(step, total) / total))


def train_torch(net: Net, images: np.ndarray, masks: np.ndarray, training: Training, log) -> object:
    """Train a fresh `net` on uint8 images/masks; returns the module in eval mode."""
    import torch
    from torch.nn import functional

    torch.manual_seed(training.seed)
    model = build_torch(net).train()
    optimizer = torch.optim.AdamW(model.parameters(), training.lr, weight_decay=training.weight_decay)
    total = training.epochs * -(-len(images) // training.batch_size)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _cosine(step, total))
    class_weights = torch.tensor(background_free_weights(N_CLASSES), dtype=torch.float32)
    rng = np.random.default_rng(training.seed)
    for epoch in range(training.epochs):
        start, losses = time.perf_counter(), []
        for x, y in iter_batches(images, masks, training.batch_size, rng):
            logits = _logits(model(_net_input(net, x)))
            if logits.shape[-2:] != y.shape[-2:]:  # SegFormer: logits at 1/4, upsampled as HF does
                logits = functional.interpolate(
                    logits, size=y.shape[-2:], mode="bilinear", align_corners=False
                )
            target = torch.from_numpy(y.astype(np.int64))
            loss = functional.cross_entropy(logits, target, weight=class_weights)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            losses.append(loss.item())
        log(f"{net.name} epoch {epoch + 1}/{training.epochs}: loss {np.mean(losses):.4f}, "
            f"{time.perf_counter() - start:.0f} s")  # fmt: skip
    return recalibrate_batchnorm(net, model, images, training)


def recalibrate_batchnorm(net: Net, model, images: np.ndarray, training: Training, n_images: int = 512):
    """Recompute BatchNorm running statistics as the plain average over `n_images` training images
    ("precise BN"), then eval mode. After a few hundred steps, running statistics with a small
    momentum (torchvision's MobileNetV3 uses 0.01) still lag the trained weights: LR-ASPP scored
    0.07 course mIoU in eval mode against 0.34 once recalibrated."""
    import torch

    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return model.eval()
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average over the batches below
    model.train()
    pick = np.random.default_rng(training.seed).permutation(len(images))[:n_images]
    with torch.no_grad():
        for start in range(0, len(pick), 32):
            model(_net_input(net, images[np.sort(pick[start : start + 32])]))
    return model.eval()


def torch_scores(net: Net, model) -> Callable[[np.ndarray], np.ndarray]:
    """uint8 (B, H, W) -> (B, C, H, W) logits of a trained torch net (full size)."""
    import torch
    from torch.nn import functional

    def scores(images: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            logits = _logits(model(_net_input(net, images)))
            size = images.shape[-2:]
            if logits.shape[-2:] != size:
                logits = functional.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        return logits.numpy()

    return scores


def save_torch(net: Net, model, folder: Path) -> Path:
    """Saved as its authors save it: a state_dict with torch.save, SegFormer with save_pretrained."""
    import torch

    path = folder / net.source
    if net.name == "segformer":
        model.save_pretrained(path)
    else:
        torch.save(model.state_dict(), path)
    return path


def attention_unet(hw: tuple[int, int], width: int = 16):
    """A Keras U-Net whose bottleneck (1/4 of the input) is a transformer block: MultiHeadAttention,
    LayerNormalization, a gelu MLP and LayerNormalization again, with residuals."""
    import keras

    layers = keras.layers
    inputs = keras.Input((*hw, 1))
    x = layers.Rescaling(1 / 255.0)(inputs)
    skip1 = layers.Conv2D(width, 3, padding="same", activation="relu")(x)
    x = layers.Conv2D(2 * width, 3, padding="same", activation="relu")(layers.MaxPooling2D()(skip1))
    skip2 = x
    x = layers.Conv2D(2 * width, 3, padding="same", activation="relu")(layers.MaxPooling2D()(x))
    tokens = layers.Reshape((-1, 2 * width))(x)
    attended = layers.MultiHeadAttention(num_heads=2, key_dim=width)(tokens, tokens)
    tokens = layers.LayerNormalization()(layers.Add()([tokens, attended]))
    mlp = layers.Dense(2 * width)(layers.Dense(4 * width, activation="gelu")(tokens))
    tokens = layers.LayerNormalization()(layers.Add()([tokens, mlp]))
    x = layers.Reshape((hw[0] // 4, hw[1] // 4, 2 * width))(tokens)
    x = layers.Concatenate()([layers.UpSampling2D()(x), skip2])
    x = layers.Conv2D(2 * width, 3, padding="same", activation="relu")(x)
    x = layers.Concatenate()([layers.UpSampling2D()(x), skip1])
    x = layers.Conv2D(width, 3, padding="same", activation="relu")(x)
    return keras.Model(inputs, layers.Conv2D(N_CLASSES, 1, activation="softmax")(x))


def train_keras(images: np.ndarray, masks: np.ndarray, training: Training, log):
    """Train the attention U-Net: categorical cross-entropy on one-hot labels with per-pixel weights
    (background 0), AdamW with cosine decay, `train_on_batch` over flipped batches."""
    import keras

    keras.utils.set_random_seed(training.seed)
    model = attention_unet(images.shape[1:])
    total = training.epochs * -(-len(images) // training.batch_size)
    schedule = keras.optimizers.schedules.CosineDecay(training.lr, decay_steps=total)
    optimizer = keras.optimizers.AdamW(learning_rate=schedule, weight_decay=training.weight_decay)
    model.compile(optimizer=optimizer, loss=keras.losses.CategoricalCrossentropy())
    rng, class_weights = np.random.default_rng(training.seed), background_free_weights(N_CLASSES)
    for epoch in range(training.epochs):
        start, losses = time.perf_counter(), []
        for x, y in iter_batches(images, masks, training.batch_size, rng):
            weights = pixel_weights(y, class_weights)
            loss = model.train_on_batch(
                x[..., None].astype(np.float32), one_hot(y, N_CLASSES), sample_weight=weights
            )
            losses.append(float(loss))
        log(f"keras_attn epoch {epoch + 1}/{training.epochs}: loss {np.mean(losses):.4f}, "
            f"{time.perf_counter() - start:.0f} s")  # fmt: skip
    return model


def keras_scores(model) -> Callable[[np.ndarray], np.ndarray]:
    """uint8 (B, H, W) -> (B, C, H, W) probabilities of the trained Keras net."""

    def scores(images: np.ndarray) -> np.ndarray:
        probs = model.predict_on_batch(images[..., None].astype(np.float32))
        return np.moveaxis(np.asarray(probs), -1, 1)

    return scores
