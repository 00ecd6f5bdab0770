"""`ens export` of Keras transformer-style blocks (LayerNormalization, MultiHeadAttention with gelu) on
both Keras backends, checked with ONNX Runtime against the model's own predictions, then `ens predict`.

The nets are built and saved here on the torch backend; the TensorFlow-backend exports run Keras on
TensorFlow in the export's worker subprocess, and their member is compared with this process's Keras.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

pytest.importorskip("torch")
keras = pytest.importorskip("keras")

from conftest import ens, one_line_error
from export_checks import assert_contract, images_npz, metadata, run_member, sample_pixels
from tiny_nets import TinyNet, keras_net

HW = (16, 24)
ROOT = Path(__file__).resolve().parents[1]


def layernorm_net():
    """Conv + LayerNormalization over the channels, dynamic H and W."""
    keras.utils.set_random_seed(3)
    inputs = keras.Input((None, None, 1))
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    x = keras.layers.LayerNormalization()(x)
    return keras.Model(inputs, keras.layers.Conv2D(5, 1, activation="softmax")(x))


def attention_unet(hw=HW, width=8):
    """A U-Net-like net with a self-attention bottleneck: reshape to tokens, MultiHeadAttention,
    LayerNorm, Dense with gelu, LayerNorm, reshape back, upsample and join the skip."""
    keras.utils.set_random_seed(4)
    inputs = keras.Input((*hw, 1))
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    skip = keras.layers.Conv2D(width, 3, padding="same", activation="relu")(x)
    x = keras.layers.MaxPooling2D()(skip)
    x = keras.layers.Conv2D(width, 3, padding="same", activation="relu")(x)
    tokens = keras.layers.Reshape((-1, width))(x)
    attended = keras.layers.MultiHeadAttention(num_heads=2, key_dim=4)(tokens, tokens)
    tokens = keras.layers.LayerNormalization()(keras.layers.Add()([tokens, attended]))
    mlp = keras.layers.Dense(2 * width)(keras.layers.Dense(2 * width, activation="gelu")(tokens))
    tokens = keras.layers.LayerNormalization()(keras.layers.Add()([tokens, keras.layers.Dense(width)(mlp)]))
    x = keras.layers.Reshape((hw[0] // 2, hw[1] // 2, width))(tokens)
    x = keras.layers.Concatenate()([keras.layers.UpSampling2D()(x), skip])
    return keras.Model(inputs, keras.layers.Conv2D(5, 1, activation="softmax")(x))


NETS = {"layernorm": layernorm_net, "attention": attention_unet}


@pytest.fixture
def data(tmp_path):
    return images_npz(tmp_path / "tiny.npz", HW)


def keras_probs(model, pixels):
    """The model's own probabilities on NCHW raw pixels, as NCHW."""
    out = model(pixels.transpose(0, 2, 3, 1), training=False)
    return keras.ops.convert_to_numpy(out).transpose(0, 3, 1, 2)


def export_and_predict(tmp_path, net: str, data: Path, *extra) -> tuple[str, Path, object]:
    """Save the net, export it, check the member against Keras and predict the data's test images."""
    model = NETS[net]()
    model.save(tmp_path / f"{net}.keras")
    store = tmp_path / "models"
    args = ["export", tmp_path / f"{net}.keras", "--name", net, "--data", data, "--out-dir", store]
    result = ens(*args, *extra)
    assert result.exit_code == 0, result.output
    member = store / f"{net}.onnx"
    pixels = sample_pixels(data)
    assert_contract(member, pixels, dynamic_hw=net == "layernorm")
    assert np.abs(run_member(member, pixels) - keras_probs(model, pixels)).max() <= 1e-4
    assert float(metadata(member)["ens.parity_max_abs_err"]) <= 1e-4
    if net == "layernorm":  # H and W stay dynamic: LayerNormalization normalises the channels only
        larger = np.kron(pixels[:2], np.ones((1, 1, 2, 2), np.float32))
        assert np.abs(run_member(member, larger) - keras_probs(model, larger)).max() <= 1e-4
    out = tmp_path / "sub.csv"
    predicted = ens("predict", "--data", data, "--models-dir", store, "--members", net, "--out", out)
    assert predicted.exit_code == 0, predicted.output
    with out.open() as handle:
        ids = {row["ImageId_ClassId"].rsplit("_", 1)[0] for row in csv.DictReader(handle)}
    assert len(ids) == 10
    return result.output, member, model


def backend_of(member: Path) -> str:
    return json.loads(metadata(member)["ens.exporter_versions"])["keras_backend"]


@pytest.mark.parametrize("net", ["layernorm", "attention"])
def test_blocks_export_on_the_torch_backend(tmp_path, data, net):
    output, member, _ = export_and_predict(tmp_path, net, data, "--keras-backend", "torch")
    assert "exported on Keras' torch backend (--keras-backend torch)" in output
    assert backend_of(member) == "torch"
    assert "LayerNormalization" in {node.op_type for node in onnx.load(str(member)).graph.node}


def test_a_failed_conversion_on_forced_torch_names_the_other_backend(tmp_path, data, monkeypatch):
    """Without the LayerNormalization repair torch's exporter fails as it did; with --keras-backend
    torch that is one line pointing to the TensorFlow backend, and nothing is written."""
    monkeypatch.setattr("exporters.keras_model.static_layer_norm", contextlib.nullcontext)
    layernorm_net().save(tmp_path / "ln.keras")
    args = ["export", tmp_path / "ln.keras", "--name", "ln", "--data", data, "--out-dir", tmp_path / "models"]
    one_line_error(
        ens(*args, "--keras-backend", "torch"),
        "keras could not export 'ln.keras' to ONNX (SymbolicValueError",
        "--keras-backend tensorflow converts it",
    )
    assert not (tmp_path / "models" / "ln.onnx").exists()


def test_without_tensorflow_the_other_backend_is_an_install_hint(tmp_path, data, monkeypatch):
    """None in sys.modules is what Python without TensorFlow shows."""
    monkeypatch.setitem(sys.modules, "tensorflow", None)
    monkeypatch.setattr("exporters.keras_model.static_layer_norm", contextlib.nullcontext)
    layernorm_net().save(tmp_path / "ln.keras")
    args = ["export", tmp_path / "ln.keras", "--name", "ln", "--data", data, "--out-dir", tmp_path / "models"]
    one_line_error(
        ens(*args, "--keras-backend", "tensorflow"),
        "--keras-backend tensorflow needs tensorflow, which is not installed",
        "pip install 'ens[tensorflow]'",
    )
    one_line_error(
        ens(*args),
        "keras could not export 'ln.keras' to ONNX (SymbolicValueError",
        "pip install 'ens[tensorflow]' (tensorflow) to convert it on Keras' TensorFlow backend",
    )
    assert not (tmp_path / "models").exists()


def test_attention_block_exports_on_the_tensorflow_backend(tensorflow, tmp_path, data, capfd):
    """tf2onnx writes the exact gelu as Erfc, no ONNX operator: the member holds 1 - Erf instead."""
    output, member, _ = export_and_predict(tmp_path, "attention", data, "--keras-backend", "tensorflow")
    assert "Keras' torch backend was skipped (--keras-backend tensorflow)" in output
    assert "exported on the TensorFlow backend in a subprocess" in output
    assert backend_of(member) == "tensorflow"
    ops = {node.op_type for node in onnx.load(str(member)).graph.node}
    assert "Erf" in ops and "Erfc" not in ops
    assert capfd.readouterr() == ("", ""), "TensorFlow or the worker printed to the terminal"


def test_a_failed_torch_conversion_moves_to_the_tensorflow_backend(tensorflow, tmp_path, data, monkeypatch):
    """Auto: when torch's ONNX exporter fails (here: LayerNormalization without its repair), the graph
    comes from the TensorFlow backend and is checked against the torch backend's outputs."""
    monkeypatch.setattr("exporters.keras_model.static_layer_norm", contextlib.nullcontext)
    output, member, _ = export_and_predict(tmp_path, "layernorm", data)
    moved = "torch's ONNX exporter failed (SymbolicValueError): graph exported on the TensorFlow backend"
    assert moved in output
    assert "exported on Keras' torch backend" not in output
    versions = json.loads(metadata(member)["ens.exporter_versions"])
    assert versions["keras_backend"] == "tensorflow" and {"tensorflow", "tf2onnx", "torch"} <= set(versions)


def test_keras_backend_is_refused_for_torch_models(tmp_path, data):
    import torch

    one_line_error(
        ens("export", tmp_path / "m.keras", "--name", "m", "--keras-backend", "jax"),
        "--keras-backend got 'jax'; allowed: 'auto', 'torch', 'tensorflow'",
    )

    torch.save(TinyNet().state_dict(), tmp_path / "tiny.pth")
    args = ["export", tmp_path / "tiny.pth", "--name", "tiny", "--factory", "tiny_nets:TinyNet",
            "--data", data, "--out-dir", tmp_path, "--keras-backend", "tensorflow"]  # fmt: skip
    one_line_error(ens(*args), "--keras-backend tensorflow applies to Keras models", "drop --keras-backend")


def test_rescaling_model_exports_without_tensorflow_logs(tmp_path, data):
    """A fresh `ens export` process (TensorFlow not yet imported, its log level not set) prints only
    its own four lines: reading Rescaling's settings imports no TensorFlow."""
    keras_net(rescaling=True, softmax=True).save(tmp_path / "net.keras")
    unset = ("TF_CPP_MIN_LOG_LEVEL", "KERAS_BACKEND")
    env = {key: value for key, value in os.environ.items() if key not in unset}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    done = subprocess.run(
        [sys.executable, "-m", "ensemble", "export", str(tmp_path / "net.keras"), "--name", "net",
         "--data", str(data), "--out-dir", str(tmp_path / "models"), "--no-bench"],
        capture_output=True, text=True, env={**env, "COLUMNS": "200"}, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stderr == "", done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 4 and lines[0].startswith("wrote "), done.stdout
    assert "exported on Keras' torch backend" in lines[3]
