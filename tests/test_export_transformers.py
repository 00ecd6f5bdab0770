"""`ens export` of nets whose output is smaller than their input, and of Hugging Face transformers models:
a bare SegformerForSemanticSegmentation (logits at 1/4) from a save_pretrained folder and from a state_dict
(.pt or .safetensors) with `--factory transformers:...`, and a plain torch net at 1/2 resolution; each
member is checked with ONNX Runtime against the source's logits resized by torch (bilinear,
align_corners=False) and then softmaxed, as the libraries' own post-processing does."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import ens, one_line_error
from export_checks import assert_contract, check_predicts, images_npz, metadata, run_member, sample_pixels
from torch import nn
from torch.nn import functional

from exporters.outputs import choose_output
from exporters.upsample import reduction_factor, upsample_bilinear

HW = (32, 64)
SEGFORMER = {  # a tiny random SegFormer: 2 stages of one block, hidden sizes 8 and 16, logits at 1/4
    "num_channels": 1, "num_labels": 5, "num_encoder_blocks": 2, "depths": [1, 1], "sr_ratios": [2, 1],
    "hidden_sizes": [8, 16], "patch_sizes": [7, 3], "strides": [4, 2], "num_attention_heads": [1, 2],
    "mlp_ratios": [2, 2], "decoder_hidden_size": 16,
}  # fmt: skip
FACTORY = "transformers:SegformerForSemanticSegmentation"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return images_npz(tmp_path_factory.mktemp("data") / "images.npz", HW)


def export(source, name, data, store, *extra):
    return ens("export", source, "--name", name, "--data", data, "--out-dir", store, *extra)


def resized_probs(logits: torch.Tensor, hw) -> np.ndarray:
    """The libraries' post-processing: upsample the logits bilinearly, then the softmax."""
    up = functional.interpolate(logits, size=tuple(hw), mode="bilinear", align_corners=False)
    return up.softmax(dim=1).numpy()


def check_member(member, pixels, expected, factor):
    """Contract, parity <= 1e-4 against the resized source output, the factor and the size multiple."""
    assert_contract(member, pixels, dynamic_hw=True)
    np.testing.assert_allclose(run_member(member, pixels), expected, atol=1e-4)
    meta = metadata(member)
    assert float(meta["ens.parity_max_abs_err"]) <= 1e-4
    assert meta["ens.upsample_factor"] == str(factor) and meta["ens.size_multiple"] == str(factor)
    assert f"a bilinear resize x{factor} (align_corners=False) is folded in" in meta["ens.export_notes"]


# --- the resize itself ---------------------------------------------------------------------------------


def test_upsampling_matches_torch_interpolate():
    scores = np.random.default_rng(0).normal(size=(2, 3, 5, 7)).astype(np.float32)
    for factor in (1, 2, 3, 4):
        expected = functional.interpolate(
            torch.from_numpy(scores), scale_factor=factor, mode="bilinear", align_corners=False
        )
        np.testing.assert_allclose(upsample_bilinear(scores, factor), expected.numpy(), atol=1e-5)
    assert [reduction_factor(s, (64, 128)) for s in [(64, 128), (32, 64), (16, 32), (16, 16), (3, 6)]] == [
        1, 2, 4, None, None
    ]  # fmt: skip


def test_choice_prefers_full_size_then_the_largest_reduced_head():
    nchw = {"channels_last": False, "n": 2, "hw": (16, 32)}
    full, half, quarter = (np.zeros((2, 5, 16 // f, 32 // f), np.float32) for f in (1, 2, 4))
    assert choose_output([half, full], **nchw).key == 1
    choice = choose_output({"aux": quarter, "main": half}, **nchw)
    assert choice.key == "main" and choice.note.endswith("the only one at 1/2 of the input size, none at it")
    assert choose_output({"logits": quarter}, **nchw).key == "logits"  # a ModelOutput with logits only
    with pytest.raises(Exception, match=r"2 of them are score maps at 1/2 of the input size 16x32"):
        choose_output([half, half], **nchw)
    with pytest.raises(Exception, match=r"or smaller by one integer factor on both axes"):
        choose_output([np.zeros((2, 5, 5, 5), np.float32), np.zeros((2, 5, 6, 6), np.float32)], **nchw)


# --- a plain torch net at 1/2 resolution ----------------------------------------------------------------


class HalfNet(nn.Module):
    """Logits at 1/2 of the input size (a stride-2 stem and no final upsampling)."""

    def __init__(self, n_classes: int = 5) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, stride=2, padding=1)
        self.head = nn.Conv2d(8, n_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.stem(x / 255.0)))


def test_half_resolution_torch_net_gets_the_resize(tmp_path, data):
    torch.manual_seed(0)
    net = HalfNet().eval()
    torch.save(net.state_dict(), tmp_path / "half.pt")
    store = tmp_path / "models"
    result = export(
        tmp_path / "half.pt", "half", data, store, "--factory", "test_export_transformers:HalfNet"
    )
    assert result.exit_code == 0, result.output
    assert (
        "the source's output is 1/2 of the input size" in result.output
        and "before the softmax" in result.output
    )
    pixels = sample_pixels(data)
    with torch.no_grad():
        check_member(store / "half.onnx", pixels, resized_probs(net(torch.from_numpy(pixels)), HW), 2)
        larger = np.kron(pixels[:2], np.ones((1, 1, 2, 2), np.float32))  # dynamic H, W: resized there too
        expected = resized_probs(net(torch.from_numpy(larger)), larger.shape[2:])
    np.testing.assert_allclose(run_member(store / "half.onnx", larger), expected, atol=1e-4)
    listing = ens("members", "--models-dir", store)
    assert listing.exit_code == 0 and "output 1/2 resized" in " ".join(listing.output.split())
    check_predicts(tmp_path, store, "half", data)


# --- Hugging Face SegFormer -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def segformer(tmp_path_factory):
    """A random tiny SegFormer saved three ways: save_pretrained, a .safetensors state_dict and a .pt
    state_dict whose keys carry a wrapper's 'net.' prefix."""
    transformers = pytest.importorskip("transformers")
    safetensors_torch = pytest.importorskip("safetensors.torch")
    folder = tmp_path_factory.mktemp("segformer")
    torch.manual_seed(0)
    model = transformers.SegformerForSemanticSegmentation(transformers.SegformerConfig(**SEGFORMER)).eval()
    model.save_pretrained(folder / "pretrained")
    state = model.state_dict()
    safetensors_torch.save_file({k: v.contiguous() for k, v in state.items()}, folder / "seg.safetensors")
    torch.save({"state_dict": {f"net.{k}": v for k, v in state.items()}}, folder / "seg.pt")
    return model, folder


def segformer_probs(model, pixels):
    with torch.no_grad():
        return resized_probs(model(torch.from_numpy(pixels)).logits, pixels.shape[2:])


def test_segformer_folder_exports_without_trust(tmp_path, data, segformer):
    model, folder = segformer
    assert sorted(p.name for p in (folder / "pretrained").iterdir()) == ["config.json", "model.safetensors"]
    store = tmp_path / "models"
    result = export(folder / "pretrained", "segformer", data, store)
    assert result.exit_code == 0, result.output
    assert "transformers SegformerForSemanticSegmentation folder" in result.output
    check_member(
        store / "segformer.onnx", sample_pixels(data), segformer_probs(model, sample_pixels(data)), 4
    )
    meta = metadata(store / "segformer.onnx")
    assert "transformers" in json.loads(meta["ens.exporter_versions"])
    listing = ens("members", "--models-dir", store)
    assert listing.exit_code == 0 and "output 1/4 resized" in " ".join(listing.output.split())
    check_predicts(tmp_path, store, "segformer", data)


@pytest.mark.parametrize("source", ["seg.safetensors", "seg.pt"])
def test_segformer_state_dict_with_a_transformers_factory(tmp_path, data, segformer, source):
    model, folder = segformer
    store = tmp_path / "models"
    kwargs = json.dumps(SEGFORMER)
    result = export(folder / source, "seg", data, store, "--factory", FACTORY, "--factory-kwargs", kwargs)
    assert result.exit_code == 0, result.output
    if source == "seg.pt":
        assert "state_dict (under 'state_dict') (prefix 'net.' removed) + transformers:" in result.output
    pixels = sample_pixels(data)
    check_member(store / "seg.onnx", pixels, segformer_probs(model, pixels), 4)
    check_predicts(tmp_path, store, "seg", data)


def test_transformers_refusals(tmp_path, data, segformer):
    _, folder = segformer
    factory = ["--factory", FACTORY]
    source = folder / "seg.safetensors"
    one_line_error(
        export(source, "x", data, tmp_path, *factory, "--factory-kwargs", '{"num_label": 5}'),
        "builds its model from a SegformerConfig, which has no field 'num_label'", "num_labels",
    )  # fmt: skip
    smaller = json.dumps({**SEGFORMER, "hidden_sizes": [8, 8]})
    one_line_error(
        export(source, "x", data, tmp_path, *factory, "--factory-kwargs", smaller),
        "does not fit the network built by --factory", "shape mismatch", "--factory-kwargs",
    )  # fmt: skip
    wrapped = {f"net.{k}": v for k, v in segformer[0].segformer.state_dict().items()}
    torch.save(wrapped, tmp_path / "encoder.pt")
    kwargs = ["--factory-kwargs", json.dumps(SEGFORMER)]
    one_line_error(
        export(tmp_path / "encoder.pt", "x", data, tmp_path, *factory, *kwargs),
        "missing keys segformer.", "the state_dict's keys all start with 'net.'",
        "while the network's share no prefix",
    )  # fmt: skip
    custom = tmp_path / "custom"
    custom.mkdir()
    config = json.loads((folder / "pretrained" / "config.json").read_text())
    (custom / "config.json").write_text(json.dumps({**config, "auto_map": {"AutoModel": "mine.Net"}}))
    (custom / "model.safetensors").write_bytes((folder / "pretrained" / "model.safetensors").read_bytes())
    one_line_error(export(custom, "x", data, tmp_path, "--trust"), "declares custom model code", "auto_map")
    (custom / "config.json").write_text(json.dumps({**config, "architectures": ["MyOwnSegmenter"]}))
    one_line_error(
        export(custom, "x", data, tmp_path), "names architecture 'MyOwnSegmenter'", "does not define"
    )
    (custom / "model.safetensors").unlink()
    one_line_error(export(custom, "x", data, tmp_path), "has config.json but no model.safetensors")
    one_line_error(export(folder / "pretrained", "x", data, tmp_path, *factory), "drop --factory")
    assert not list(tmp_path.glob("*.onnx"))


@pytest.mark.slow  # Keras' export takes ~30 s here; test_export_outputs covers a Keras head at 1/2 too
def test_half_resolution_keras_net_resizes_its_probabilities(tmp_path, data):
    keras = pytest.importorskip("keras")
    inputs = keras.Input((*HW, 1))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(x)
    model = keras.Model(inputs, keras.layers.Conv2D(5, 1, activation="softmax")(x))
    model.save(tmp_path / "half.keras")
    store = tmp_path / "models"
    result = export(tmp_path / "half.keras", "khalf", data, store)
    assert result.exit_code == 0, result.output
    assert "the source emits probabilities; the source's output is 1/2 of the input size" in result.output
    pixels = sample_pixels(data)
    probs = keras.ops.convert_to_numpy(model(pixels.transpose(0, 2, 3, 1))).transpose(0, 3, 1, 2)
    expected = functional.interpolate(torch.from_numpy(probs), size=HW, mode="bilinear", align_corners=False)
    assert_contract(store / "khalf.onnx", pixels, dynamic_hw=False)
    np.testing.assert_allclose(run_member(store / "khalf.onnx", pixels), expected.numpy(), atol=1e-4)
    assert metadata(store / "khalf.onnx")["ens.upsample_factor"] == "2"
