"""Decoding fused probabilities to labels with the course metric in mind.

The course metric drops true-background pixels but counts class 0 whenever it is predicted, so
predicting 0 can only lower the score: by default the argmax runs over classes 1..C-1.
"""

from __future__ import annotations

import numpy as np


def decode(probs: np.ndarray, allow_background: bool = False) -> np.ndarray:
    """Argmax of (B, C, H, W) probabilities to uint8 (B, H, W) labels; ties go to the lower class.

    >>> p = np.array([[[[0.6]], [[0.3]], [[0.1]]]], np.float32)  # (1, 3, 1, 1)
    >>> decode(p).ravel().tolist(), decode(p, allow_background=True).ravel().tolist()
    ([1], [0])
    """
    first = 0 if allow_background else 1
    best = probs[:, first].copy()
    labels = np.full(best.shape, first, dtype=np.uint8)
    for cls in range(first + 1, probs.shape[1]):
        better = probs[:, cls] > best
        labels[better] = cls
        np.maximum(best, probs[:, cls], out=best)
    return labels
