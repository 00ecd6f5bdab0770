"""Synthetic Mars terrain: a true region map, the grayscale image rendered from it, and a crowd label.

Regions come from the argmax of three smooth class fields (soil, bedrock, sand) plus an optional sky
above a horizon and a few shaded big rocks. The label map is what a hurried annotator would draw: the
same fields without their finest octave and with jittered boundaries, a band left unlabelled (0)
along boundaries, unlabelled patches, and some rocks missed. Every step works on a whole batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ensemble.demo.noise import field, profile

BACKGROUND, SOIL, BEDROCK, SAND, BIG_ROCK = 0, 1, 2, 3, 4

_REGION_OCTAVES = ((56.0, 1.0), (22.0, 0.5))  # shared by the truth and the label
_DETAIL_OCTAVES = ((7.0, 0.22),)  # only in the truth: small regions annotators skip
_JITTER_OCTAVES = ((11.0, 0.15),)  # only in the label: boundaries drawn off by a few pixels
_CLASS_BIAS = np.array([0.26, -0.04, -0.19], np.float32)  # soil, bedrock, sand
_CLASS_SPREAD = 0.55  # per-image preference for some classes
_PERSPECTIVE = 1.6  # regions shrink towards the top of the frame
_SKY_RATE = 0.45
_UNLABELLED_LEVEL = (1.3, 0.45)  # mean and spread of the threshold for unlabelled patches
_BAND = (0.0, 0.14)  # range of the per-image unlabelled boundary band (in field units)
_ROCK_RATE = 0.17  # big rocks per 64x128 image
_ROCK_LABEL_RATE = 0.75  # share of big rocks the annotator marks
_GRAIN = ((1.0, 2.0), (6.0, 14.0), (3.0, 11.0), (1.5, 8.0), (4.0, 8.0))  # pixel noise per class


@dataclass(frozen=True)
class Scenes:
    """A batch of scenes: uint8 (B, H, W) images, crowd labels and true region maps."""

    images: np.ndarray
    labels: np.ndarray
    truth: np.ndarray


def render_scenes(rng: np.random.Generator, batch: int, height: int, width: int) -> Scenes:
    """Draw `batch` random scenes of height x width pixels."""
    truth, labels, horizon = _regions(rng, batch, height, width)
    light = _light(rng, batch)
    image = _textures(rng, truth)
    _add_rocks(rng, image, truth, labels, horizon, light)
    image = _photometry(rng, image, truth)
    return Scenes(_quantise(image), labels, truth)


def _regions(rng, batch, height, width):
    """True and labelled region maps (uint8) and the horizon row of each image (-1: no sky)."""
    shape = (batch, height, width)
    bias = _CLASS_BIAS + rng.normal(0.0, _CLASS_SPREAD, (batch, 3)).astype(np.float32)
    true_score = np.empty((3, *shape), np.float32)
    label_score = np.empty_like(true_score)
    for c in range(3):
        base = field(rng, batch, height, width, _REGION_OCTAVES, _PERSPECTIVE)
        base += bias[:, c, None, None]
        true_score[c] = base + field(rng, batch, height, width, _DETAIL_OCTAVES, _PERSPECTIVE)
        label_score[c] = base + field(rng, batch, height, width, _JITTER_OCTAVES, _PERSPECTIVE)
    truth = _argmax3(true_score)
    labels = _argmax3(label_score)

    top = label_score.max(axis=0)
    second = label_score.sum(axis=0) - top - label_score.min(axis=0)
    band = rng.uniform(*_BAND, batch).astype(np.float32)
    labels[top - second < band[:, None, None]] = BACKGROUND
    level = rng.normal(*_UNLABELLED_LEVEL, batch).astype(np.float32)
    patches = field(rng, batch, height, width, ((30.0, 1.0), (12.0, 0.3)))
    labels[patches > level[:, None, None]] = BACKGROUND

    has_sky = rng.random(batch) < _SKY_RATE
    horizon = rng.uniform(0.08, 0.5, batch) * height
    tilt = rng.normal(0.0, 0.06, batch)
    columns = np.arange(width) - width / 2
    edge = horizon[:, None] + tilt[:, None] * columns + 2.5 * profile(rng, batch, width, 24.0)
    edge += 0.7 * profile(rng, batch, width, 5.0)
    drawn = edge + 1.0 + 1.5 * profile(rng, batch, width, 16.0)
    rows = np.arange(height)[None, :, None]
    sky = has_sky[:, None, None] & (rows < edge[:, None, :])
    truth[sky] = BACKGROUND
    labels[has_sky[:, None, None] & (rows < drawn[:, None, :])] = BACKGROUND
    return truth, labels, np.where(has_sky, horizon, -1.0)


def _argmax3(score):
    """Class 1..3 of the largest of three scores (faster than np.argmax over a leading axis)."""
    best = np.maximum(score[0], score[1])
    classes = np.where(score[1] > score[0], np.uint8(2), np.uint8(1))
    classes[score[2] > best] = 3
    return classes


def _light(rng, batch):
    """Unit light direction per image in (row, column) order, mostly from above."""
    angle = rng.uniform(-2.2, 2.2, batch) - np.pi / 2
    return np.stack([np.sin(angle), np.cos(angle)], axis=1).astype(np.float32)


def _textures(rng, truth):
    """Grey levels of each class's texture, picked by the true map (float32, before lighting)."""
    batch, height, width = truth.shape
    rows = np.arange(height, dtype=np.float32)[None, :, None]
    cols = np.arange(width, dtype=np.float32)[None, None, :]

    def per_image(low, high):
        return _per_image(rng.uniform(low, high, batch))

    def normal(mean, spread):
        return _per_image(rng.normal(mean, spread, batch))

    soil_mean = normal(102.0, 14.0)
    blotch = field(rng, batch, height, width, ((12.0, 1.0), (5.0, 0.5)))
    warp = field(rng, batch, height, width, ((16.0, 1.0),))

    pebbles = field(rng, batch, height, width, ((2.5, 1.0),))
    shadow = np.roll(pebbles, 1, axis=1)
    soil = soil_mean + 8.0 * blotch + 30.0 * np.maximum(pebbles - 1.6, 0.0)
    soil -= 25.0 * np.maximum(shadow - 1.6, 0.0)

    tilt = normal(0.0, 0.35)
    period = per_image(4.0, 9.0)
    phase = (2 * np.pi / period) * (rows * np.cos(tilt) + cols * np.sin(tilt)) + 2.5 * warp
    cracks = field(rng, batch, height, width, ((9.0, 1.0), (4.0, 0.4)))
    bedrock = soil_mean + normal(16.0, 16.0) + 12.0 * blotch
    bedrock += per_image(3.0, 18.0) * np.sin(phase)
    bedrock -= per_image(8.0, 45.0) * np.exp(-np.square(cracks / 0.12))

    turn = per_image(-1.3, 1.3)
    period = per_image(3.5, 7.0)
    phase = (2 * np.pi / period) * (rows * np.cos(turn) + cols * np.sin(turn)) + 1.5 * warp
    sand = soil_mean + normal(8.0, 14.0) + 3.0 * blotch + per_image(1.0, 10.0) * np.sin(phase)

    sky = normal(150.0, 28.0) + normal(0.0, 25.0) * rows / height
    image = np.where(truth == SOIL, soil, bedrock)
    image = np.where(truth == SAND, sand, image)
    return np.where(truth == BACKGROUND, sky, image)


def _add_rocks(rng, image, truth, labels, horizon, light):
    """Paint shaded big rocks with cast shadows into `image` and mark them in truth and labels."""
    batch, height, width = image.shape
    rate = _ROCK_RATE * height * width / (64 * 128)  # rocks keep their pixel size at any frame size
    counts = np.minimum(rng.poisson(rate, batch), 4 * max(round(rate / _ROCK_RATE), 1))
    for b in np.flatnonzero(counts):
        for _ in range(counts[b]):
            top = max(horizon[b] + 3.0, 0.25 * height)
            cy = rng.uniform(top, height - 2.0)
            cx = rng.uniform(2.0, width - 2.0)
            rx = rng.uniform(2.5, 6.5) * (0.55 + 0.9 * cy / height)
            ry = rx * rng.uniform(0.55, 0.9)
            reach = int(np.ceil(2.2 * rx)) + 2
            y0, y1 = max(int(cy) - reach, 0), min(int(cy) + reach + 1, height)
            x0, x1 = max(int(cx) - reach, 0), min(int(cx) + reach + 1, width)
            dy = np.arange(y0, y1)[:, None] - cy
            dx = np.arange(x0, x1)[None, :] - cx
            wobble = rng.uniform(0, 2 * np.pi, 2)
            inside = _ellipse(dy, dx, ry, rx, wobble)
            sy, sx = -0.8 * ry * light[b, 0], -0.8 * rx * light[b, 1]
            shade = _ellipse(dy - sy, dx - sx, ry, rx, wobble)
            patch = image[b, y0:y1, x0:x1]
            patch[(shade < 1.0) & (inside >= 1.0)] *= rng.uniform(0.35, 0.55)
            lit = dy / ry * light[b, 0] + dx / rx * light[b, 1]
            rock = patch.mean() + rng.normal(30.0, 12.0) + 40.0 * lit
            rock += 6.0 * rng.standard_normal(lit.shape)
            patch[inside < 1.0] = rock[inside < 1.0]
            truth[b, y0:y1, x0:x1][inside < 1.0] = BIG_ROCK
            if rng.random() < _ROCK_LABEL_RATE:
                labels[b, y0:y1, x0:x1][inside < rng.uniform(1.05, 1.35)] = BIG_ROCK


def _ellipse(dy, dx, ry, rx, wobble):
    """Normalised radius of an irregular ellipse: below 1 inside."""
    angle = np.arctan2(dy / ry, dx / rx)
    radius = np.sqrt(np.square(dy / ry) + np.square(dx / rx))
    return radius / (1.0 + 0.12 * np.cos(2 * angle + wobble[0]) + 0.08 * np.cos(3 * angle + wobble[1]))


def _photometry(rng, image, truth):
    """Per-image exposure, contrast, illumination gradient, vignetting and sensor noise."""
    batch, height, width = image.shape
    rows = (np.arange(height, dtype=np.float32) / height - 0.5)[None, :, None]
    cols = (np.arange(width, dtype=np.float32) / width - 0.5)[None, None, :]

    def per_image(low, high):
        return _per_image(rng.uniform(low, high, batch))

    mean = image.mean(axis=(1, 2), keepdims=True)
    image = (image - mean) * per_image(0.7, 1.3) + mean + per_image(-18.0, 18.0)
    image *= 1.0 + per_image(-0.35, 0.35) * rows + per_image(-0.35, 0.35) * cols
    image *= 1.0 - per_image(0.0, 0.6) * (np.square(rows) + np.square(cols))
    low, high = np.array(_GRAIN, np.float32).T
    grain = (low + (high - low) * rng.random((batch, len(_GRAIN)), np.float32))[
        np.arange(batch)[:, None, None], truth
    ]
    grain += per_image(1.0, 6.0)
    image += grain * rng.standard_normal(image.shape, dtype=np.float32)
    return image


def _per_image(values):
    """(B,) values as float32 (B, 1, 1), to broadcast over images."""
    return values.astype(np.float32)[:, None, None]


def _quantise(image):
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)
