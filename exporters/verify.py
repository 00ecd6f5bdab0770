"""The shared verifier: checker, the contract as ONNX Runtime sees it, and parity with the source.

Parity compares ONNX Runtime's probabilities with the source framework's on real images. The
member is run in batches of 1, 3 and the rest while the reference ran them all at once, so a net
whose output for one image depends on the other images in its batch fails here, not in fusion.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx

from ensemble.errors import EnsError, first_line
from ensemble.members.contract import INPUT_NAME, OUTPUT_NAME
from ensemble.members.session import MemberSession, ort_message

SUM_TOLERANCE = 1e-4


def check_graph(model: onnx.ModelProto) -> None:
    """onnx.checker with full shape inference; a failure is an exporter problem, said in one line."""
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:  # ValidationError, InferenceError
        raise EnsError(
            f"the exported graph fails onnx.checker ({first_line(exc)}); the member was not written"
        ) from exc


def check_io(session: MemberSession) -> None:
    """Exactly one rank-4 input `pixels` with the member's channels and one rank-4 output `probs`."""
    inputs, outputs = session.session.get_inputs(), session.session.get_outputs()
    seen = f"inputs {[(i.name, i.shape) for i in inputs]}, outputs {[(o.name, o.shape) for o in outputs]}"
    if [i.name for i in inputs] != [INPUT_NAME] or [o.name for o in outputs] != [OUTPUT_NAME]:
        raise EnsError(
            f"the member has {seen}; expected one input {INPUT_NAME!r} and one output {OUTPUT_NAME!r}"
        )
    channels = session.member.channels
    if len(inputs[0].shape) != 4 or inputs[0].shape[1] != channels or len(outputs[0].shape) != 4:
        raise EnsError(f"the member has {seen}; expected (N, {channels}, H, W) in and (N, C, H, W) out")


def run_checked(session: MemberSession, pixels: np.ndarray, n_classes: int) -> np.ndarray:
    """Run one batch and check shape, finiteness and that probabilities sum to 1 over classes."""
    batch, _, height, width = pixels.shape
    try:
        probs = session.run(pixels)
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidArgument types
        reason = ort_message(exc, 200)
        raise EnsError(
            f"ONNX Runtime cannot run the member on a batch of {batch} images of {height}x{width} "
            f"({reason}); the batch axis must be dynamic"
        ) from None
    expected = (batch, n_classes, height, width)
    if probs.shape != expected:
        raise EnsError(f"the member returns {probs.shape} for a batch of {batch}; expected {expected}")
    if not np.isfinite(probs).all():
        raise EnsError("the member returns NaN or inf probabilities on real images; check the source model")
    sums = probs.sum(axis=1, dtype=np.float64)
    worst = float(np.abs(sums - 1.0).max())
    if probs.min() < -1e-6 or worst > SUM_TOLERANCE:
        raise EnsError(
            f"the member's output is not a softmax over classes (min {probs.min():.3g}, sums off by up "
            f"to {worst:.3g}); pass the right output or let the exporter append the softmax"
        )
    return probs


def parity_error(
    session: MemberSession,
    pixels: np.ndarray,
    reference: np.ndarray,
    tolerance: float,
    framework: str,
    net_inputs: str = "",
) -> float:
    """Max abs difference of ONNX Runtime vs the source on all images, in batches of 1, 3 and the rest.

    `net_inputs` describes what the net saw (range and formula), for the failure message."""
    check_io(session)
    n_classes = reference.shape[1]
    while len(pixels) < 5:
        pixels, reference = np.concatenate([pixels, pixels]), np.concatenate([reference, reference])
    error = 0.0
    for start, stop in ((0, 1), (1, 4), (4, len(pixels))):
        probs = run_checked(session, pixels[start:stop], n_classes)
        error = max(error, float(np.abs(probs - reference[start:stop]).max()))
    if not error <= tolerance:
        raise EnsError(
            f"parity check failed: ONNX Runtime differs from {framework} by {error:.3g} (max abs error on "
            f"probabilities over {len(pixels)} images run in batches of 1, 3 and {len(pixels) - 4}, "
            f"tolerance {tolerance:g}); likely causes, most likely first: (1) wrong preprocessing: "
            f"{net_inputs or 'check what the net sees'}; inputs far outside the range the net was trained "
            "on saturate it and magnify float differences, so check --input-range/--mean/--std; (2) a net "
            "whose output depends on the other images in its batch (e.g. BatchNorm left in training mode); "
            "(3) an op the ONNX exporter translates loosely; raise --tolerance only once these are ruled out"
        )
    return error


def probe_size(
    session: MemberSession,
    pixels: np.ndarray,
    reference: Callable[[np.ndarray], np.ndarray],
    tolerance: float,
) -> str | None:
    """Check that H and W are truly dynamic on images twice as large; None if so, else why not."""
    large = np.kron(pixels[:2], np.ones((1, 1, 2, 2), np.float32))
    try:
        expected = reference(large)
    except Exception as exc:  # the source itself refuses the size: H and W stay fixed
        return f"the source does not accept {large.shape[2]}x{large.shape[3]} ({type(exc).__name__})"
    try:
        probs = session.run(large)
    except Exception as exc:  # onnxruntime: shapes baked into the graph
        return f"the graph does not run at {large.shape[2]}x{large.shape[3]} ({type(exc).__name__})"
    if probs.shape != expected.shape or not float(np.abs(probs - expected).max()) <= tolerance:
        return f"the graph differs from the source at {large.shape[2]}x{large.shape[3]}"
    return None


def size_multiple(
    session: MemberSession,
    pixels: np.ndarray,
    reference: Callable[[np.ndarray], np.ndarray],
    tolerance: float,
) -> tuple[int, str]:
    """The smallest power of two M such that the member runs, and matches the source, on an image whose
    H and W are odd multiples of M; M = 1 when any size runs. Nets with k 2x poolings and skip
    connections need M = 2**k; images are padded to it. Returns M and the sizes that failed below it.

    Only powers of two up to the largest one dividing the parity images' H and W are tried, since the
    member ran at that size; when none runs, that largest one is returned.
    """
    height, width = pixels.shape[2:]
    largest = min(height & -height, width & -width)
    failed = []
    multiple = 1
    while multiple < largest:
        size = (_odd_multiple(height, multiple), _odd_multiple(width, multiple))
        if _runs_at(session, pixels[:1], size, reference, tolerance):
            break
        failed.append(f"{size[0]}x{size[1]}")
        multiple *= 2
    return multiple, ", ".join(failed)


def _odd_multiple(value: int, multiple: int) -> int:
    """The smallest odd multiple of `multiple` that is >= `value` (so not a multiple of 2 * multiple).

    >>> _odd_multiple(64, 8), _odd_multiple(128, 32), _odd_multiple(64, 1)
    (72, 160, 65)
    """
    count = -(-value // multiple)
    return multiple * (count if count % 2 else count + 1)


def _runs_at(session: MemberSession, pixels: np.ndarray, size: tuple[int, int], reference, tolerance) -> bool:
    """Do the source and the member both run on `pixels` reflect-padded to `size`, and agree?"""
    extra = ((0, 0), (0, 0), (0, size[0] - pixels.shape[2]), (0, size[1] - pixels.shape[3]))
    grown = np.ascontiguousarray(np.pad(pixels, extra, mode="symmetric"))
    try:
        expected = reference(grown)
        probs = session.run(grown)
    except Exception:  # either side refuses the size (framework or onnxruntime errors)
        return False
    return probs.shape == expected.shape and float(np.abs(probs - expected).max()) <= tolerance
