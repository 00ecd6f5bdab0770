"""`ens export` of multi-output nets like the course reports': deep supervision (aux heads beside the
main one) in Keras and PyTorch, U-Net 3+, DeepLabv3+ on a keras.applications backbone; which output
the member keeps, `--output`, and the refusals, checked with ONNX Runtime against the source nets."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
keras = pytest.importorskip("keras")

from conftest import ens, one_line_error
from export_checks import (
    assert_contract,
    check_predicts,
    images_npz,
    metadata,
    run_member,
    sample_pixels,
    softmax,
)
from test_export_keras_tf import LAYERS_SEPARATE_IMPORTS, run_on_tensorflow
from tiny_nets import TinyNet, keras_net, trained_like
from torch import nn

from exporters.outputs import choose_output

HW = (32, 64)
layers = keras.layers


@pytest.fixture
def data(tmp_path):
    return images_npz(tmp_path / "images.npz", HW)


def export(source, name, data, store, *extra):
    return ens("export", source, "--name", name, "--data", data, "--out-dir", store, *extra)


def keras_out(model, pixels, output):
    """One output of a Keras model (by position) on NCHW raw pixels, back to NCHW."""
    out = model(pixels.transpose(0, 2, 3, 1), training=False)[output]
    return keras.ops.convert_to_numpy(out).transpose(0, 3, 1, 2)


def check_member(member, pixels, expected, n_classes=5, dynamic_hw=False):
    """Contract, parity <= 1e-4 against the source's kept head, and the parity the export recorded."""
    assert_contract(member, pixels, n_classes=n_classes, dynamic_hw=dynamic_hw)
    np.testing.assert_allclose(run_member(member, pixels), expected, atol=1e-4)
    assert float(metadata(member)["ens.parity_max_abs_err"]) <= 1e-4


# --- Keras: a deep-supervision model with its aux head first ------------------------------------------


def two_heads(hw=HW):
    """A U-Net with an auxiliary softmax head at 1/2 resolution listed first, the main head second."""
    inputs = keras.Input((*hw, 1))
    x = layers.Rescaling(1 / 255)(inputs)
    skip = layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    low = layers.Conv2D(8, 3, padding="same", activation="relu")(layers.MaxPooling2D()(skip))
    aux = layers.Conv2D(5, 1, activation="softmax", name="aux")(low)
    x = layers.Concatenate()([layers.UpSampling2D()(low), skip])
    main = layers.Conv2D(5, 1, activation="softmax", name="main")(x)
    return keras.Model(inputs, [aux, main])


def test_deep_supervision_keeps_the_full_size_head(tmp_path, data):
    model = two_heads()
    model.save(tmp_path / "ds.keras")
    store = tmp_path / "models"
    result = export(tmp_path / "ds.keras", "ds", data, store)
    assert result.exit_code == 0, result.output
    assert "kept output 'main' (the second of 2), the only one at the input size" in result.output
    pixels = sample_pixels(data)
    check_member(store / "ds.onnx", pixels, keras_out(model, pixels, 1))
    assert metadata(store / "ds.onnx")["ens.source_output"] == "'main' of 2"
    check_predicts(tmp_path, store, "ds", data)

    one_line_error(  # a 1/2 head beside a full-size one is an auxiliary output, not resized
        export(tmp_path / "ds.keras", "aux", data, store, "--output", "aux"),
        "--output 'aux': the model's output 'aux' is at 1/2 of the input size while 'main' is at it",
        "choose the full-size head (--output main)",
    )
    one_line_error(
        export(tmp_path / "ds.keras", "x", data, store, "--output", "mian"),
        "--output 'mian' is not one of the model's 2 outputs",
        "'aux' (8, 16, 32, 5), 'main' (8, 32, 64, 5)] (shapes (N, H, W, C))",
        "pass 'aux', 'main' or an index 0..1",
    )
    assert sorted(p.name for p in store.glob("*.onnx")) == ["ds.onnx"]
    chosen = export(tmp_path / "ds.keras", "by_index", data, store, "--output", "1")
    assert chosen.exit_code == 0, chosen.output
    assert "kept output 'main', chosen by --output" in chosen.output


def test_output_option_on_a_single_output_model(tmp_path, data):
    keras_net(rescaling=True, softmax=True, hw=HW).save(tmp_path / "one.keras")
    one_line_error(
        export(tmp_path / "one.keras", "one", data, tmp_path, "--output", "main"),
        "--output 'main': the model returns a single tensor (8, 32, 64, 5)", "drop --output",
    )  # fmt: skip
    one_line_error(
        export(tmp_path / "one.keras", "one", data, tmp_path, "--output", " "), "--output is empty"
    )


TF_TWO_HEADS = """
import runpy, sys
import numpy as np
import keras

layers = runpy.run_path(sys.argv[1])
keras.utils.set_random_seed(0)
inputs = keras.Input((None, None, 1))
x = keras.layers.Rescaling(1 / 255.0)(inputs)
low = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(layers["TfResize"](0.5)(x))
aux = keras.layers.Conv2D(5, 1, activation="softmax", name="aux")(layers["TfChannelGate"]()(low))
main = keras.layers.Conv2D(5, 1, activation="softmax", name="main")(layers["TfResize"](2.0)(low))
model = keras.Model(inputs, [aux, main])
model.save(sys.argv[2])
pixels = np.load(sys.argv[3])["test_set"][:8, :, :, None].astype("float32")
np.save(sys.argv[2] + ".main.npy", keras.ops.convert_to_numpy(model(pixels, training=False)[1]))
"""


def test_tensorflow_worker_honours_output(tensorflow, tmp_path, data):  # noqa: F811
    """A deep-supervision model whose tf.* layers run only on TensorFlow: the worker reports the
    output layers' names, so --output names them there as on torch."""
    (tmp_path / "layers.py").write_text(LAYERS_SEPARATE_IMPORTS)
    source = tmp_path / "tf_heads.keras"
    run_on_tensorflow(TF_TWO_HEADS, str(tmp_path / "layers.py"), str(source), str(data))
    common = ["--custom-objects", tmp_path / "layers.py", "--trust"]
    store = tmp_path / "models"
    result = export(source, "tf_heads", data, store, *common, "--output", "main")
    assert result.exit_code == 0, result.output
    assert "exported on the TensorFlow backend in a subprocess" in result.output
    assert "kept output 'main', chosen by --output" in result.output
    pixels = sample_pixels(data)
    expected = np.load(f"{source}.main.npy").transpose(0, 3, 1, 2)
    check_member(store / "tf_heads.onnx", pixels, expected, dynamic_hw=True)


# --- Keras: U-Net 3+ with deep supervision, trained with custom losses and metrics --------------------


def conv_bn_relu(x, filters):
    x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
    return layers.ReLU()(layers.BatchNormalization()(x))


def unet3plus(hw=HW, n_classes=5, full_size_heads=False):
    """U-Net 3+ in miniature: 4 encoder levels; every decoder level takes all encoder levels (max-pooled
    when shallower) and all deeper decoder levels (upsampled); a softmax head at the bottleneck and at every
    decoder level (deep supervision) at its own resolution, or upsampled to full size; main head last."""
    inputs = keras.Input((*hw, 1))
    x = layers.Rescaling(1 / 255)(inputs)
    encoder = []
    for level, filters in enumerate((4, 8, 8, 16)):
        x = conv_bn_relu(layers.MaxPooling2D()(x) if level else x, filters)
        encoder.append(x)
    decoder = {3: encoder[3]}
    for level in (2, 1, 0):
        parts = []
        for source in range(4):
            if source < level:
                part = layers.MaxPooling2D(2 ** (level - source))(encoder[source])
            elif source == level:
                part = encoder[source]
            else:
                part = layers.UpSampling2D(2 ** (source - level), interpolation="bilinear")(decoder[source])
            parts.append(conv_bn_relu(part, 4))
        decoder[level] = conv_bn_relu(layers.Concatenate()(parts), 16)
    heads = []
    for level in (3, 2, 1, 0):
        head = layers.Conv2D(n_classes, 3, padding="same")(decoder[level])
        if full_size_heads and level:
            head = layers.UpSampling2D(2**level, interpolation="bilinear")(head)
        heads.append(layers.Softmax(name="main" if level == 0 else f"side{level}")(head))
    return keras.Model(inputs, heads, name="unet3plus")


def weighted_cce(y_true, y_pred):
    """Class-weighted categorical cross-entropy on one-hot labels, as the reports wrote theirs."""
    weights = keras.ops.convert_to_tensor([0.2, 1.0, 1.0, 1.0, 5.0])
    log_p = keras.ops.log(keras.ops.clip(y_pred, 1e-7, 1.0))
    return -keras.ops.mean(keras.ops.sum(y_true * log_p * weights, axis=-1))


class MeanIntersectionOverUnion(keras.metrics.MeanIoU):
    """The course's metric: MeanIoU over one-hot labels, pixels whose true label is excluded dropped."""

    def __init__(self, num_classes, labels_to_exclude=(0,), name="mean_iou", dtype=None):
        super().__init__(num_classes=num_classes, name=name, dtype=dtype)
        self.labels_to_exclude = list(labels_to_exclude)

    def update_state(self, y_true, y_pred, sample_weight=None):
        labels = keras.ops.argmax(y_true, axis=-1)
        keep = keras.ops.ones_like(labels, dtype="int32")
        for label in self.labels_to_exclude:
            keep = keep * keras.ops.cast(keras.ops.not_equal(labels, label), "int32")
        return super().update_state(labels, keras.ops.argmax(y_pred, axis=-1), keep)

    def get_config(self):
        return {**super().get_config(), "labels_to_exclude": self.labels_to_exclude}


def test_unet3plus_trained_with_custom_loss_and_metric(tmp_path, data):
    model = unet3plus()
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (8, *HW, 1)).astype(np.float32)
    masks = np.eye(5, dtype=np.float32)[rng.integers(0, 5, (8, *HW))]
    targets = [masks[:, :: 2**level, :: 2**level] for level in (3, 2, 1, 0)]
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3), loss=[weighted_cce] * 4, loss_weights=[0.1, 0.2, 0.3, 1.0],
        metrics={"main": [MeanIntersectionOverUnion(num_classes=5)]},
    )  # fmt: skip
    history = model.fit(images, targets, batch_size=4, epochs=1, verbose=0)
    assert "main_mean_iou" in history.history
    model.save(tmp_path / "unet3plus.keras")
    store = tmp_path / "models"
    result = export(tmp_path / "unet3plus.keras", "u3p", data, store)
    assert result.exit_code == 0, result.output
    assert "kept output 'main' (the fourth of 4), the only one at the input size" in result.output
    pixels = sample_pixels(data)
    check_member(store / "u3p.onnx", pixels, keras_out(model, pixels, 3))
    check_predicts(tmp_path, store, "u3p", data)


def test_unet3plus_with_full_size_heads_needs_output(tmp_path, data):
    model = unet3plus(full_size_heads=True)
    model.save(tmp_path / "u3p_full.keras")
    store = tmp_path / "models"
    one_line_error(
        export(tmp_path / "u3p_full.keras", "u3p", data, store),
        "the model returns 4 outputs ['side3' (8, 32, 64, 5), 'side2' (8, 32, 64, 5), "
        "'side1' (8, 32, 64, 5), 'main' (8, 32, 64, 5)] (shapes (N, H, W, C)) and 4 of them are score maps "
        "at the input size 32x64",
        "choose the member's with --output NAME|INDEX (e.g. --output main)",
    )
    assert not store.exists() or not list(store.iterdir())
    result = export(tmp_path / "u3p_full.keras", "u3p", data, store, "--output", "main")
    assert result.exit_code == 0, result.output
    pixels = sample_pixels(data)
    check_member(store / "u3p.onnx", pixels, keras_out(model, pixels, 3))
    assert metadata(store / "u3p.onnx")["ens.source_output"] == "'main' of 4"


# --- Keras: DeepLabv3+ on a keras.applications backbone ----------------------------------------------


def deeplabv3plus(hw=HW, n_classes=5):
    """DeepLabv3+ with a MobileNetV2 (alpha 0.35, untrained) backbone: the grayscale image repeated to
    3 channels inside the model, ASPP on the 1/16 features (with an aux head, listed first), decoder
    joining the 1/4 features, bilinear upsampling back to full size."""
    inputs = keras.Input((*hw, 1))
    rgb = layers.Rescaling(1 / 127.5, offset=-1)(layers.Concatenate()([inputs, inputs, inputs]))
    backbone = keras.applications.MobileNetV2(
        input_shape=(*hw, 3), alpha=0.35, include_top=False, weights=None
    )
    taps = [backbone.get_layer(name).output for name in ("block_3_expand_relu", "block_13_expand_relu")]
    low, high = keras.Model(backbone.input, taps, name="features")(rgb)
    size = (hw[0] // 16, hw[1] // 16)
    branches = [conv_bn_relu(high, 8)] + [
        layers.ReLU()(layers.Conv2D(8, 3, padding="same", dilation_rate=rate)(high)) for rate in (2, 3)
    ]
    pooled = layers.Conv2D(8, 1, activation="relu")(layers.GlobalAveragePooling2D(keepdims=True)(high))
    branches.append(layers.UpSampling2D(size)(pooled))
    aspp = layers.Conv2D(8, 1, activation="relu")(layers.Concatenate()(branches))
    aux = layers.Conv2D(n_classes, 1, activation="softmax", name="aux")(aspp)
    x = layers.UpSampling2D(4, interpolation="bilinear")(aspp)
    x = layers.Concatenate()([x, layers.Conv2D(4, 1, activation="relu")(low)])
    x = layers.UpSampling2D(4, interpolation="bilinear")(conv_bn_relu(x, 8))
    main = layers.Conv2D(n_classes, 1, activation="softmax", name="main")(x)
    return keras.Model(inputs, [aux, main], name="deeplabv3plus")


def test_deeplabv3plus_on_mobilenetv2(tmp_path, data):
    model = deeplabv3plus()
    model.save(tmp_path / "deeplab.keras")
    store = tmp_path / "models"
    result = export(tmp_path / "deeplab.keras", "deeplab", data, store)
    assert result.exit_code == 0, result.output
    assert "kept output 'main' (the second of 2), the only one at the input size" in result.output
    assert "Rescaling(x*0.00784314+-1)" in metadata(store / "deeplab.onnx")["ens.preprocessing"]
    pixels = sample_pixels(data)
    check_member(store / "deeplab.onnx", pixels, keras_out(model, pixels, 1))
    check_predicts(tmp_path, store, "deeplab", data)


# --- PyTorch: a U-Net with deep supervision returning (aux, main) ------------------------------------


def block(c_in: int, c_out: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU())


class DeepSupervisedUNet(nn.Module):
    """Two-level U-Net returning (aux logits at 1/2 resolution, main logits); with aux_full_size the
    aux head is upsampled to the input size too, as some implementations do."""

    def __init__(self, n_classes: int = 5, width: int = 8, aux_full_size: bool = False) -> None:
        super().__init__()
        self.enc1, self.enc2, self.mid = block(1, width), block(width, 2 * width), block(2 * width, 4 * width)
        self.up2, self.dec2 = nn.ConvTranspose2d(4 * width, 2 * width, 2, 2), block(4 * width, 2 * width)
        self.up1, self.dec1 = nn.ConvTranspose2d(2 * width, width, 2, 2), block(2 * width, width)
        self.aux, self.head = nn.Conv2d(2 * width, n_classes, 1), nn.Conv2d(width, n_classes, 1)
        self.aux_full_size = aux_full_size

    def forward(self, x: torch.Tensor):
        e1 = self.enc1(x)
        e2 = self.enc2(nn.functional.max_pool2d(e1, 2))
        d2 = self.dec2(torch.cat([self.up2(self.mid(nn.functional.max_pool2d(e2, 2))), e2], 1))
        d1 = self.dec1(torch.cat([self.up1(d2), e1], 1))
        aux = self.aux(d2)
        if self.aux_full_size:
            aux = nn.functional.interpolate(aux, scale_factor=2.0, mode="bilinear")
        return aux, self.head(d1)


def torch_main(net, pixels):
    with torch.no_grad():
        return softmax(net(torch.from_numpy(pixels / np.float32(255)))[1].numpy())


def save_unet(tmp_path, **kwargs):
    net = trained_like(DeepSupervisedUNet(**kwargs))
    torch.save(net.state_dict(), tmp_path / "ds_unet.pt")
    factory = ["--factory", "test_export_outputs:DeepSupervisedUNet", "--input-range", "0-1"]
    if kwargs:
        factory += ["--factory-kwargs", '{"aux_full_size": true}']
    return net, tmp_path / "ds_unet.pt", factory


def test_torch_deep_supervision_tuple(tmp_path, data):
    net, checkpoint, factory = save_unet(tmp_path)
    store = tmp_path / "models"
    result = export(checkpoint, "ds_torch", data, store, *factory)
    assert result.exit_code == 0, result.output
    assert "kept the second of 2 outputs (index 1), the only one at the input size" in result.output
    pixels = sample_pixels(data)
    check_member(store / "ds_torch.onnx", pixels, torch_main(net, pixels), dynamic_hw=True)
    larger = np.kron(pixels[:2], np.ones((1, 1, 2, 2), np.float32))
    np.testing.assert_allclose(
        run_member(store / "ds_torch.onnx", larger), torch_main(net, larger), atol=1e-4
    )
    assert metadata(store / "ds_torch.onnx")["ens.source_output"] == "[1] of 2"
    check_predicts(tmp_path, store, "ds_torch", data)
    one_line_error(
        export(checkpoint, "aux", data, store, *factory, "--output", "0"),
        "--output [0]: the model's output [0] is at 1/2 of the input size while [1] is at it",
        "(--output 1)",
    )
    one_line_error(
        export(checkpoint, "aux", data, store, *factory, "--output", "aux"),
        "--output 'aux' is not one of the model's 2 outputs [[0] (8, 5, 16, 32), [1] (8, 5, 32, 64)]",
        "pass an index 0..1",
    )


def test_torch_full_size_aux_head_needs_output(tmp_path, data):
    net, checkpoint, factory = save_unet(tmp_path, aux_full_size=True)
    store = tmp_path / "models"
    one_line_error(
        export(checkpoint, "ds_torch", data, store, *factory),
        "the model returns 2 outputs [[0] (8, 5, 32, 64), [1] (8, 5, 32, 64)] (shapes (N, C, H, W)) and 2 of "
        "them are score maps at the input size 32x64", "(e.g. --output 1)",
    )  # fmt: skip
    result = export(checkpoint, "ds_torch", data, store, *factory, "--output", "-1")
    assert result.exit_code == 0, result.output
    assert "kept output [1], chosen by --output" in result.output
    pixels = sample_pixels(data)
    check_member(store / "ds_torch.onnx", pixels, torch_main(net, pixels), dynamic_hw=True)


def test_torch_dict_output_chosen_by_key(tmp_path, data):
    """torchvision-style {'aux', 'out'} keeps 'out' by default; --output aux takes the other entry."""
    net = trained_like(TinyNet(out="dict"))
    torch.save(net.state_dict(), tmp_path / "dict.pt")
    factory = [
        "--factory",
        "tiny_nets:TinyNet",
        "--factory-kwargs",
        '{"out": "dict"}',
        "--input-range",
        "0-1",
    ]
    result = export(tmp_path / "dict.pt", "aux", data, tmp_path, *factory, "--output", "aux")
    assert result.exit_code == 0, result.output
    assert "kept output 'aux', chosen by --output" in result.output
    pixels = sample_pixels(data)
    with torch.no_grad():
        expected = softmax(net(torch.from_numpy(pixels / np.float32(255)))["aux"].numpy())
    check_member(tmp_path / "aux.onnx", pixels, expected, dynamic_hw=True)
    assert metadata(tmp_path / "aux.onnx")["ens.source_output"] == "'aux' of 2"
    one_line_error(
        export(tmp_path / "dict.pt", "x", data, tmp_path, *factory, "--output", "1"),
        "--output '1' is not one of the model's 2 outputs ['aux' (8, 5, 32, 64), 'out' (8, 5, 32, 64)]",
        "pass 'aux', 'out'",
    )


# --- the choice itself, on plain arrays ----------------------------------------------------------------


def scores(*shape):
    return np.zeros(shape, np.float32)


def test_choice_rules():
    nchw = {"channels_last": False, "n": 2, "hw": (8, 16)}
    main, aux, features = scores(2, 5, 8, 16), scores(2, 5, 4, 8), scores(2, 32, 8, 16)
    # a full-size feature map has another channel count than the heads: the head is kept
    choice = choose_output([features, aux, main], **nchw)
    assert (choice.key, choice.label, choice.count) == (2, "[2]", 3)
    assert choice.note == "kept the third of 3 outputs (index 2), the only one at the input size"
    # torchvision's 'out' and transformers' 'logits' decide between full-size maps
    assert choose_output({"aux": main, "out": main}, **nchw).key == "out"
    assert choose_output({"logits": aux, "hidden_states": [aux, aux]}, **nchw).key == "logits"
    # integer outputs (labels) are never the member's scores
    assert choose_output([main, main.astype(np.int64)], **nchw).key == 0
    # a non-array entry is listed, not fatal
    with pytest.raises(Exception, match=r"'hidden' \(not an array\)"):
        choose_output({"a": main, "b": main, "hidden": [aux, main]}, **nchw)
    # Keras names label list items; a single named item is kept without a note
    keras_like = choose_output([scores(2, 8, 16, 3)], channels_last=True, n=2, hw=(8, 16), names=["seg"])
    assert (keras_like.key, keras_like.label, keras_like.note) == (0, "'seg'", "")
    assert choose_output(main, **nchw).key is None
