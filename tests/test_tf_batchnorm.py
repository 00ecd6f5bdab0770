"""A Keras net exported on the TensorFlow backend (worker subprocess) records its BatchNorm layers, so
the quality guard names BatchNorm statistics first among the causes of a poor member, as it does for
torch nets and Keras nets exported on the torch backend."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")
keras = pytest.importorskip("keras")

from conftest import ens, one_line_error
from export_checks import images_npz

HW = (16, 24)


def one_class_net(batchnorm: bool):
    """Conv (+ BatchNormalization) + a 1x1 head whose bias makes 'soil' win on every pixel."""
    keras.utils.set_random_seed(7)
    inputs = keras.Input((None, None, 1))
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(x)
    if batchnorm:
        x = keras.layers.BatchNormalization()(x)
    head = keras.layers.Conv2D(5, 1, activation="softmax")
    model = keras.Model(inputs, head(x))
    kernel, _ = head.get_weights()
    head.set_weights([np.zeros_like(kernel), np.array([0, 8, 0, 0, 0], np.float32)])
    return model


@pytest.mark.slow
@pytest.mark.parametrize("batchnorm", [True, False])
def test_tensorflow_backend_export_names_batchnorm_first_when_the_net_has_it(tensorflow, tmp_path, batchnorm):
    data = images_npz(tmp_path / "d.npz", HW, n_train=12, labelled=True)
    one_class_net(batchnorm).save(tmp_path / "net.keras")
    result = ens(
        "export", tmp_path / "net.keras", "--name", "net", "--data", data, "--out-dir", tmp_path / "models",
        "--keras-backend", "tensorflow",
    )  # fmt: skip
    line = one_line_error(result, "refusing this member", "predicts 'soil'", "likely causes")
    first, second = "BatchNorm statistics", "preprocessing that differs"
    if not batchnorm:
        first, second = second, first
    assert line.index(first) < line.index(second), line
    assert not (tmp_path / "models" / "net.onnx").exists()
