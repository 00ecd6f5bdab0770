"""`ens export` of Keras 3 models (torch backend), checked with ONNX Runtime alone against the
model's own predictions: NHWC folded to NCHW, Rescaling inside vs --input-range, logits vs softmax."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("torch")
keras = pytest.importorskip("keras")
h5py = pytest.importorskip("h5py")

from conftest import ens, one_line_error
from export_checks import assert_contract, images_npz, metadata, run_member, sample_pixels, softmax
from tiny_nets import keras_net

from exporters import ExportRequest, export_member

CUSTOM_LAYER = '''
import keras


@keras.saving.register_keras_serializable(package="tests")
class Brighten(keras.layers.Layer):
    """Adds a learnt-free constant with keras.ops, so it runs on any backend."""

    def call(self, x):
        return keras.ops.add(x, 0.25)
'''


@pytest.fixture
def data(tmp_path):
    return images_npz(tmp_path / "tiny.npz", (32, 48))


def keras_probs(model, pixels, scale=1.0, apply_softmax=False):
    """The model's own output on NHWC pixels / scale, back to NCHW."""
    out = keras.ops.convert_to_numpy(model(pixels.transpose(0, 2, 3, 1) / np.float32(scale), training=False))
    out = out.transpose(0, 3, 1, 2)
    return softmax(out) if apply_softmax else out


def test_rescaling_inside_and_softmax_out(tmp_path, data):
    model = keras_net(rescaling=True, softmax=True)
    model.save(tmp_path / "net.keras")
    result = ens("export", tmp_path / "net.keras", "--name", "k", "--data", data, "--out-dir", tmp_path)
    assert result.exit_code == 0, result.output
    member = tmp_path / "k.onnx"
    pixels = sample_pixels(data)
    assert_contract(member, pixels)
    np.testing.assert_allclose(run_member(member, pixels), keras_probs(model, pixels), atol=1e-5)
    meta = metadata(member)
    assert meta["ens.preprocessing"] == (
        "x (input range 0-255; x = raw pixel 0..255), then inside the model: Rescaling(x*0.00392157+0)"
    )
    assert meta["ens.source_framework"] == "keras"
    assert "the source emits probabilities" in meta["ens.export_notes"]
    assert json.loads(meta["ens.exporter_versions"])["keras"] == keras.__version__
    larger = np.kron(pixels[:2], np.ones((1, 1, 2, 2), np.float32))
    np.testing.assert_allclose(run_member(member, larger), keras_probs(model, larger), atol=1e-5)


def test_logits_need_scale_and_get_a_softmax(tmp_path, data):
    model = keras_net(rescaling=False, softmax=False, n_classes=4)
    model.save(tmp_path / "logits.keras")
    args = ["export", tmp_path / "logits.keras", "--name", "logits", "--data", data, "--out-dir", tmp_path,
            "--input-range", "0-1", "--class-names", "background,soil,rock,sand"]  # fmt: skip
    assert ens(*args).exit_code == 0
    pixels = sample_pixels(data)
    assert_contract(tmp_path / "logits.onnx", pixels, n_classes=4)
    expected = keras_probs(model, pixels, 255.0, apply_softmax=True)
    np.testing.assert_allclose(run_member(tmp_path / "logits.onnx", pixels), expected, atol=1e-5)
    meta = metadata(tmp_path / "logits.onnx")
    assert meta["ens.preprocessing"] == "x/255 (input range 0-1; x = raw pixel 0..255)"
    assert "softmax appended" in meta["ens.export_notes"]
    assert json.loads(meta["ens.class_names"]) == ["background", "soil", "rock", "sand"]


def test_fixed_input_size_h5_keeps_batch_dynamic(tmp_path, data):
    model = keras_net(rescaling=True, softmax=True, hw=(32, 48))
    model.save(tmp_path / "fixed.h5")
    result = export_member(ExportRequest(tmp_path / "fixed.h5", "fixed", data=data, out_dir=tmp_path))
    pixels = sample_pixels(data)
    assert_contract(result.member.path, pixels, dynamic_hw=False)
    np.testing.assert_allclose(run_member(result.member.path, pixels), keras_probs(model, pixels), atol=1e-5)
    assert result.member.info.input_hw == (32, 48)
    other = images_npz(tmp_path / "other.npz", (64, 96))
    refused = ens("export", tmp_path / "fixed.h5", "--name", "f2", "--data", other, "--out-dir", tmp_path)
    one_line_error(refused, "holds 64x96 images but the export size is 32x48")


def test_custom_layer_file_is_registered(tmp_path, data):
    (tmp_path / "layers.py").write_text(CUSTOM_LAYER)
    namespace: dict = {}
    exec(CUSTOM_LAYER, namespace)
    inputs = keras.Input((None, None, 1))
    x = namespace["Brighten"]()(keras.layers.Rescaling(1 / 255.0)(inputs))
    model = keras.Model(inputs, keras.layers.Conv2D(3, 3, padding="same", activation="softmax")(x))
    model.save(tmp_path / "custom.keras")
    keras.saving.get_custom_objects().clear()
    args = ["export", tmp_path / "custom.keras", "--name", "custom", "--data", data, "--out-dir", tmp_path]
    one_line_error(ens(*args), "--custom-objects")
    layers = ["--custom-objects", tmp_path / "layers.py"]
    one_line_error(ens(*args, *layers), "is a Python file: importing it runs its code", "--trust")
    assert ens(*args, *layers, "--trust").exit_code == 0
    pixels = sample_pixels(data)
    np.testing.assert_allclose(
        run_member(tmp_path / "custom.onnx", pixels), keras_probs(model, pixels), atol=1e-5
    )


def test_lambda_layer_needs_trust(tmp_path, data):
    inputs = keras.Input((None, None, 1))
    x = keras.layers.Lambda(lambda t: t / 255.0)(inputs)
    model = keras.Model(inputs, keras.layers.Conv2D(2, 3, padding="same", activation="softmax")(x))
    model.save(tmp_path / "lam.keras")
    args = ["export", tmp_path / "lam.keras", "--name", "lam", "--data", data, "--out-dir", tmp_path]
    one_line_error(ens(*args), "Lambda", "--trust")
    assert ens(*args, "--trust", "--class-names", "a,b").exit_code == 0


def test_keras2_files_are_refused_with_a_rebuild_hint(tmp_path):
    with h5py.File(tmp_path / "old.h5", "w") as handle:
        handle.attrs["keras_version"] = "2.15.0"
        handle.attrs["backend"] = "tensorflow"
        handle.attrs["model_config"] = json.dumps({"class_name": "Sequential", "config": {"layers": []}})
    one_line_error(
        ens("export", tmp_path / "old.h5", "--name", "old"), "saved by Keras 2.15.0", "load_weights"
    )
    (tmp_path / "saved").mkdir()
    (tmp_path / "saved" / "saved_model.pb").write_bytes(b"\x08\x01")
    one_line_error(
        ens("export", tmp_path / "saved", "--name", "old"), "SavedModel", "rebuild the architecture"
    )


def test_rescaling_model_refuses_a_second_scale(tmp_path, data):
    keras_net(rescaling=True, softmax=True).save(tmp_path / "net.keras")
    result = ens(
        "export",
        tmp_path / "net.keras",
        "--name",
        "n",
        "--input-range",
        "0-1",
        "--data",
        data,
        "--out-dir",
        tmp_path,
    )
    one_line_error(result, "already normalises raw pixels (Rescaling", "drop --input-range")
