"""Weighted fusion: normalisation per class, streaming equals one-shot, errors, weights parsing."""

from __future__ import annotations

import numpy as np
import pytest

from ensemble.errors import EnsError
from ensemble.inference.fusion import WeightedMerger, decode, fuse, normalise_weights, parse_weights


def _probs(rng, shape=(2, 4, 5, 6)):
    logits = rng.normal(size=shape).astype(np.float32)
    e = np.exp(logits)
    return e / e.sum(1, keepdims=True)


def test_member_weights_give_a_weighted_mean_distribution():
    rng = np.random.default_rng(0)
    members = [_probs(rng) for _ in range(3)]
    fused = fuse(members, [2.0, 1.0, 1.0])
    np.testing.assert_allclose(fused.sum(1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(fused, (2 * members[0] + members[1] + members[2]) / 4, rtol=1e-5)


def test_matrix_weights_apply_per_class():
    rng = np.random.default_rng(1)
    a, b = _probs(rng), _probs(rng)
    matrix = np.array([[1, 0, 1, 1], [0, 1, 1, 3]], dtype=float)
    fused = fuse([a, b], matrix)
    np.testing.assert_allclose(fused[:, 0], a[:, 0], rtol=1e-6)
    np.testing.assert_allclose(fused[:, 1], b[:, 1], rtol=1e-6)
    np.testing.assert_allclose(fused[:, 3], (a[:, 3] + 3 * b[:, 3]) / 4, rtol=1e-6)


def test_merger_resets_between_batches_and_requires_all_members():
    rng = np.random.default_rng(2)
    merger = WeightedMerger(normalise_weights([1, 1], 2, 4))
    a, b = _probs(rng), _probs(rng)
    merger.append(0, a)
    with pytest.raises(EnsError, match="missing members \\[1\\]"):
        merger.result()
    merger.append(1, b)
    first = merger.result()
    merger.append(1, b)
    merger.append(0, a)
    np.testing.assert_allclose(merger.result(), first, rtol=1e-6)


@pytest.mark.parametrize(
    ("weights", "message"),
    [([1, 2, 3], r"shape \(3,\); expected \(2,\)"), ([1, -1], ">= 0"), ([0, 0], "all 0")],
)
def test_bad_weights(weights, message):
    with pytest.raises(EnsError, match=message):
        normalise_weights(weights, 2, 4)


def test_parse_weights():
    assert parse_weights("b=0.3, a=0.7", ["a", "b"]).tolist() == [0.7, 0.3]
    for text, message in [
        ("a=0.5", r"no weight for \['b'\]"),
        ("a=x,b=1", "'x' is not a finite decimal number.*NAME=WEIGHT"),
        ("a=1,c=1", "'c', which is not among"),
    ]:
        with pytest.raises(EnsError, match=message):
            parse_weights(text, ["a", "b"])


def test_decode_skips_background_unless_allowed():
    rng = np.random.default_rng(3)
    probs = _probs(rng, (3, 5, 7, 9))
    np.testing.assert_array_equal(decode(probs), np.argmax(probs[:, 1:], axis=1) + 1)
    np.testing.assert_array_equal(decode(probs, allow_background=True), np.argmax(probs, axis=1))
    assert decode(probs).min() >= 1


def test_streaming_fusion_rounds_like_numpy_float32():
    """The in-place accumulation gives bit for bit the float32 `sum of w * p` numpy computes."""
    rng = np.random.default_rng(4)
    members = [_probs(rng, (3, 5, 6, 7)) for _ in range(3)]
    weights = normalise_weights(rng.random((3, 5)) + 0.1, 3, 5)
    expected = members[0] * weights[0][None, :, None, None]
    for member, row in zip(members[1:], weights[1:], strict=True):
        expected = expected + member * row[None, :, None, None]
    fused = fuse(members, weights)
    assert fused.dtype == np.float32
    np.testing.assert_array_equal(fused.view(np.uint32), expected.view(np.uint32))
    wide = fuse([m.astype(np.float64) for m in members], weights)
    np.testing.assert_allclose(wide, expected, rtol=1e-6)


def test_merger_reused_over_batches_of_other_sizes():
    rng = np.random.default_rng(5)
    merger = WeightedMerger(normalise_weights([1, 2, 3], 3, 4))
    for batch in (4, 1, 4):
        members = [_probs(rng, (batch, 4, 3, 5)) for _ in range(3)]
        for index, probs in enumerate(members):
            merger.append(index, probs)
        np.testing.assert_array_equal(merger.result(), fuse(members, [1, 2, 3]))
