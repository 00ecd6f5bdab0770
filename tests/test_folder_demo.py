"""The RGB folder demo end to end: RGB members exported from torch and Keras, then fit, predict,
check and score on folders of images of two sizes."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("keras")

from conftest import ens
from tiny_nets import TinyNet, keras_net, trained_like

from ensemble.data.folder import open_folder
from ensemble.demo.folder_demo import FolderDemoSpec, write_folder_demo
from ensemble.members.member import load_member
from ensemble.members.session import build_session


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("folder_demo") / "rgb"
    write_folder_demo(root, FolderDemoSpec(n_train=64, n_test=24))
    return root


def test_folder_demo_has_two_sizes_rgb_images_and_paired_masks(demo):
    train = open_folder(demo / "train" / "images", demo / "train" / "masks")
    test = open_folder(demo / "test" / "images", demo / "test" / "masks")
    assert (train.n_images, test.n_images) == (64, 24)
    assert sorted(g.shape for g in train.groups()) == [(48, 80), (64, 96)]
    assert train.channel_counts == {3} and train.stems[0] == "mars_train_0000"
    sizes = train.sizes.tolist()
    assert sizes[:4] != sorted(sizes[:4]) or len({tuple(s) for s in sizes[:8]}) == 2  # sizes interleave


def test_rgb_members_from_torch_and_keras_fit_predict_check_score(demo, tmp_path):
    train, test = demo / "train", demo / "test"
    store = tmp_path / "models"
    labelled = ("--data", train / "images", "--masks", train / "masks")
    net = trained_like(TinyNet(in_channels=3), seed=1)
    torch.save(net.state_dict(), tmp_path / "net.pt")
    result = ens(
        "export", tmp_path / "net.pt", "--name", "torch_rgb", "--factory", "tiny_nets:TinyNet",
        "--factory-kwargs", '{"in_channels": 3}', "--channels", 3, "--input-range", "0-1",
        "--mean", "0.5,0.45,0.4", "--std", "0.25,0.25,0.2", "--channel-order", "bgr",
        *labelled, "--out-dir", store, "--force",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    keras_net(rescaling=False, softmax=True, channels=3).save(tmp_path / "net.keras")
    result = ens("export", tmp_path / "net.keras", "--name", "keras_rgb", "--input-range", "0-1",
                 *labelled, "--out-dir", store, "--force")  # fmt: skip
    assert result.exit_code == 0, result.output
    for name in ("torch_rgb", "keras_rgb"):
        member = load_member(store / f"{name}.onnx")
        assert member.channels == 3 and member.info.val_miou is not None
    assert "channels reversed to BGR" in load_member(store / "torch_rgb.onnx").info.preprocessing
    pixels = np.random.default_rng(0).integers(0, 256, (2, 3, 16, 24)).astype(np.float32)
    bgr = pixels[:, ::-1] / 255.0
    mean, std = np.array([0.5, 0.45, 0.4]), np.array([0.25, 0.25, 0.2])
    net_input = (bgr - mean[None, :, None, None]) / std[None, :, None, None]
    with torch.no_grad():
        expected = torch.softmax(net(torch.from_numpy(net_input.astype(np.float32))), dim=1).numpy()
    member = build_session(load_member(store / "torch_rgb.onnx"), "cpu")
    np.testing.assert_allclose(member.run(pixels), expected, atol=1e-5)  # order and statistics folded in

    cache = ("--cache-dir", tmp_path / "cache")
    result = ens("fit", "--models-dir", store, *labelled, "--folds", 2, *cache)
    assert result.exit_code == 0, result.output
    fitted = json.loads((store / "ensemble.json").read_text())
    assert fitted["members"] == ["keras_rgb", "torch_rgb"]

    out = tmp_path / "sub.csv"
    result = ens("predict", "--models-dir", store, "--data", test / "images", "--out", out)
    assert result.exit_code == 0, result.output
    manifest = json.loads(out.with_name("sub.manifest.json").read_text())["data"]
    assert manifest["image_shape"] is None and sorted(manifest["image_sizes"]) == ["48x80", "64x96"]

    result = ens("check", out, "--data", test / "images")
    assert result.exit_code == 0 and "OK: rle, 24 images" in result.output, result.output
    result = ens("score", out, "--truth", test / "masks", "--json", tmp_path / "score.json")
    assert result.exit_code == 0, result.output
    csv_score = json.loads((tmp_path / "score.json").read_text())["miou"]

    result = ens("score", "--truth", test / "masks", "--data", test / "images", "--models-dir", store,
                 *cache, "--json", tmp_path / "ablation.json")  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "ablation.json").read_text())["rows"]
    assert abs(rows[-1]["miou"] - csv_score) < 0.005  # the last row is what predict wrote (float16 cache)


def test_rgb_export_options_are_checked_in_one_line(demo, tmp_path):
    from conftest import assert_unchanged, one_line_error, snapshot

    torch.save(TinyNet(in_channels=3).state_dict(), tmp_path / "net.pt")
    base = ("export", tmp_path / "net.pt", "--name", "n", "--factory", "tiny_nets:TinyNet",
            "--factory-kwargs", '{"in_channels": 3}', "--out-dir", tmp_path / "models")  # fmt: skip
    before = snapshot(tmp_path)
    cases = [
        (
            ["--channels", 3, "--input-range", "0-1", "--mean", "0.5,0.4", "--std", "0.2"],
            ["--mean lists 2 values"],
        ),
        (["--channels", 1, "--channel-order", "bgr"], ["--channel-order bgr needs an RGB net"]),
        (["--channels", 2], ["--channels 2 is not 1 (grayscale) or 3 (RGB)"]),
        (["--channels", 3, "--input-range", "0-1", "--mean", "0.5,x,0.3", "--std", "0.2"], ["--mean 'x'"]),
    ]
    for extra, fragments in cases:
        one_line_error(ens(*base, *extra), *fragments)
    assert_unchanged(before, tmp_path)
