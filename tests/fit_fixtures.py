"""Synthetic member probabilities with known quality, for the fitting tests."""

from __future__ import annotations

import numpy as np


def random_truth(rng: np.random.Generator, n: int = 40, shape=(16, 24), n_classes: int = 5) -> np.ndarray:
    """Blocky uint8 label maps (4x4 blocks) with every class present, class 0 included."""
    blocks = rng.integers(0, n_classes, (n, shape[0] // 4, shape[1] // 4))
    return np.kron(blocks, np.ones((1, 4, 4), np.int64)).astype(np.uint8)


def member(rng, truth, n_classes=5, confidence=2.0, noise=1.0, classes=None, wrong=False):
    """Softmax probabilities: logits of `confidence` on the true class (on the next class when
    `wrong`, only for pixels of `classes` when given) plus Gaussian noise."""
    target = (truth + 1) % n_classes if wrong else truth
    onehot = np.eye(n_classes, dtype=np.float32)[target].transpose(0, 3, 1, 2)
    if classes is not None:
        onehot *= np.isin(truth, classes)[:, None]
    logits = confidence * onehot + noise * rng.standard_normal(onehot.shape).astype(np.float32)
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)
