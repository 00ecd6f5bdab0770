"""`ens export` of Keras 3 models whose custom layers call tf.* ops, with real TensorFlow.

The models are built, saved and run by TensorFlow itself in a subprocess (Keras on its TensorFlow
backend), so the member is compared with TensorFlow's own predictions. This process runs Keras on
torch, where those layers fail: the export must notice that and move to the TensorFlow backend.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_unchanged, ens, one_line_error, snapshot
from export_checks import assert_contract, images_npz, metadata, run_member, sample_pixels, softmax

HW = (16, 32)

LAYERS = '''

@keras.saving.register_keras_serializable(package="course")
class TfResize(keras.layers.Layer):
    """Resizes H and W by a factor with tf.image.resize."""

    def __init__(self, factor=2.0, **kwargs):
        super().__init__(**kwargs)
        self.factor = factor

    def call(self, x):
        size = tf.cast(tf.cast(tf.shape(x)[1:3], tf.float32) * self.factor, tf.int32)
        return tf.image.resize(x, size, method="bilinear")

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}


@keras.saving.register_keras_serializable(package="course")
class TfChannelGate(keras.layers.Layer):
    """Squeeze-and-excitation gate: tf.reduce_mean over H and W, then tf.nn.sigmoid."""

    def call(self, x):
        return x * tf.nn.sigmoid(tf.reduce_mean(x, axis=[1, 2], keepdims=True))
'''
# The two import styles of course notebooks; the second defines a custom_objects dict too.
LAYERS_SEPARATE_IMPORTS = "import keras\nimport tensorflow as tf\n" + LAYERS
LAYERS_ONE_LINE_IMPORT = (
    "import numpy as np, tensorflow as tf, keras\n"
    + LAYERS
    + "\ncustom_objects = {'TfResize': TfResize, 'TfChannelGate': TfChannelGate}\n"
)
KERAS_OPS_LAYER = '''

@keras.saving.register_keras_serializable(package="course")
class Brighten(keras.layers.Layer):
    """keras.ops only: runs on any backend."""

    def call(self, x):
        return keras.ops.add(x, 0.25)
'''
# TensorFlow imported only when a layer runs: no import statement at the top of the file.
LAYERS_LAZY_IMPORT = "import keras\n" + LAYERS.replace("    def call(self, x):\n", (
    "    def call(self, x):\n        tf = __import__('tensorflow')\n"
))  # fmt: skip

BUILD = """
import json, os, runpy, sys
import numpy as np
import keras

job = json.loads(sys.argv[1])
pixels = np.load(job["data"])["test_set"][:8, :, :, None].astype("float32")
for spec in job["models"]:
    layers = runpy.run_path(spec["layers"])
    keras.utils.set_random_seed(spec["seed"])
    inputs = keras.Input((None, None, 1))
    x = keras.layers.Rescaling(1 / 255.0)(inputs) if spec["rescaling"] else inputs
    skip = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    x = layers["TfResize"](0.5)(skip)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    x = layers["TfChannelGate"]()(x)
    x = layers["TfResize"](2.0)(x)
    x = keras.layers.Concatenate()([x, skip])
    outputs = keras.layers.Conv2D(spec["classes"], 1, activation="softmax" if spec["softmax"] else None)(x)
    model = keras.Model(inputs, outputs)
    model.save(spec["path"])
    np.save(spec["path"] + ".tf.npy", keras.ops.convert_to_numpy(model(pixels, training=False)))
"""


def run_on_tensorflow(script: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, "-c", script, *args], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def tf_models(tensorflow, tmp_path_factory):
    """Two models saved by TensorFlow: Rescaling + softmax (separate imports), and logits (one-line
    import), with TensorFlow's own NHWC outputs on the data's first 8 test images."""
    root = tmp_path_factory.mktemp("tf_models")
    data = images_npz(root / "tiny.npz", HW)
    (root / "separate.py").write_text(LAYERS_SEPARATE_IMPORTS)
    (root / "one_line.py").write_text(LAYERS_ONE_LINE_IMPORT)
    models = [
        {"path": str(root / "gate.keras"), "layers": str(root / "separate.py"), "rescaling": True,
         "softmax": True, "classes": 5, "seed": 1},
        {"path": str(root / "logits.keras"), "layers": str(root / "one_line.py"), "rescaling": False,
         "softmax": False, "classes": 3, "seed": 2},
    ]  # fmt: skip
    run_on_tensorflow(BUILD, json.dumps({"data": str(data), "models": models}))
    return root, data


def tf_probs(model: Path, apply_softmax: bool) -> np.ndarray:
    """TensorFlow's own output for the model as NCHW probabilities."""
    out = np.load(f"{model}.tf.npy").transpose(0, 3, 1, 2)
    return softmax(out) if apply_softmax else out


def test_tf_layers_with_rescaling_export_on_the_tensorflow_backend(tf_models, tmp_path, capfd):
    """TensorFlow's start-up logs (this process imports it through the custom-objects file, the
    worker on its own) stay out of the terminal: nothing reaches file descriptors 1 and 2."""
    root, data = tf_models
    args = ["export", root / "gate.keras", "--name", "gate", "--data", data, "--out-dir", tmp_path,
            "--custom-objects", root / "separate.py", "--trust", "--no-bench"]  # fmt: skip
    result = ens(*args)
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 4 and "val mIoU not measured" in lines[2], result.output
    assert "custom layer 'TfResize' failed on the torch backend (RuntimeError)" in result.output
    assert "exported on the TensorFlow backend in a subprocess" in result.output
    assert capfd.readouterr() == ("", ""), "TensorFlow or the worker printed to the terminal"
    member = tmp_path / "gate.onnx"
    pixels = sample_pixels(data)
    assert_contract(member, pixels)
    assert np.abs(run_member(member, pixels) - tf_probs(root / "gate.keras", False)).max() <= 1e-4
    meta = metadata(member)
    assert meta["ens.preprocessing"].endswith("then inside the model: Rescaling(x*0.00392157+0)")
    assert float(meta["ens.parity_max_abs_err"]) <= 1e-4
    versions = json.loads(meta["ens.exporter_versions"])
    assert versions["keras_backend"] == "tensorflow" and {"tensorflow", "tf2onnx"} <= set(versions)
    assert "the source emits probabilities" in meta["ens.export_notes"]
    assert "H, W dynamic" in meta["ens.export_notes"]
    larger = np.kron(pixels[:2], np.ones((1, 1, 2, 2), np.float32))
    assert run_member(member, larger).shape == (2, 5, 32, 64)


def test_tf_layers_imported_on_one_line_with_logits(tf_models, tmp_path, capfd):
    root, data = tf_models
    args = ["export", root / "logits.keras", "--name", "logits", "--data", data, "--out-dir", tmp_path,
            "--custom-objects", root / "one_line.py", "--class-names", "a,b,c", "--trust"]  # fmt: skip
    result = ens(*args)
    assert result.exit_code == 0, result.output
    assert "exported on the TensorFlow backend in a subprocess" in result.output
    assert capfd.readouterr() == ("", ""), "TensorFlow or the worker printed to the terminal"
    member = tmp_path / "logits.onnx"
    pixels = sample_pixels(data)
    assert_contract(member, pixels, n_classes=3)
    assert np.abs(run_member(member, pixels) - tf_probs(root / "logits.keras", True)).max() <= 1e-4
    meta = metadata(member)
    assert "softmax appended" in meta["ens.export_notes"]
    assert meta["ens.preprocessing"] == "x (input range 0-255; x = raw pixel 0..255)"


def test_a_layer_broken_on_both_backends_fails_in_one_line(tf_models, tmp_path):
    root, data = tf_models
    (tmp_path / "bad_axis.py").write_text(LAYERS_SEPARATE_IMPORTS.replace("axis=[1, 2]", "axis=[1, 2, 7]"))
    before = snapshot(root, tmp_path)
    args = ["export", root / "gate.keras", "--name", "bad", "--data", data, "--out-dir", tmp_path,
            "--custom-objects", tmp_path / "bad_axis.py", "--trust"]  # fmt: skip
    one_line_error(ens(*args), "on Keras' TensorFlow backend (subprocess)", "gate.keras", "TfChannelGate")
    assert_unchanged(before, root, tmp_path)


def test_tensorflow_imported_by_layers_that_run_on_torch_exports_on_torch(tensorflow, tmp_path):
    """The backend follows what the layers do, not what the file imports."""
    import keras

    layers = "import tensorflow as tf\nimport keras\n" + KERAS_OPS_LAYER
    (tmp_path / "layers.py").write_text(layers)
    namespace: dict = {}
    exec(layers, namespace)
    inputs = keras.Input((None, None, 1))
    x = namespace["Brighten"]()(keras.layers.Rescaling(1 / 255.0)(inputs))
    model = keras.Model(inputs, keras.layers.Conv2D(3, 3, padding="same", activation="softmax")(x))
    model.save(tmp_path / "ops.keras")
    data = images_npz(tmp_path / "tiny.npz", HW)
    args = ["export", tmp_path / "ops.keras", "--name", "ops", "--data", data, "--out-dir", tmp_path,
            "--custom-objects", tmp_path / "layers.py", "--class-names", "a,b,c", "--trust"]  # fmt: skip
    result = ens(*args)
    assert result.exit_code == 0, result.output
    assert "TensorFlow" not in result.output
    meta = metadata(tmp_path / "ops.onnx")
    assert json.loads(meta["ens.exporter_versions"])["keras_backend"] == "torch"
    pixels = sample_pixels(data)
    expected = keras.ops.convert_to_numpy(model(pixels.transpose(0, 2, 3, 1))).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(run_member(tmp_path / "ops.onnx", pixels), expected, atol=1e-5)


def test_without_tensorflow_every_import_style_gets_the_install_hint(tf_models, tmp_path, monkeypatch):
    """None in sys.modules is what Python without TensorFlow shows: `import tensorflow` raises
    ModuleNotFoundError and no spec is found, whether imported at the top of the file or in call()."""
    root, data = tf_models
    (tmp_path / "lazy.py").write_text(LAYERS_LAZY_IMPORT)
    before = snapshot(root, tmp_path)
    monkeypatch.setitem(sys.modules, "tensorflow", None)
    lines = []
    for layers in (root / "separate.py", root / "one_line.py", tmp_path / "lazy.py"):
        args = ["export", root / "gate.keras", "--name", "n", "--data", data, "--out-dir", tmp_path,
                "--custom-objects", layers, "--trust"]  # fmt: skip
        hint = ("tensorflow is not installed", "pip install 'ens[tensorflow]'")
        lines.append(one_line_error(ens(*args), *hint))
    assert "--custom-objects" in lines[0] and "--custom-objects" in lines[1]
    assert "custom layer 'TfResize' failed on Keras' torch backend" in lines[2]
    assert_unchanged(before, root, tmp_path)
