"""Nets as other libraries build them: the size multiple a net needs is measured on the exported
member, an RGB-stem net joins grayscale members with `--gray-to-rgb` built into the member, and a
channel mismatch is one line naming --channels. segmentation_models_pytorch and torchvision nets are
used when installed (`pip install 'ens[libraries]'`); plain torch nets of the same shapes always."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from conftest import ens, one_line_error
from export_checks import images_npz, run_member, sample_pixels, softmax
from tiny_nets import TinyNet, trained_like
from torch import nn

from ensemble.inference.runner import member_probs
from ensemble.inference.tta import IDENTITY
from ensemble.members.member import load_member
from ensemble.members.padding import padded_size
from ensemble.members.session import build_session

SKIPNET = ("--factory", "test_export_libraries:SkipNet", "--input-range", "0-1")
IMAGENET = ["--input-range", "0-1", "--mean", "0.485,0.456,0.406", "--std", "0.229,0.224,0.225"]


class SkipNet(nn.Module):
    """Three 2x poolings and additive skips at each scale, as in FPN/U-Net decoders: runs only on H and
    W divisible by 8 (an odd multiple of 4 breaks the skip additions)."""

    def __init__(self, in_channels: int = 1, n_classes: int = 5, width: int = 6) -> None:
        super().__init__()
        self.stem = nn.Conv2d(in_channels, width, 3, padding=1)
        self.downs = nn.ModuleList(nn.Conv2d(width, width, 3, padding=1) for _ in range(3))
        self.head = nn.Conv2d(width, n_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips, x = [], torch.relu(self.stem(x))
        for down in self.downs:
            skips.append(x)
            x = torch.relu(down(nn.functional.max_pool2d(x, 2)))
        for skip in reversed(skips):
            x = nn.functional.interpolate(x, scale_factor=2.0, mode="nearest") + skip
        return self.head(x)


@pytest.fixture
def data(tmp_path):
    return images_npz(tmp_path / "data.npz", (64, 128))


def export(source, name, store, data, *extra):
    return ens("export", source, "--name", name, "--data", data, "--out-dir", store, *extra)


def predict(store, data, out):
    """`ens predict` over the store; returns the CSV's rows."""
    result = ens("predict", "--models-dir", store, "--data", data, "--out", out)
    assert result.exit_code == 0, result.output
    return out.read_text().splitlines()


def test_size_multiple_is_measured_recorded_shown_and_used(tmp_path, data):
    torch.save(trained_like(SkipNet()).state_dict(), tmp_path / "skip.pt")
    store = tmp_path / "models"
    result = export(tmp_path / "skip.pt", "skip", store, data, *SKIPNET)
    assert result.exit_code == 0, result.output
    assert "padded to multiples of 8" in result.output
    assert "in multiples of 8 (measured; it does not run at 65x129, 66x130, 68x132)" in result.output
    member = load_member(store / "skip.onnx")
    assert member.info.size_multiple == 8 and member.info.input_hw == (None, None)
    assert "(x8)" in ens("members", "--models-dir", store).output
    torch.save(trained_like(TinyNet()).state_dict(), tmp_path / "tiny.pt")
    assert export(tmp_path / "tiny.pt", "tiny", store, data, "--factory", "tiny_nets:TinyNet").exit_code == 0
    assert load_member(store / "tiny.onnx").info.size_multiple == 2  # one 2x pooling

    odd = images_npz(tmp_path / "odd.npz", (36, 68))  # multiples of 4, not of 8: padded to 40x72
    rows = predict(store, odd, tmp_path / "odd.csv")
    assert len(rows) == 1 + 10 * 4  # a row per image and non-background class


def test_size_multiple_option_is_checked_against_the_measured_one(tmp_path, data):
    torch.save(SkipNet().state_dict(), tmp_path / "skip.pt")
    store, factory = tmp_path / "models", SKIPNET
    result = export(tmp_path / "skip.pt", "skip", store, data, *factory, "--size-multiple", 4)
    one_line_error(result, "--size-multiple 4 is too small", "multiples of 8", "--size-multiple 8")
    assert not store.exists() or not list(store.iterdir())
    result = export(tmp_path / "skip.pt", "skip", store, data, *factory, "--size-multiple", 16)
    assert result.exit_code == 0, result.output
    assert load_member(store / "skip.onnx").info.size_multiple == 16


def test_rgb_stem_net_with_gray_to_rgb_joins_a_grayscale_member(tmp_path, data):
    rgb = trained_like(TinyNet(in_channels=3), seed=1)
    torch.save(rgb.state_dict(), tmp_path / "rgb.pt")
    torch.save(trained_like(TinyNet()).state_dict(), tmp_path / "gray.pt")
    store = tmp_path / "models"
    rgb_args = ("--factory", "tiny_nets:TinyNet", "--factory-kwargs", '{"in_channels": 3}')
    result = export(tmp_path / "rgb.pt", "rgb", store, data, *rgb_args, "--gray-to-rgb", *IMAGENET)
    assert result.exit_code == 0, result.output
    assert "gray copied to RGB inside" in result.output
    member = load_member(store / "rgb.onnx")
    assert member.channels == 1 and member.info.preprocessing.startswith("gray copied to R, G, B; ")
    assert member.info.parity_max_abs_err <= 1e-4

    pixels = sample_pixels(data)
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    net_input = (np.repeat(pixels, 3, axis=1) / 255.0 - mean[:, None, None]) / std[:, None, None]
    with torch.no_grad():
        expected = softmax(rgb(torch.from_numpy(net_input.astype(np.float32))).numpy())
    np.testing.assert_allclose(run_member(store / "rgb.onnx", pixels), expected, atol=1e-5)

    assert export(tmp_path / "gray.pt", "gray", store, data, "--factory", "tiny_nets:TinyNet").exit_code == 0
    rows = predict(store, data, tmp_path / "sub.csv")
    manifest = json.loads((tmp_path / "sub.manifest.json").read_text())
    assert len(rows) == 1 + 10 * 4 and sorted(m["name"] for m in manifest["members"]) == ["gray", "rgb"]


@pytest.mark.parametrize(
    ("in_channels", "extra", "fragments"),
    [
        (3, [], ["the net takes 3 input channels (RGB)", "--channels 3", "--gray-to-rgb"]),
        (1, ["--gray-to-rgb"], ["the net takes 1 input channel (grayscale)", "--channels", "--gray-to-rgb"]),
        (
            1,
            ["--channels", 3],
            ["the net takes 1 input channel (grayscale)", "drop --channels 3", "--channels 1"],
        ),
        (3, ["--channels", 1, "--gray-to-rgb"], ["--gray-to-rgb", "--channels 1", "pass --channels 3"]),
    ],
)
def test_channel_mismatch_is_one_line_naming_channels(tmp_path, data, in_channels, extra, fragments):
    torch.save(TinyNet(in_channels=in_channels).state_dict(), tmp_path / "net.pt")
    kwargs = json.dumps({"in_channels": in_channels})
    result = export(tmp_path / "net.pt", "net", tmp_path / "models", data,
                    "--factory", "tiny_nets:TinyNet", "--factory-kwargs", kwargs, *extra)  # fmt: skip
    one_line_error(result, *fragments)


def library(name: str):
    """Import a model library, or skip: not installed, or installed but not importable beside this torch
    (e.g. a torchvision built for another torch, which smp and timm import too)."""
    try:
        return pytest.importorskip(name)
    except pytest.skip.Exception:
        raise
    except Exception as exc:  # the library's own import failed
        pytest.skip(f"{name} is installed but cannot be imported ({type(exc).__name__}: {str(exc)[:80]})")


@pytest.mark.parametrize(
    ("arch", "multiple"),
    [("FPN", 32), pytest.param("Unet", 1, marks=pytest.mark.slow)],  # smp's Unet resizes to its skips
)
def test_smp_net_records_its_size_multiple_and_predicts_at_72x136(tmp_path, data, arch, multiple):
    smp = library("segmentation_models_pytorch")
    kwargs = {"encoder_name": "resnet18", "encoder_weights": None, "in_channels": 1, "classes": 5}
    kwargs.update(
        {"decoder_pyramid_channels": 32, "decoder_segmentation_channels": 32}
        if arch == "FPN"
        else {"decoder_channels": [32, 16, 16, 8, 8]}
    )
    net = getattr(smp, arch)(**kwargs).eval()
    torch.save(net.state_dict(), tmp_path / "net.pt")
    store = tmp_path / "models"
    factory = ("--factory", f"segmentation_models_pytorch:{arch}", "--factory-kwargs", json.dumps(kwargs))
    gray_stats = ("--input-range", "0-1", "--mean", 0.449, "--std", 0.226)
    result = export(tmp_path / "net.pt", "smp", store, data, *factory, *gray_stats)
    assert result.exit_code == 0, result.output
    member = load_member(store / "smp.onnx")
    assert member.info.size_multiple == multiple and member.info.parity_max_abs_err <= 1e-4
    assert (f"(x{multiple})" in ens("members", "--models-dir", store).output) == (multiple > 1)

    odd = images_npz(tmp_path / "odd.npz", (72, 136), n_test=3)  # the size ONNX Runtime refused unpadded
    pixels = sample_pixels(odd, 3)
    height, width = padded_size(member, (72, 136))  # 96x160 for FPN
    padded = np.pad(pixels, ((0, 0), (0, 0), (0, height - 72), (0, width - 136)), mode="reflect")
    with torch.no_grad():
        logits = net(torch.from_numpy(((padded / 255.0 - 0.449) / 0.226).astype(np.float32))).numpy()
    session = build_session(member, "cpu")
    got = member_probs(session, pixels, (IDENTITY,))
    np.testing.assert_allclose(got, softmax(logits)[:, :, :72, :136], atol=1e-4)
    assert len(predict(store, odd, tmp_path / "sub.csv")) == 1 + 3 * 4


def test_torchvision_lraspp_with_gray_to_rgb_joins_a_grayscale_member(tmp_path, data):
    segmentation = library("torchvision.models.segmentation")
    kwargs = {"weights": None, "weights_backbone": None, "num_classes": 5}
    net = segmentation.lraspp_mobilenet_v3_large(**kwargs).eval()
    torch.save(net.state_dict(), tmp_path / "lraspp.pt")
    store = tmp_path / "models"
    source = ("--factory", "torchvision.models.segmentation:lraspp_mobilenet_v3_large",
              "--factory-kwargs", json.dumps(kwargs))  # fmt: skip
    result = export(tmp_path / "lraspp.pt", "lraspp", store, data, *source)  # RGB net, no --channels 3
    one_line_error(result, "the net takes 3 input channels (RGB)", "--channels 3", "--gray-to-rgb")
    result = export(tmp_path / "lraspp.pt", "lraspp", store, data, *source, *IMAGENET)
    one_line_error(result, "--mean lists 3 values but the net takes 1", "--channels 3", "--gray-to-rgb")
    source += tuple(IMAGENET)
    result = export(tmp_path / "lraspp.pt", "lraspp", store, data, *source, "--gray-to-rgb")
    assert result.exit_code == 0, result.output
    member = load_member(store / "lraspp.onnx")
    assert member.channels == 1 and member.info.parity_max_abs_err <= 1e-4

    pixels = sample_pixels(data, 2)
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    net_input = (np.repeat(pixels, 3, axis=1) / 255.0 - mean[:, None, None]) / std[:, None, None]
    with torch.no_grad():
        expected = softmax(net(torch.from_numpy(net_input.astype(np.float32)))["out"].numpy())
    np.testing.assert_allclose(run_member(store / "lraspp.onnx", pixels), expected, atol=1e-4)

    torch.save(trained_like(TinyNet()).state_dict(), tmp_path / "gray.pt")
    assert export(tmp_path / "gray.pt", "gray", store, data, "--factory", "tiny_nets:TinyNet").exit_code == 0
    rows = predict(store, data, tmp_path / "sub.csv")
    manifest = json.loads((tmp_path / "sub.manifest.json").read_text())
    assert len(rows) == 1 + 10 * 4 and sorted(m["name"] for m in manifest["members"]) == ["gray", "lraspp"]
