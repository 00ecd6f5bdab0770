"""ONNX Runtime sessions: CPU sessions on the shared memory arena give plain ONNX Runtime's outputs."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
from onnx_members import make_member

from ensemble.members.member import load_member
from ensemble.members.session import CPU, build_session


def test_cpu_sessions_on_the_shared_arena_match_plain_ort(tmp_path):
    members = [
        load_member(make_member(tmp_path / f"{name}.onnx", seed=seed)) for seed, name in enumerate("ab")
    ]
    pixels = np.random.default_rng(0).integers(0, 256, (3, 1, 8, 12)).astype(np.float32)
    for member in members:
        runner = build_session(member, "cpu", threads=1)
        assert runner.report.used[0] == CPU and runner.report.fallback is None
        plain = ort.InferenceSession(str(member.path), providers=[CPU])
        expected = plain.run(None, {plain.get_inputs()[0].name: pixels})[0]
        np.testing.assert_array_equal(runner.run(pixels), expected)
