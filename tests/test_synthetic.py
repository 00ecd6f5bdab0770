"""The synthetic Mars data: determinism, format, class shares, aliens, label noise and `ens data demo`."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
from typer.testing import CliRunner

from ensemble.cli import app
from ensemble.data.datafile import open_data
from ensemble.data.outliers import find_duplicate_masks
from ensemble.data.summary import inspect_data
from ensemble.demo.synthetic import DemoSpec, ensure_demo_data, generate_demo, write_demo
from ensemble.demo.terrain import render_scenes
from ensemble.errors import EnsError

TINY = DemoSpec(seed=3, n_train=40, n_test=20)
TARGET_SHARES = np.array([0.24, 0.34, 0.23, 0.18, 0.0013])


def shares(masks: np.ndarray) -> np.ndarray:
    return np.bincount(masks.ravel(), minlength=5)[:5] / masks.size


def test_same_spec_gives_same_bytes_and_another_seed_does_not(tmp_path):
    first = write_demo(tmp_path / "a.npz", TINY).path.read_bytes()
    again = write_demo(tmp_path / "b.npz", TINY).path.read_bytes()
    other = write_demo(tmp_path / "c.npz", DemoSpec(seed=4, n_train=40, n_test=20))
    assert first == again
    assert other.path.read_bytes() != first
    with zipfile.ZipFile(tmp_path / "a.npz") as archive:  # no wall-clock time in the archive
        assert {info.date_time for info in archive.infolist()} == {(1980, 1, 1, 0, 0, 0)}


def test_keys_shapes_and_dtypes(tmp_path):
    write_demo(tmp_path / "d.npz", TINY)
    with np.load(tmp_path / "d.npz") as arrays:
        assert sorted(arrays.files) == ["test_masks", "test_set", "training_set"]
        assert arrays["training_set"].shape == (40, 2, 64, 128)
        assert arrays["test_set"].shape == arrays["test_masks"].shape == (20, 64, 128)
        assert {arrays[key].dtype for key in arrays.files} == {np.dtype(np.uint8)}
        assert arrays["training_set"][:, 1].max() == 4
        assert arrays["test_masks"].max() <= 4


def test_float64_file_holds_the_same_values(tmp_path):
    write_demo(tmp_path / "u8.npz", TINY)
    write_demo(tmp_path / "f8.npz", TINY, float64=True)
    with np.load(tmp_path / "u8.npz") as small, np.load(tmp_path / "f8.npz") as big:
        for key in small.files:
            assert big[key].dtype == np.float64
            np.testing.assert_array_equal(big[key], small[key])
    images, masks = open_data(tmp_path / "f8.npz").load_train(n_classes=5)
    assert images.dtype == masks.dtype == np.uint8


def test_class_shares_resemble_the_course_data():
    data = generate_demo(DemoSpec(seed=0, n_train=400, n_test=100))
    train, test = shares(data.train_masks), shares(data.test_masks)
    np.testing.assert_allclose(train[:4], TARGET_SHARES[:4], atol=0.035)
    np.testing.assert_allclose(test[:4], TARGET_SHARES[:4], atol=0.05)
    assert 0.0005 <= train[4] <= 0.003


def test_aliens_are_exactly_the_duplicated_mask_group():
    data = generate_demo(TINY)
    report = find_duplicate_masks(data.train_masks)
    assert len(report.groups) == 1
    np.testing.assert_array_equal(report.indices, data.alien_indices)
    assert len(data.alien_indices) == 5
    assert len(find_duplicate_masks(data.train_masks, min_copies=2)) == 5
    assert len(find_duplicate_masks(data.test_masks, min_copies=2)) == 0


def test_outlier_detection_finds_the_course_share_of_aliens():
    data = generate_demo(DemoSpec(seed=1, n_train=262, n_test=4))
    assert len(find_duplicate_masks(data.train_masks)) == round(262 * 110 / 2615)  # the real file's share


def test_alien_images_look_odd():
    data = generate_demo(TINY)
    aliens = data.train_images[data.alien_indices].astype(float)
    others = np.delete(data.train_images, data.alien_indices, axis=0).astype(float)
    # a bright face with pitch-black eyes: many very bright and very dark pixels
    assert (aliens > 180).mean() > 3 * (others > 180).mean()
    assert (aliens < 20).mean() > 3 * (others < 20).mean()


def test_labels_are_a_noisy_version_of_the_true_regions():
    scenes = render_scenes(np.random.default_rng(0), 64, 64, 128)
    labelled = scenes.labels > 0
    agreement = (scenes.labels[labelled] == scenes.truth[labelled]).mean()
    assert 0.8 < agreement < 0.97
    assert 0.05 < (scenes.labels == 0).mean() < 0.45
    on_rocks = scenes.truth == 4
    assert on_rocks.any()
    assert (scenes.labels[on_rocks] == 4).mean() < 1.0


def test_textures_carry_class_information():
    scenes = render_scenes(np.random.default_rng(1), 64, 64, 128)
    image = scenes.images.astype(float)
    rough = np.abs(np.diff(image, axis=2))[:, :, :-1]  # local contrast, a texture cue
    truth = scenes.truth[:, :, 1:-1]
    rough = rough[:, :, : truth.shape[2]]
    soil, sand = rough[truth == 1].mean(), rough[truth == 3].mean()
    assert soil > 1.3 * sand


@pytest.mark.parametrize("shape", [(32, 48), (17, 33), (8, 8)])
def test_other_image_sizes(tmp_path, shape):
    spec = DemoSpec(seed=1, n_train=24, n_test=5, height=shape[0], width=shape[1])
    write_demo(tmp_path / "s.npz", spec)
    data = open_data(tmp_path / "s.npz")
    assert (data.n_train, data.n_test, data.image_shape) == (24, 5, shape)
    images, masks = data.load_train(n_classes=5)
    assert images.std() > 5
    assert data.load_test_masks(5).shape == (5, *shape)


@pytest.mark.parametrize(
    "change", [{"n_train": 0}, {"n_test": -1}, {"height": 4}, {"width": 2}, {"n_aliens": 50}]
)
def test_impossible_specs_are_user_errors(change):
    values = {"n_train": 40, "n_test": 20, **change}
    with pytest.raises(EnsError, match="too small|do not fit"):
        DemoSpec(**values).check()


def test_ensure_demo_data_generates_once(tmp_path):
    path = tmp_path / "sub" / "demo.npz"
    said = []
    assert ensure_demo_data(path, said.append, spec=TINY) == path
    assert len(said) == 1 and "generating" in said[0] and str(path) in said[0]
    stamp = path.stat().st_mtime_ns
    ensure_demo_data(path, said.append, spec=TINY)
    assert len(said) == 1 and path.stat().st_mtime_ns == stamp


def test_cli_demo_writes_a_loadable_file(tmp_path):
    out = tmp_path / "demo.npz"
    result = CliRunner().invoke(
        app,
        ["data", "demo", "--out", str(out), "--n-train", "40", "--n-test", "20", "--seed", "3"],
    )
    assert result.exit_code == 0, result.output
    assert str(out) in result.output and "40 training images" in result.output
    images, masks = open_data(out).load_train(n_classes=5)
    assert images.shape == masks.shape == (40, 64, 128)
    assert out.read_bytes() == write_demo(tmp_path / "lib.npz", TINY).path.read_bytes()
    report = inspect_data(out)
    assert report.n_outliers == 5 and report.n_outlier_groups == 1


def test_cli_demo_other_size_and_float64(tmp_path):
    out = tmp_path / "f.npz"
    args = ["data", "demo", "--out", str(out), "--n-train", "10", "--n-test", "3"]
    result = CliRunner().invoke(app, [*args, "--height", "32", "--width", "48", "--float64"])
    assert result.exit_code == 0, result.output
    data = open_data(out)
    assert data.image_shape == (32, 48)
    with np.load(out) as arrays:
        assert arrays["test_set"].dtype == np.float64


def test_cli_demo_bad_option_is_one_line(tmp_path):
    out = tmp_path / "x.npz"
    result = CliRunner().invoke(app, ["data", "demo", "--out", str(out), "--n-train", "0"])
    assert result.exit_code == 1
    assert result.output.strip().startswith("error:")
    assert "--n-train 0" in result.output and "Traceback" not in result.output
    assert not out.exists()


def test_cli_inspect_reads_the_demo_file(tmp_path):
    out = tmp_path / "demo.npz"
    write_demo(out, TINY)
    result = CliRunner().invoke(app, ["data", "inspect", str(out)])
    assert result.exit_code == 0, result.output
    assert "training_set: shape (40, 2, 64, 128), dtype uint8" in result.output
    assert "5 images in 1 duplicated-mask group" in result.output


@pytest.mark.slow
def test_full_size_generation_is_on_target(tmp_path):
    summary = write_demo(tmp_path / "full.npz")
    assert (summary.n_train, summary.n_test, summary.n_aliens) == (2615, 10022, 110)
    images, masks = open_data(summary.path).load_train(n_classes=5)
    np.testing.assert_allclose(shares(masks)[:4], TARGET_SHARES[:4], atol=0.02)
    assert 0.0005 <= shares(masks)[4] <= 0.003
    assert len(find_duplicate_masks(masks)) == 110
