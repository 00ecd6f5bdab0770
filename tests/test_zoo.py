"""zoo: architectures build for non-square input, trainers save reloadable checkpoints with a
sidecar, background pixels carry no loss, the split keeps validation images out, `ens train` errors."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from conftest import ens, write_npz

from ensemble.data.split import SplitSpec
from zoo.batches import background_free_weights, load_training_data, pixel_weights
from zoo.registry import ARCHS, get_arch, resolve_factory
from zoo.training import TrainConfig, sidecar_path, train

torch = pytest.importorskip("torch")
keras = pytest.importorskip("keras")

N_CLASSES = 5


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """16 labelled 32x64 images whose class is readable from brightness; images 11..15 share one
    mask (outliers), and 4 test images."""
    rng = np.random.default_rng(0)
    masks = np.repeat(np.repeat(rng.integers(0, N_CLASSES, (16, 4, 8)), 8, axis=1), 8, axis=2)
    masks[11:] = masks[11]
    images = np.clip(masks * 50 + rng.normal(0, 20, masks.shape), 0, 255).round()
    path = tmp_path_factory.mktemp("zoo") / "tiny.npz"
    return write_npz(path, images, masks, images[:4])


def tiny_config(tmp_path, data, framework="torch", arch="unet", **changes):
    suffix = ".keras" if framework == "keras" else ".pt"
    options = dict(epochs=1, width=4, depth=2, batch_size=4, split=SplitSpec(0, 0.25), threads=1)
    return TrainConfig(framework, arch, data, tmp_path / f"{arch}{suffix}", **{**options, **changes})


def model_outputs(arch, model, images):
    """(N, C, H, W) outputs of a framework model on raw uint8 images, preprocessing applied."""
    x = arch.preprocessing.apply(images)
    if arch.framework == "torch":
        model.eval()
        with torch.inference_mode():
            return model(torch.from_numpy(x[:, None])).numpy()
    return keras.ops.convert_to_numpy(model(x[..., None], training=False)).transpose(0, 3, 1, 2)


@pytest.mark.parametrize("key", sorted(ARCHS), ids="/".join)
def test_arch_builds_for_non_square_input_and_fits_the_size_budget(key):
    arch = get_arch(*key)
    model = arch.build(n_classes=N_CLASSES, width=4, depth=2)
    images = np.random.default_rng(1).integers(0, 256, (2, 32, 64), dtype=np.uint8)
    assert model_outputs(arch, model, images).shape == (2, N_CLASSES, 32, 64)
    demo = arch.build(n_classes=N_CLASSES, width=16, depth=3)
    n_params = demo.count_params() if arch.framework == "keras" else sum(p.numel() for p in demo.parameters())
    assert 100_000 < n_params < 500_000


def test_unknown_arch_lists_the_valid_ones():
    with pytest.raises(Exception, match="torch/se_unet.*torch/unet"):
        get_arch("keras", "se_unet")


def test_split_keeps_validation_and_outliers_out_of_training(tiny_data):
    data = load_training_data(tiny_data, SplitSpec(0, 0.25), N_CLASSES)
    train_ids, val_ids = set(data.split.train.tolist()), set(data.split.val.tolist())
    assert not train_ids & val_ids
    assert not (train_ids | val_ids) & set(range(11, 16))
    assert len(data.train_images) + len(data.val_images) == 11


def test_torch_loss_ignores_background_pixels():
    from zoo.train_torch import weighted_cross_entropy

    rng = np.random.default_rng(2)
    masks = rng.integers(0, N_CLASSES, (2, 8, 16))
    weights = torch.from_numpy(pixel_weights(masks, background_free_weights(N_CLASSES)))
    target = torch.from_numpy(masks)
    logits = torch.from_numpy(rng.normal(size=(2, N_CLASSES, 8, 16)).astype(np.float32))
    logits.requires_grad_(True)
    loss = weighted_cross_entropy(logits, target, weights)
    loss.backward()
    background = torch.from_numpy(masks == 0)[:, None].expand_as(logits)
    assert torch.all(logits.grad[background] == 0) and torch.any(logits.grad[~background] != 0)
    changed = logits.detach() + 5 * background * torch.randn_like(logits)
    assert torch.isclose(weighted_cross_entropy(changed, target, weights), loss.detach())
    changed = logits.detach() + 5 * ~background * torch.randn_like(logits)
    assert not torch.isclose(weighted_cross_entropy(changed, target, weights), loss.detach())


def test_keras_compiled_loss_ignores_background_pixels(tmp_path, tiny_data):
    from zoo.batches import one_hot
    from zoo.train_keras import make_trainer

    config = tiny_config(tmp_path, tiny_data, "keras")
    model = make_trainer(get_arch("keras", "unet"), config, 1).model
    rng = np.random.default_rng(3)
    masks = rng.integers(0, N_CLASSES, (2, 8, 16))
    probs = rng.dirichlet(np.ones(N_CLASSES), (2, 8, 16)).astype(np.float32)
    weights = pixel_weights(masks, config.weights)

    def loss(p):
        return float(model.compute_loss(y=one_hot(masks, N_CLASSES), y_pred=p, sample_weight=weights))

    background = (masks == 0)[..., None]
    assert loss(np.where(background, np.roll(probs, 1, axis=-1), probs)) == pytest.approx(loss(probs))
    assert loss(np.where(background, probs, np.roll(probs, 1, axis=-1))) != pytest.approx(loss(probs))


@pytest.mark.parametrize("arch_name", ["unet", "se_unet"])
def test_torch_checkpoint_reloads_with_weights_only_and_is_deterministic(tmp_path, tiny_data, arch_name):
    config = tiny_config(tmp_path, tiny_data, "torch", arch_name)
    result = train(config)
    sidecar = json.loads(sidecar_path(result.checkpoint).read_text())
    assert sidecar["factory"] == f"zoo.torch_unet:{arch_name}"
    assert sidecar["output"]["kind"] == "logits" and sidecar["input"]["layout"] == "NCHW"
    assert sidecar["split"]["n_train"] + sidecar["split"]["n_val"] == 11
    assert 0.0 <= sidecar["val_miou"] <= 1.0 and sidecar["val_miou"] == result.val_miou
    scaling = {
        "unet": "--input-range 0-1 --data",
        "se_unet": "--input-range 0-1 --mean 0.449 --std 0.226 --data",
    }[arch_name]
    assert scaling in sidecar["export_command"] == result.export_command
    reloaded = resolve_factory(sidecar["factory"])(**sidecar["factory_kwargs"])
    reloaded.load_state_dict(torch.load(result.checkpoint, weights_only=True))
    arch = get_arch("torch", arch_name)
    images = np.random.default_rng(4).integers(0, 256, (3, 32, 64), dtype=np.uint8)
    expected = model_outputs(arch, result.model, images)
    np.testing.assert_array_equal(model_outputs(arch, reloaded, images), expected)
    again = train(tiny_config(tmp_path / "again", tiny_data, "torch", arch_name))
    np.testing.assert_array_equal(model_outputs(arch, again.model, images), expected)


def test_keras_model_file_reloads_and_gives_the_same_outputs(tmp_path, tiny_data):
    result = train(tiny_config(tmp_path, tiny_data, "keras"))
    sidecar = json.loads(sidecar_path(result.checkpoint).read_text())
    assert sidecar["framework"] == "keras" and sidecar["output"]["kind"] == "probabilities"
    assert sidecar["input"]["preprocessing"]["input_range"] == "0-255"
    assert "--input-range 0-255 --data" in sidecar["export_command"]
    reloaded = keras.models.load_model(result.checkpoint)
    arch = get_arch("keras", "unet")
    images = np.random.default_rng(5).integers(0, 256, (3, 32, 64), dtype=np.uint8)
    probs = model_outputs(arch, reloaded, images)
    np.testing.assert_allclose(probs, model_outputs(arch, result.model, images), atol=1e-6)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    weight_bytes = 4 * result.model.count_params()
    assert result.checkpoint.stat().st_size < 1.3 * weight_bytes + 200_000, "optimizer state was saved"


def ens_train(*args):
    """`ens train ARGS` in-process."""
    return ens("train", *args)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--arch", "resnet"], "unknown architecture 'resnet'.*keras/unet, torch/se_unet, torch/unet"),
        (["--arch", "se_unet", "--framework", "keras"], "unknown architecture 'se_unet'.*keras/unet"),
        (["--width", "0"], "--width 0 is too small"),
        (["--framework", "keras"], "does not end in .keras"),
        (["--seed", "-1"], r"--seed -1 is outside 0\.\.4294967295"),
        (["--split-seed", "-1"], r"--split-seed -1 is outside 0\.\.4294967295"),
    ],
)
def test_ens_train_bad_options_give_one_line_errors(tmp_path, tiny_data, args, expected):
    result = ens_train("--data", tiny_data, "--out", tmp_path / "m.pt", *args)
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert re.search(expected, lines[0])
    assert not (tmp_path / "m.pt").exists()


def test_ens_train_writes_checkpoint_and_sidecar(tmp_path, tiny_data):
    out = tmp_path / "cli.pt"
    options = ["--epochs", "2", "--width", "4", "--batch-size", "4", "--seed", "3", "--threads", "1"]
    result = ens_train("--data", tiny_data, "--out", out, *options)
    assert result.exit_code == 0, result.output
    assert "epoch   2/2" in result.output and "val mIoU" in result.output
    sidecar = json.loads(sidecar_path(out).read_text())
    assert sidecar["training"]["seed"] == 3 and sidecar["split"]["seed"] == 0
    assert sidecar["factory_kwargs"]["width"] == 4 and len(sidecar["val_miou_per_epoch"]) == 2
