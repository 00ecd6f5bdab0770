"""Running one member on a batch: uint8 images -> TTA views -> ONNX Runtime -> merged probabilities."""

from __future__ import annotations

import numpy as np

from ensemble.course import IMAGE_SHAPE
from ensemble.data.tta import View, augment, merge
from ensemble.errors import EnsError
from ensemble.members.member import Member
from ensemble.members.padding import check_fits, crop, pad, padded_size
from ensemble.members.session import ORT_ERRORS, Device, MemberSession, build_session, ort_message
from ensemble.timing import Timings

CONTRACT_TOLERANCE = 1e-3


def member_probs(
    runner: MemberSession, pixels: np.ndarray, views: tuple[View, ...], timings: Timings | None = None
) -> np.ndarray:
    """TTA-averaged (B, C, H, W) probabilities of one member; all views run as one ORT batch."""
    timings = timings or Timings()
    size = pixels.shape[2:]
    check_fits(runner.member, size)
    with timings("tta"):
        batch = pad(augment(pixels, views), padded_size(runner.member, size))
    try:
        with timings("inference"):
            out = runner.run(batch)
    except ORT_ERRORS as exc:
        raise EnsError(
            f"member {runner.member.name!r} failed on input {tuple(batch.shape)} ({ort_message(exc)}); "
            "check the member accepts this image size and a dynamic batch"
        ) from exc
    expected = (len(batch), runner.member.n_classes, *batch.shape[2:])
    if out.shape != expected:
        raise EnsError(
            f"member {runner.member.name!r} returned shape {tuple(out.shape)} for input "
            f"{tuple(batch.shape)}; the contract expects {expected}"
        )
    if not runner.contract_checked:
        check_contract(out, runner.member.name)
        runner.contract_checked = True
    with timings("tta"):
        return merge(crop(out, size), views, overwrite=True)  # `out` is this call's own ORT output


def checked_probs(
    runner: MemberSession, ids: np.ndarray, pixels: np.ndarray, views: tuple[View, ...], timings: Timings
) -> np.ndarray:
    """`member_probs` of the images `ids`, refused when NaN/inf (naming the member and the image): the
    member probabilities of a batch, for the pipeline's fusion and the fitting cache alike."""
    probs = member_probs(runner, pixels, views, timings)
    with timings("checks"):
        check_finite(probs, runner.member.name, ids)
    return probs


def check_finite(probs: np.ndarray, member: str, ids: np.ndarray) -> None:
    """Refuse NaN or infinite probabilities, naming the member and the first image affected."""
    finite = np.isfinite(probs.reshape(len(probs), -1)).all(axis=1)
    if not finite.all():
        image = ids[int(np.argmin(finite))]
        raise EnsError(
            f"member {member!r} produced NaN/inf probabilities on image id {image}; "
            "re-export it and check its parity error with `ens members`"
        )


def contract_problem(probs: np.ndarray, tolerance: float = CONTRACT_TOLERANCE) -> str | None:
    """What keeps (B, C, H, W) outputs from being probabilities over C, or None.

    Probabilities are >= 0 and sum to 1 over the classes, both within `tolerance`; logits and
    sigmoid scores fail. NaN/inf pixels are left to `check_finite`, which names the image.

    >>> contract_problem(np.full((1, 2, 1, 1), 0.5, np.float32)) is None
    True
    >>> contract_problem(np.array([[[[1.5]], [[-0.5]]]], np.float32))
    'values from -0.5 to 1.5, below 0'
    >>> contract_problem(np.array([[[[0.9]], [[0.8]]]], np.float32))
    'class sums from 1.7 to 1.7, not 1'
    """
    sums = probs.sum(axis=1)
    finite = np.isfinite(sums)  # a pixel with any NaN/inf has a NaN/inf sum
    if not finite.all():
        probs, sums = probs.transpose(1, 0, 2, 3)[:, finite], sums[finite]
    if not sums.size:
        return None
    problems = []
    low, high = float(probs.min()), float(probs.max())
    if low < -tolerance:
        problems.append(f"values from {low:.3g} to {high:.3g}, below 0")
    if float(np.abs(sums - 1).max()) > tolerance:
        problems.append(f"class sums from {float(sums.min()):.4g} to {float(sums.max()):.4g}, not 1")
    return "; ".join(problems) or None


def check_contract(probs: np.ndarray, member: str) -> None:
    """Refuse outputs that are not probabilities (see `contract_problem`), naming the member."""
    problem = contract_problem(probs)
    if problem is not None:
        raise EnsError(
            f"member {member!r} does not output probabilities: {problem} (the contract: values >= 0 "
            f"summing to 1 over the classes, within {CONTRACT_TOLERANCE:g}); re-export it with `ens export`, "
            "which folds a softmax over the classes into the graph"
        )


def probe_contract(member: Member) -> tuple[str, str | None]:
    """Run `member` once on CPU on two random images at its input size (the course's where it is free).

    Returns (the input size tried, what broke the contract or kept it from running, or None).
    """
    height, width = padded_size(member, IMAGE_SHAPE)
    size = f"{height}x{width}"
    shape = (2, member.channels, height, width)
    pixels = np.random.default_rng(0).integers(0, 256, shape).astype(np.float32)
    try:
        runner = build_session(member, Device.cpu, threads=1)
        out = runner.run(pixels)
    except EnsError as exc:
        return size, str(exc)
    except ORT_ERRORS as exc:
        return size, f"it fails on input {pixels.shape} ({ort_message(exc)})"
    expected = (2, member.n_classes, height, width)
    if out.shape != expected:
        return size, f"it returns shape {out.shape} for input {pixels.shape}, expected {expected}"
    if not np.isfinite(out).all():
        return size, "it returns NaN/inf values"
    return size, contract_problem(out)
