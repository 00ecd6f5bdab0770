"""Shared pieces of the export tests: a tiny image file and contract checks with ONNX Runtime alone.

The checks deliberately avoid ensemble.members.session and ensemble.members.member, so they test the written
file the way any ONNX consumer would see it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from conftest import ens, write_npz

from ensemble.submission.io import read_submission

AN2DL = ["background", "soil", "bedrock", "sand", "big rock"]


def images_npz(
    path: Path, hw: tuple[int, int] = (32, 48), n_train: int = 6, n_test: int = 10, labelled: bool = False
) -> Path:
    """A course-format file of smooth, textured test images (not uniform noise); with `labelled`, also
    n_train training images with random masks (export then scores the member on them)."""
    rng = np.random.default_rng(1)
    height, width = hw

    def images(n: int) -> np.ndarray:
        yy, xx = np.mgrid[0:height, 0:width]
        base = rng.uniform(40, 200, (n, 1, 1)) + 40 * np.sin(xx / rng.uniform(3, 9, (n, 1, 1)))
        return np.clip(base + 25 * np.cos(yy / 4.0) + rng.normal(0, 12, (n, height, width)), 0, 255).round()

    masks = rng.integers(0, 5, (n_train, height, width))
    train = images(n_train)
    kept = n_train if labelled else 0
    return write_npz(path, train[:kept], masks[:kept], images(n_test))


def sample_pixels(data: Path, n: int = 8) -> np.ndarray:
    """The first n test images as float32 (n, 1, H, W) raw pixels."""
    return np.load(data)["test_set"][:n, None].astype(np.float32)


def run_member(path: Path, pixels: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["probs"], {"pixels": np.ascontiguousarray(pixels, np.float32)})[0]


def assert_contract(path: Path, pixels: np.ndarray, n_classes: int = 5, dynamic_hw: bool = True) -> None:
    """One float input `pixels` (N, 1, H, W), one output `probs` (N, C, H, W); batch (and H, W) dynamic;
    probabilities sum to 1; a single file with no external data."""
    model = onnx.load(str(path), load_external_data=False)
    assert not list(path.parent.glob(f"{path.name}.data")), "external data next to the member"
    assert not any(init.data_location == onnx.TensorProto.EXTERNAL for init in model.graph.initializer)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    assert (inp.name, inp.type, out.name, out.type) == ("pixels", "tensor(float)", "probs", "tensor(float)")
    height, width = pixels.shape[2:]
    assert isinstance(inp.shape[0], str) and inp.shape[1] == 1
    assert isinstance(out.shape[0], str) and out.shape[1] == n_classes
    if dynamic_hw:
        assert all(isinstance(d, str) for d in inp.shape[2:]), inp.shape
    else:
        assert inp.shape[2:] == [height, width]
    for batch in (pixels[:1], pixels[1:4]):
        probs = session.run(["probs"], {"pixels": batch})[0]
        assert probs.shape == (len(batch), n_classes, height, width)
        assert probs.min() >= 0
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def metadata(path: Path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


def softmax(scores: np.ndarray, axis: int = 1) -> np.ndarray:
    exp = np.exp(scores - scores.max(axis=axis, keepdims=True))
    return exp / exp.sum(axis=axis, keepdims=True)


def check_predicts(tmp_path, store, name, data):
    """`ens predict` with the member alone writes the labels its probabilities give."""
    out = tmp_path / f"{name}.csv"
    args = ["--members", name, "--models-dir", store, "--data", data, "--tta", "none", "--min-area", "0"]
    result = ens("predict", *args, "--format", "flat", "--runtime", "ort", "--device", "cpu", "--out", out)
    assert result.exit_code == 0, result.output
    images = np.load(data)["test_set"][:, None].astype(np.float32)
    _, labels, _ = read_submission(out, images.shape[2:], 5)
    expected = np.argmax(run_member(store / f"{name}.onnx", images)[:, 1:], axis=1) + 1
    assert labels.shape == expected.shape and (labels == expected).mean() > 0.999
