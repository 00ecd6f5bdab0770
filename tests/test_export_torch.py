"""`ens export` of PyTorch sources, checked with ONNX Runtime alone against independently computed
probabilities: state_dict + factory, TorchScript, torch.export, pickled models, MONAI's UNet."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import ens, one_line_error
from export_checks import AN2DL, assert_contract, images_npz, metadata, run_member, sample_pixels, softmax
from tiny_nets import BatchMixingNet, ErfcxNet, TinyNet, trained_like

from exporters import ExportRequest, Normalisation, export_member

UNET = {
    "spatial_dims": 2,
    "in_channels": 1,
    "out_channels": 5,
    "channels": [16, 32, 64, 128],
    "strides": [2, 2, 2],
}


@pytest.fixture
def data(tmp_path):
    return images_npz(tmp_path / "tiny.npz", (32, 48))


def torch_probs(net, pixels, scale=1.0):
    """The source's own output for raw pixels / scale, as numpy (tensor, tuple or dict)."""
    with torch.no_grad():
        out = net(torch.from_numpy(pixels / np.float32(scale)))
    if isinstance(out, dict):
        return {key: value.numpy() for key, value in out.items()}
    return [value.numpy() for value in out] if isinstance(out, tuple) else out.numpy()


def test_state_dict_with_factory_and_scale(tmp_path, data):
    net = trained_like(TinyNet())
    torch.save({"epoch": 7, "state_dict": net.state_dict()}, tmp_path / "tiny.pth")
    store = tmp_path / "models"
    result = ens("export", tmp_path / "tiny.pth", "--name", "tiny", "--factory", "tiny_nets:TinyNet",
                 "--input-range", "0-1", "--data", data, "--out-dir", store, "--val-miou", 0.5)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "tiny.onnx" in result.output and "parity max abs error" in result.output
    member = store / "tiny.onnx"
    assert sorted(p.name for p in store.iterdir()) == ["tiny.onnx"]
    pixels = sample_pixels(data)
    assert_contract(member, pixels)
    expected = softmax(torch_probs(net, pixels, 255.0))
    np.testing.assert_allclose(run_member(member, pixels), expected, atol=1e-5)
    meta = metadata(member)
    assert meta["ens.preprocessing"] == "x/255 (input range 0-1; x = raw pixel 0..255)"
    assert meta["ens.source_framework"] == "torch"
    assert json.loads(meta["ens.class_names"]) == AN2DL
    assert float(meta["ens.parity_max_abs_err"]) < 1e-4 and float(meta["ens.val_miou"]) == 0.5
    assert "softmax appended" in meta["ens.export_notes"] and "'state_dict'" in meta["ens.export_notes"]
    assert meta["ens.parity_inputs"] == "8 test images of tiny.npz"
    assert {"torch", "onnx", "onnxruntime"} <= set(json.loads(meta["ens.exporter_versions"]))


@pytest.mark.parametrize("softmax_inside", [False, True])
def test_logits_or_probabilities_are_detected_from_outputs(tmp_path, data, softmax_inside):
    net = trained_like(TinyNet(softmax=softmax_inside, n_classes=3))
    torch.save(net.state_dict(), tmp_path / "net.pt")
    kwargs = {"softmax": softmax_inside, "n_classes": 3}
    request = ExportRequest(
        tmp_path / "net.pt",
        "net",
        factory="tiny_nets:tiny_net",
        factory_kwargs=kwargs,
        data=data,
        out_dir=tmp_path,
    )
    result = export_member(request)
    pixels = sample_pixels(data)
    scores = torch_probs(net, pixels)
    expected = scores if softmax_inside else softmax(scores)
    np.testing.assert_allclose(run_member(result.member.path, pixels), expected, atol=1e-5)
    assert_contract(result.member.path, pixels, n_classes=3)
    assert result.member.info.class_names == ("class_0", "class_1", "class_2")
    assert ("softmax appended" in " ".join(result.notes)) is not softmax_inside


def test_batch_norm_is_exported_in_eval_mode(tmp_path, data):
    net = trained_like(TinyNet(batch_norm=True))
    with torch.no_grad():
        net.encode[1].running_mean.fill_(3.0)
        net.encode[1].running_var.fill_(4.0)
    torch.save(net.state_dict(), tmp_path / "bn.pt")
    request = ExportRequest(
        tmp_path / "bn.pt", "bn", factory="tiny_nets:tiny_net", factory_kwargs={"batch_norm": True},
        data=data, out_dir=tmp_path,
    )  # fmt: skip
    member = export_member(request).member.path
    pixels = sample_pixels(data)
    np.testing.assert_allclose(
        run_member(member, pixels[:1]), softmax(torch_probs(net, pixels[:1])), atol=1e-4
    )
    assert_contract(member, pixels)


@pytest.mark.parametrize("out", ["tensor", "tuple"])
def test_torchscript_is_detected_and_exported(tmp_path, data, out):
    net = trained_like(TinyNet(softmax=True, out=out))
    torch.jit.save(torch.jit.trace(net, torch.rand(2, 1, 32, 48)), tmp_path / "scripted.pt")
    args = ["export", tmp_path / "scripted.pt", "--name", "ts", "--data", data, "--out-dir", tmp_path,
            "--input-range", "0-1"]  # fmt: skip
    one_line_error(ens(*args), "is a TorchScript archive", "--trust")
    result = ens(*args, "--trust")
    assert result.exit_code == 0, result.output
    pixels = sample_pixels(data)
    assert_contract(tmp_path / "ts.onnx", pixels)
    expected = torch_probs(net, pixels, 255.0)
    expected = expected[0] if out == "tuple" else expected
    np.testing.assert_allclose(run_member(tmp_path / "ts.onnx", pixels), expected, atol=1e-5)
    notes = metadata(tmp_path / "ts.onnx")["ens.export_notes"]
    assert "TorchScript" in notes and ("kept the first of 2 outputs" in notes) is (out == "tuple")


def test_torch_export_program_keeps_first_output(tmp_path, data):
    net = trained_like(TinyNet(out="tuple"))
    program = torch.export.export(
        net, (torch.rand(2, 1, 32, 48),), dynamic_shapes=({0: torch.export.Dim("N")},)
    )
    torch.export.save(program, tmp_path / "net.pt2")
    scale = Normalisation("0-1")
    result = export_member(
        ExportRequest(
            tmp_path / "net.pt2", "ep", data=data, out_dir=tmp_path, normalisation=scale, trust=True
        )
    )
    pixels = sample_pixels(data)
    assert_contract(result.member.path, pixels, dynamic_hw=False)  # the program fixed H and W
    expected = softmax(torch_probs(net, pixels, 255.0)[0])
    np.testing.assert_allclose(run_member(result.member.path, pixels), expected, atol=1e-5)
    assert "kept the first of 2 outputs (index 0), the only one at the input size" in result.notes


def test_pickled_model_needs_trust_and_dict_output_uses_out(tmp_path, data):
    net = trained_like(TinyNet(out="dict", softmax=True))
    torch.save(net, tmp_path / "full.pt")
    refused = ens("export", tmp_path / "full.pt", "--name", "full", "--data", data, "--out-dir", tmp_path)
    one_line_error(refused, "pickled Python objects that import tiny_nets.TinyNet", "--trust")
    result = ens(
        "export", tmp_path / "full.pt", "--name", "full", "--data", data, "--out-dir", tmp_path, "--trust"
    )
    assert result.exit_code == 0, result.output
    pixels = sample_pixels(data)
    np.testing.assert_allclose(
        run_member(tmp_path / "full.onnx", pixels), torch_probs(net, pixels)["out"], atol=1e-5
    )
    assert "kept output 'out'" in metadata(tmp_path / "full.onnx")["ens.export_notes"]


def test_monai_unet_from_state_dict(tmp_path, data):
    from monai.networks.nets import UNet

    net = UNet(**UNET).eval()
    torch.save(net.state_dict(), tmp_path / "unet.pt")
    result = ens("export", tmp_path / "unet.pt", "--name", "unet", "--factory", "monai.networks.nets:UNet",
                 "--factory-kwargs", json.dumps(UNET), "--mean", 127.5, "--std", 64, "--data", data,
                 "--out-dir", tmp_path)  # fmt: skip
    assert result.exit_code == 0, result.output
    pixels = sample_pixels(data)
    assert_contract(tmp_path / "unet.onnx", pixels)
    expected = softmax(torch_probs(net, (pixels - 127.5) / 64))
    np.testing.assert_allclose(run_member(tmp_path / "unet.onnx", pixels), expected, atol=1e-5)
    larger = np.kron(pixels[:2], np.ones((1, 1, 2, 2), np.float32))  # H, W are dynamic: 64x96 works too
    np.testing.assert_allclose(
        run_member(tmp_path / "unet.onnx", larger),
        softmax(torch_probs(net, (larger - 127.5) / 64)),
        atol=1e-5,
    )
    preprocessing = "(x-127.5)/64 (input range 0-255, mean 127.5, std 64; x = raw pixel 0..255)"
    assert metadata(tmp_path / "unet.onnx")["ens.preprocessing"] == preprocessing


def test_dynamo_exporter_is_the_fallback(tmp_path, data):
    net = trained_like(ErfcxNet())
    torch.save(net.state_dict(), tmp_path / "erfcx.pt")
    request = ExportRequest(tmp_path / "erfcx.pt", "erfcx", factory="tiny_nets:ErfcxNet", data=data,
                            normalisation=Normalisation("0-1"), out_dir=tmp_path)  # fmt: skip
    result = export_member(request)
    pixels = sample_pixels(data)
    assert_contract(result.member.path, pixels)
    expected = softmax(torch_probs(net, pixels, 255.0))
    np.testing.assert_allclose(run_member(result.member.path, pixels), expected, atol=1e-5)
    assert any(note.startswith("ONNX by the dynamo exporter") for note in result.notes)


def test_random_fallback_when_default_data_is_absent(tmp_path):
    torch.save(trained_like(TinyNet()).state_dict(), tmp_path / "net.pt")
    request = ExportRequest(tmp_path / "net.pt", "net", factory="tiny_nets:TinyNet", out_dir=tmp_path)
    result = export_member(request, default_data=tmp_path / "absent.npz")
    origin = metadata(result.member.path)["ens.parity_inputs"]
    assert origin.startswith("8 seeded random images") and "absent.npz absent" in origin
    assert result.member.info.parity_max_abs_err < 1e-4


@pytest.fixture
def checkpoint(tmp_path):
    torch.save(trained_like(TinyNet()).state_dict(), tmp_path / "net.pt")
    return tmp_path / "net.pt"


@pytest.mark.parametrize(
    ("extra", "fragments"),
    [
        (["--factory", "nope.mod:fn"], ["--factory 'nope.mod:fn'", "cannot import module 'nope'"]),
        (["--factory", "tiny_nets:missing"], ["has no attribute 'missing'", "TinyNet"]),
        (["--factory", "zoo.x:missing"], ["cannot import module 'zoo.x'"]),
        (["--factory", "tiny_nets:TinyNet", "--factory-kwargs", "{width: 4}"], ["is not valid JSON"]),
        (["--factory", "tiny_nets:TinyNet", "--factory-kwargs", "[4]"], ["is a JSON list"]),
        (
            ["--factory", "tiny_nets:TinyNet", "--factory-kwargs", '{"width": 4}'],
            ["does not fit", "shape mismatch encode.weight (8, 1, 3, 3) vs (4, 1, 3, 3)"],
        ),
        (
            [
                "--factory",
                "torch.nn:Conv2d",
                "--factory-kwargs",
                '{"in_channels": 1, "out_channels": 5, "kernel_size": 3}',
            ],
            ["missing keys weight, bias; unexpected keys encode.weight, encode.bias, head.weight, head.bias"],
        ),
        (["--factory", "torch.nn:Identity"], ["unexpected keys encode.weight"]),
        ([], ["is a state_dict of 4 tensors", "pass --factory"]),
        (["--factory", "tiny_nets:TinyNet", "--mean", "3"], ["--mean was given alone"]),
    ],
)
def test_one_line_errors(checkpoint, data, extra, fragments):
    result = ens("export", checkpoint, "--name", "x", "--data", data, "--out-dir", checkpoint.parent, *extra)
    one_line_error(result, *fragments)


def test_missing_and_garbage_files(tmp_path):
    one_line_error(
        ens("export", tmp_path / "nope.pt", "--name", "x"), "'" + str(tmp_path / "nope.pt"), "does not exist"
    )
    (tmp_path / "junk.pt").write_bytes(bytes(range(256)) * 4)
    one_line_error(
        ens("export", tmp_path / "junk.pt", "--name", "x"), "cannot load", "as a PyTorch checkpoint"
    )
    (tmp_path / "junk.pth").write_bytes(b"PK\x03\x04 not a zip")
    one_line_error(ens("export", tmp_path / "junk.pth", "--name", "x"), "not a ZIP archive")
    (tmp_path / "model.xyz").write_bytes(b"")
    one_line_error(ens("export", tmp_path / "model.xyz", "--name", "x"), "cannot tell what", "'.xyz'")


def test_missing_torch_gives_an_install_hint(tmp_path, checkpoint, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # what `import torch` meets without torch
    monkeypatch.delitem(sys.modules, "exporters.torch_export")
    result = ens("export", checkpoint, "--name", "x", "--factory", "tiny_nets:TinyNet", "--out-dir", tmp_path)
    one_line_error(result, "needs torch, which is not installed", "pip install 'ens[torch]'")


def test_store_refuses_other_classes_and_overwrites(tmp_path, data):
    for n_classes in (5, 3):
        torch.save(trained_like(TinyNet(n_classes=n_classes)).state_dict(), tmp_path / f"c{n_classes}.pt")
    base = [
        "--input-range",
        "0-1",
        "--data",
        data,
        "--out-dir",
        tmp_path / "models",
        "--factory",
        "tiny_nets:TinyNet",
    ]
    assert ens("export", tmp_path / "c5.pt", "--name", "five", *base).exit_code == 0
    three = ["export", tmp_path / "c3.pt", "--name", "three", *base, "--factory-kwargs", '{"n_classes": 3}']
    over = ens(*three[:3], "five", *three[4:])
    one_line_error(over, "already exists, exported from 'c5.pt'", "different file than 'c3.pt'", "--force")
    one_line_error(
        ens(*three), "predicts 3 classes ['class_0', 'class_1', 'class_2']", "member 'five'", "predicts 5"
    )
    assert not (tmp_path / "models" / "three.onnx").exists()
    assert ens(*three, "--force").exit_code == 0
    assert ens("export", tmp_path / "c5.pt", "--name", "five", *base, "--force").exit_code == 0


def test_parity_failure_for_a_batch_dependent_net(tmp_path, data):
    torch.save(trained_like(BatchMixingNet()).state_dict(), tmp_path / "mix.pt")
    result = ens("export", tmp_path / "mix.pt", "--name", "mix", "--factory", "tiny_nets:BatchMixingNet",
                 "--input-range", "0-1", "--data", data, "--out-dir", tmp_path)  # fmt: skip
    one_line_error(result, "parity check failed: ONNX Runtime differs from torch by", "batches of 1, 3 and 4")
    assert not (tmp_path / "mix.onnx").exists()


def test_tolerance_zero_rejects_float_rounding_that_default_accepts(tmp_path, data, checkpoint):
    args = ["export", checkpoint, "--name", "x", "--factory", "tiny_nets:TinyNet", "--input-range", "0-1",
            "--data", data, "--out-dir", tmp_path / "m"]  # fmt: skip
    result = ens(*args, "--tolerance", 0)
    if result.exit_code == 0:  # bit-identical on this machine: nothing to reject
        pytest.skip("ONNX Runtime matched torch exactly")
    one_line_error(result, "tolerance 0")
    assert ens(*args).exit_code == 0
