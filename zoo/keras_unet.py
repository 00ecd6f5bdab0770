"""A Keras 3 functional U-Net: raw pixels (N, H, W, 1) in, softmax probabilities (N, H, W, C) out.

The 1/255 scaling is a `Rescaling` layer inside the model. Only `keras.layers` are used, so the
model runs on any Keras backend and a saved `.keras` file loads without custom objects. This module
sets KERAS_BACKEND to "torch" unless it is already set; that only takes effect if keras has not
been imported yet. H and W must be divisible by 2**depth.
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras  # noqa: E402
from keras import layers  # noqa: E402

from ensemble.course import N_CLASSES
from ensemble.errors import EnsError  # noqa: E402

BN_MOMENTUM = 0.9
"""Faster than Keras' 0.99 default, so the moving statistics settle within a short training."""


def _double_conv(x, filters: int, name: str):
    for index in (1, 2):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv{index}")(x)
        x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn{index}")(x)
        x = layers.ReLU(name=f"{name}_relu{index}")(x)
    return x


def unet(n_classes: int = N_CLASSES, width: int = 16, depth: int = 3, in_channels: int = 1) -> keras.Model:
    """U-Net with `depth` poolings, `width * 2**level` filters per level, transposed-conv up."""
    for name, value in (("n_classes", n_classes), ("width", width), ("depth", depth)):
        if value < 1:
            raise EnsError(f"{name}={value} must be at least 1")
    inputs = keras.Input(shape=(None, None, in_channels), name="pixels")
    x = layers.Rescaling(1 / 255, name="scale")(inputs)
    skips = []
    for level in range(depth):
        x = _double_conv(x, width * 2**level, f"down{level}")
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"pool{level}")(x)
    x = _double_conv(x, width * 2**depth, "bottleneck")
    for level in reversed(range(depth)):
        filters = width * 2**level
        x = layers.Conv2DTranspose(filters, 2, strides=2, name=f"up{level}")(x)
        x = layers.Concatenate(name=f"skip{level}")([x, skips[level]])
        x = _double_conv(x, filters, f"dec{level}")
    outputs = layers.Conv2D(n_classes, 1, activation="softmax", name="probs")(x)
    return keras.Model(inputs, outputs, name=f"unet_w{width}_d{depth}")
