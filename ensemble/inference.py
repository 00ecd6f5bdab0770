"""Running one member on a batch: uint8 images -> TTA views -> ONNX Runtime -> merged probabilities."""

from __future__ import annotations

import numpy as np

from ensemble.errors import EnsError
from ensemble.session import MemberSession
from ensemble.timing import Timings
from ensemble.tta import View, augment, merge


def to_pixels(images: np.ndarray) -> np.ndarray:
    """uint8 (B, H, W) images -> the contract input, float32 (B, 1, H, W) raw 0..255."""
    return images.astype(np.float32)[:, None]


def member_probs(
    runner: MemberSession, pixels: np.ndarray, views: tuple[View, ...], timings: Timings | None = None
) -> np.ndarray:
    """TTA-averaged (B, C, H, W) probabilities of one member; all views run as one ORT batch."""
    timings = timings or Timings()
    with timings("tta"):
        batch = augment(pixels, views)
    try:
        with timings("inference"):
            out = runner.run(batch)
    except Exception as exc:  # ORT raises its own error types for shape/type mismatches
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise EnsError(
            f"member {runner.member.name!r} failed on input {tuple(batch.shape)} ({first}); "
            "check the member accepts this image size and a dynamic batch"
        ) from None
    expected = (len(batch), runner.member.n_classes, *pixels.shape[2:])
    if out.shape != expected:
        raise EnsError(
            f"member {runner.member.name!r} returned shape {tuple(out.shape)} for input "
            f"{tuple(batch.shape)}; the contract expects {expected}"
        )
    with timings("tta"):
        return merge(out, views, overwrite=True)  # `out` is this call's own ORT output


def check_finite(probs: np.ndarray, member: str, ids: np.ndarray) -> None:
    """Refuse NaN or infinite probabilities, naming the member and the first image affected."""
    finite = np.isfinite(probs.reshape(len(probs), -1)).all(axis=1)
    if not finite.all():
        image = int(ids[int(np.argmin(finite))])
        raise EnsError(
            f"member {member!r} produced NaN/inf probabilities on image id {image}; "
            "re-export it and check its parity error with `ens members`"
        )
