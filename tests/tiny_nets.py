"""Tiny PyTorch and Keras networks for export tests; importable as `tiny_nets:<factory>`.

They are small enough to export in about a second but real: convolutions, pooling, upsampling,
several output conventions (logits, softmax, tuple, dict) and one net that breaks the contract
by mixing images of a batch.
"""

from __future__ import annotations

import torch
from torch import nn


class TinyNet(nn.Module):
    """conv -> pool -> conv -> upsample: per-pixel class scores at input size (H, W even)."""

    def __init__(
        self,
        n_classes: int = 5,
        width: int = 8,
        softmax: bool = False,
        out: str = "tensor",
        batch_norm: bool = False,
        in_channels: int = 1,
    ) -> None:
        super().__init__()
        conv = nn.Conv2d(in_channels, width, 3, padding=1)
        self.encode = nn.Sequential(conv, nn.BatchNorm2d(width)) if batch_norm else conv
        self.pool = nn.MaxPool2d(2)
        self.head = nn.Conv2d(width, n_classes, 3, padding=1)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.softmax = softmax
        self.out = out

    def forward(self, x: torch.Tensor):
        scores = self.up(self.head(torch.relu(self.pool(self.encode(x)))))
        if self.softmax:
            scores = torch.softmax(scores, dim=1)
        if self.out == "tuple":
            return scores, scores.mean(dim=(2, 3))
        if self.out == "dict":
            return {"aux": scores * 2, "out": scores}
        return scores


class BatchMixingNet(TinyNet):
    """Subtracts the batch mean: one image's output depends on the others, which no member may do."""

    def forward(self, x: torch.Tensor):
        return super().forward(x - x.mean(dim=0, keepdim=True))


def tiny_net(**kwargs) -> TinyNet:
    """Factory function form, as `--factory tiny_nets:tiny_net`."""
    return TinyNet(**kwargs)


def trained_like(net: nn.Module, seed: int = 0) -> nn.Module:
    """Give the net larger, seeded weights so its outputs are confident like a trained net's."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in net.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.5)
    return net.eval()


def keras_net(rescaling: bool, softmax: bool, n_classes: int = 5, hw=(None, None), channels: int = 1):
    """A small Keras U-shaped net, NHWC, with or without Rescaling inside and softmax at the end."""
    import keras

    inputs = keras.Input((*hw, channels))
    x = keras.layers.Rescaling(1 / 255.0)(inputs) if rescaling else inputs
    skip = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    x = keras.layers.MaxPooling2D()(skip)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    x = keras.layers.UpSampling2D()(x)
    x = keras.layers.Concatenate()([x, skip])
    outputs = keras.layers.Conv2D(n_classes, 1, activation="softmax" if softmax else None)(x)
    return keras.Model(inputs, outputs)


class ErfcxNet(TinyNet):
    """Uses torch.special.erfcx, which only the dynamo ONNX exporter translates."""

    def forward(self, x: torch.Tensor):
        scores = super().forward(x)
        return scores + torch.special.erfcx(scores * 0.01)


class BandNet(nn.Module):
    """Classifies each pixel by the nearest of fixed grey-level centres, learnt for inputs in 0..1:
    perfect on `band_masks` data when fed x/255, one class nearly everywhere when fed raw 0..255."""

    def __init__(self, centres: tuple[float, ...] = (-10.0, 0.125, 0.375, 0.625, 0.875)) -> None:
        super().__init__()
        self.register_buffer("centres", torch.tensor(centres, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -50.0 * (x - self.centres) ** 2
