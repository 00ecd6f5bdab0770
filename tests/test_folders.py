"""Image folders as data: reading PNG/JPEG/TIFF/BMP, pairing masks by stem, size groups, text ids in
CSVs, and every refusal as one line that leaves the files as they were."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import assert_unchanged, ens, one_line_error, snapshot
from onnx_members import make_member
from PIL import Image

from ensemble.data.folder import open_folder, sort_stems
from ensemble.data.imagefiles import read_image, read_mask
from ensemble.errors import EnsError
from ensemble.submission.io import read_submission


def write_folder(root: Path, sizes, channels=3, seed=0, names=None, masks=True, suffix=".png"):
    """Images (and masks, labels 0..4) of the given sizes under root/images and root/masks."""
    rng = np.random.default_rng(seed)
    names = names or [f"img_{k:03d}" for k in range(len(sizes))]
    (root / "images").mkdir(parents=True, exist_ok=True)
    if masks:
        (root / "masks").mkdir(parents=True, exist_ok=True)
    for name, (height, width) in zip(names, sizes, strict=True):
        shape = (height, width, 3) if channels == 3 else (height, width)
        Image.fromarray(rng.integers(0, 256, shape).astype(np.uint8)).save(
            root / "images" / f"{name}{suffix}"
        )
        if masks:
            label = rng.integers(0, 5, (height, width)).astype(np.uint8)
            Image.fromarray(label).save(root / "masks" / f"{name}.png")
    return root / "images", root / "masks"


@pytest.fixture
def store(tmp_path):
    folder = tmp_path / "models"
    make_member(folder / "a.onnx", channels=3, seed=1)
    make_member(folder / "b.onnx", channels=3, seed=2)
    return folder


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".tif", ".bmp"])
def test_every_format_reads_with_stems_as_ids(tmp_path, suffix):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (6, 7, 3)).astype(np.uint8)
    gray = rng.integers(0, 256, (6, 7)).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / f"b{suffix}")
    Image.fromarray(gray).save(tmp_path / f"a{suffix}")
    folder = open_folder(tmp_path)
    assert folder.stems == ("a", "b") and folder.sizes.tolist() == [[6, 7], [6, 7]]
    assert sorted(folder.channel_counts) == [1, 3]
    read_rgb, read_gray = read_image(tmp_path / f"b{suffix}"), read_image(tmp_path / f"a{suffix}")
    assert read_rgb.shape == (6, 7, 3) and read_gray.shape == (6, 7)
    if suffix != ".jpg":  # lossless formats give the pixels back exactly
        np.testing.assert_array_equal(read_rgb, rgb)
        np.testing.assert_array_equal(read_gray, gray)
    np.testing.assert_array_equal(
        read_image(tmp_path / f"a{suffix}", 3), np.repeat(read_gray[..., None], 3, 2)
    )


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16_bit_images_map_to_8_bit_and_masks_keep_their_labels(tmp_path, suffix):
    values = np.array([[0, 257, 65535], [128 * 257, 1000, 300]], np.uint16)
    Image.fromarray(values).save(tmp_path / f"x{suffix}")
    np.testing.assert_array_equal(
        read_image(tmp_path / f"x{suffix}"), np.rint(values / 257.0).astype(np.uint8)
    )
    labels = np.array([[0, 1], [4, 2]], np.uint16)
    Image.fromarray(labels).save(tmp_path / f"m{suffix}")
    np.testing.assert_array_equal(read_mask(tmp_path / f"m{suffix}", 5), labels.astype(np.uint8))
    with pytest.raises(EnsError, match="labels must lie in 0..2, found 4"):
        read_mask(tmp_path / f"m{suffix}", 3)


def test_stems_sort_numerically_when_all_are_integers():
    assert sort_stems(["10", "2", "1"]) == ["1", "2", "10"]
    assert sort_stems(["10", "2", "b"]) == ["10", "2", "b"]
    assert sort_stems(["007", "7x", "1"]) == ["007", "1", "7x"]


def test_missing_and_extra_masks_are_one_line_naming_the_files(tmp_path):
    images, masks = write_folder(tmp_path, [(8, 8)] * 3)
    (masks / "img_001.png").unlink()
    before = snapshot(tmp_path)
    result = ens("data", "inspect", images, "--masks", masks)
    one_line_error(result, "1 image(s)", "img_001.png", "have no mask")
    assert_unchanged(before, tmp_path)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(masks / "img_001.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(masks / "stray.png")
    before = snapshot(tmp_path)
    result = ens("fit", "--data", images, "--masks", masks, "--models-dir", tmp_path / "none")
    one_line_error(result, "1 mask(s)", "stray.png", "have no image")
    assert_unchanged(before, tmp_path)


def test_corrupt_image_is_one_line_naming_it_and_writes_nothing(tmp_path, store):
    images, _ = write_folder(tmp_path / "data", [(8, 8)] * 3, masks=False)
    (images / "img_002.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    out = tmp_path / "out" / "sub.csv"
    before = snapshot(tmp_path)
    result = ens("predict", "--members", "a", "--models-dir", store, "--data", images, "--out", out)
    one_line_error(result, "img_002.png", "cannot read image")
    assert_unchanged(before, tmp_path)


def test_truncated_image_fails_while_predicting_and_leaves_no_csv(tmp_path, store):
    images, _ = write_folder(tmp_path / "data", [(16, 16)] * 4, masks=False)
    whole = (images / "img_003.png").read_bytes()
    (images / "img_003.png").write_bytes(whole[: len(whole) // 2])
    out = tmp_path / "sub.csv"
    before = snapshot(tmp_path)
    result = ens("predict", "--members", "a", "--models-dir", store, "--data", images, "--out", out)
    one_line_error(result, "img_003.png")
    assert_unchanged(before, tmp_path)


def test_bad_folder_inputs_are_one_line(tmp_path, store):
    images, masks = write_folder(tmp_path / "data", [(8, 8)] * 2)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(images / "img_000.jpg")
    before = snapshot(tmp_path)
    cases = [
        (["predict", "--members", "a", "--data", images], ["same stem", "img_000"]),
        (["predict", "--members", "a", "--data", tmp_path / "empty"], ["does not exist"]),
        (
            ["predict", "--members", "a", "--data", tmp_path / "data" / "x.npz", "--masks", masks],
            ["pairs with"],
        ),
    ]
    for args, fragments in cases:
        one_line_error(ens(*args, "--models-dir", store), *fragments)
    assert_unchanged(before, tmp_path)


def test_rgb_members_on_grayscale_need_gray_to_rgb(tmp_path, store, tiny_npz):
    out = tmp_path / "sub.csv"
    before = snapshot(tmp_path)
    result = ens("predict", "--members", "a", "--models-dir", store, "--data", tiny_npz, "--out", out)
    one_line_error(result, "grayscale", "take 3 channels", "--gray-to-rgb")
    assert_unchanged(before, tmp_path)
    result = ens(
        "predict", "--members", "a", "--models-dir", store, "--data", tiny_npz, "--out", out, "--gray-to-rgb"
    )
    assert result.exit_code == 0, result.output
    ids, labels, _ = read_submission(out, (8, 12), 5)
    assert len(ids) == 6


def test_grayscale_members_refuse_rgb_images_and_mixing_is_refused(tmp_path, store):
    images, _ = write_folder(tmp_path / "data", [(8, 8)] * 2, masks=False)
    make_member(store / "gray.onnx", seed=3)
    before = snapshot(tmp_path)
    result = ens(
        "predict", "--members", "gray", "--models-dir", store, "--data", images, "--out", tmp_path / "s.csv"
    )
    one_line_error(result, "RGB", "take 1 channel")
    result = ens("predict", "--members", "a,gray", "--models-dir", store, "--data", images)
    one_line_error(result, "'gray' takes 1 input channel(s)", "'a' takes 3")
    assert_unchanged(before, tmp_path)


def test_mixed_sizes_write_one_rle_csv_that_checks_and_scores(tmp_path, store):
    sizes = [(8, 12), (6, 10), (8, 12), (6, 10), (6, 10)]
    images, masks = write_folder(tmp_path / "data", sizes)
    out = tmp_path / "sub.csv"
    result = ens("predict", "--members", "a,b", "--models-dir", store, "--data", images, "--out", out)
    assert result.exit_code == 0, result.output
    text = out.read_text().splitlines()
    assert text[1].startswith("img_000_1,") and len(text) == 1 + 5 * 4
    result = ens("check", out, "--data", images)
    assert result.exit_code == 0 and "5 images, 8x12 (2), 6x10 (3)" in result.output, result.output
    result = ens("score", out, "--truth", masks)
    assert result.exit_code == 0 and "over 5 images" in result.output, result.output
    folder = open_folder(images)
    from ensemble.submission.textids import ImageIndex

    ids, labels, _ = read_submission(out, None, 5, images=ImageIndex(folder.stems, folder.sizes))
    assert ids.tolist() == list(folder.stems)
    assert [label.shape for label in labels] == [tuple(s) for s in sizes]


def test_check_with_data_names_missing_and_unknown_images(tmp_path, store):
    images, _ = write_folder(tmp_path / "data", [(8, 12), (6, 10), (6, 10)], masks=False)
    out = tmp_path / "sub.csv"
    assert (
        ens("predict", "--members", "a", "--models-dir", store, "--data", images, "--out", out).exit_code == 0
    )
    lines = out.read_text().splitlines()
    broken = tmp_path / "broken.csv"
    broken.write_text(
        "\n".join([lines[0], *[line.replace("img_001_", "ghost_") for line in lines[1:]]]) + "\n"
    )
    result = ens("check", broken, "--data", images)
    assert result.exit_code == 1
    assert "id 'ghost' is not one of the 3 images expected" in result.output
    assert "image 'img_001' has no rows" in result.output


def test_flat_needs_integer_stems_and_one_size(tmp_path, store):
    images, _ = write_folder(tmp_path / "words", [(8, 8)] * 2, masks=False)
    mixed, _ = write_folder(tmp_path / "mixed", [(8, 8), (6, 6)], masks=False, names=["0", "1"])
    before = snapshot(tmp_path)
    result = ens("predict", "--members", "a", "--models-dir", store, "--data", images, "--format", "flat")
    one_line_error(result, "'img_000' is not a plain", "--format rle")
    result = ens("predict", "--members", "a", "--models-dir", store, "--data", mixed, "--format", "flat")
    one_line_error(result, "several sizes", "8x8 (1), 6x6 (1)", "--format rle")
    assert_unchanged(before, tmp_path)
    numbers, _ = write_folder(tmp_path / "numbers", [(8, 8)] * 3, masks=False, names=["10", "2", "0"])
    out = tmp_path / "flat.csv"
    result = ens(
        "predict",
        "--members",
        "a",
        "--models-dir",
        store,
        "--data",
        numbers,
        "--format",
        "flat",
        "--out",
        out,
    )
    assert result.exit_code == 0, result.output
    ids, _, fmt = read_submission(out, (8, 8), 5)
    assert fmt == "flat" and ids.tolist() == [0, 2, 10]


def test_fixed_size_member_pads_smaller_images_and_crops_back(tmp_path):
    from ensemble.members.member import load_member
    from ensemble.members.padding import crop, pad
    from ensemble.members.session import build_session

    store = tmp_path / "models"
    make_member(store / "fixed.onnx", channels=3, seed=4, height=16, width=16)
    make_member(store / "free.onnx", channels=3, seed=4)
    images, _ = write_folder(tmp_path / "data", [(10, 13), (16, 16)], masks=False)
    out = tmp_path / "sub.csv"
    args = ("predict", "--models-dir", store, "--data", images, "--tta", "none", "--out", out)
    assert ens(*args, "--members", "fixed").exit_code == 0
    folder = open_folder(images)
    index = __import__("ensemble.submission.textids", fromlist=["ImageIndex"]).ImageIndex(
        folder.stems, folder.sizes
    )
    _, labels, _ = read_submission(out, None, 5, images=index)
    pixels = read_image(images / "img_000.png").transpose(2, 0, 1)[None].astype(np.float32)
    padded = pad(pixels, (16, 16))
    assert padded.shape == (1, 3, 16, 16)
    np.testing.assert_array_equal(crop(padded, (10, 13)), pixels)  # the round trip
    np.testing.assert_array_equal(padded[:, :, 10:12, :13], pixels[:, :, 8:6:-1])  # reflected rows
    free = build_session(load_member(store / "free.onnx"), "cpu")
    expected = crop(free.run(padded), (10, 13))[:, 1:].argmax(axis=1)[0] + 1
    np.testing.assert_array_equal(labels[0], expected)


def test_size_multiple_pads_up_and_larger_images_than_fixed_are_refused(tmp_path):
    from ensemble.members.member import load_member
    from ensemble.members.padding import padded_size

    store = tmp_path / "models"
    make_member(store / "m16.onnx", channels=3, size_multiple=16)
    member = load_member(store / "m16.onnx")
    assert member.info.size_multiple == 16 and padded_size(member, (10, 33)) == (16, 48)
    make_member(store / "small.onnx", channels=3, height=8, width=8)
    images, _ = write_folder(tmp_path / "data", [(8, 8), (12, 8)], masks=False)
    before = snapshot(tmp_path)
    result = ens(
        "predict", "--members", "small", "--models-dir", store, "--data", images, "--out", tmp_path / "s.csv"
    )
    one_line_error(result, "height 8 at most", "12x8 images", "dynamic H and W")
    assert_unchanged(before, tmp_path)


def test_members_without_channel_metadata_take_one_channel(tmp_path):
    import onnx

    from ensemble.members.member import load_member

    path = make_member(tmp_path / "old.onnx")
    model = onnx.load(str(path))
    props = {p.key: p.value for p in model.metadata_props}
    props["ens.contract_version"] = "1"
    for key in ("ens.input_channels", "ens.size_multiple"):
        props.pop(key)
    onnx.helper.set_model_props(model, props)
    onnx.save(model, str(path))
    member = load_member(path)
    assert member.channels == 1 and member.info.size_multiple == 1 and member.info.contract_version == "1"
    props["ens.contract_version"] = "2"
    onnx.helper.set_model_props(model, props)
    onnx.save(model, str(path))
    with pytest.raises(EnsError, match="ens.input_channels missing, expected 1 .grayscale. or 3"):
        load_member(path)


def test_validation_split_by_stems_and_outliers_of_folders(tmp_path, store):
    sizes = [(8, 8)] * 12
    images, masks = write_folder(tmp_path / "data", sizes)
    same = np.full((8, 8), 2, np.uint8)
    for name in ("img_000", "img_003", "img_005", "img_007", "img_009"):
        Image.fromarray(same).save(masks / f"{name}.png")
    ids_file = tmp_path / "val.txt"
    ids_file.write_text("img_001\nimg_002, img_003\n")
    out = tmp_path / "val.csv"
    args = ("predict", "--members", "a", "--models-dir", store, "--data", images, "--masks", masks)
    result = ens(*args, "--split", "val", "--val-ids", ids_file, "--out", out)
    assert result.exit_code == 0, result.output
    ids, _, _ = read_submission(out, (8, 8), 5)
    assert ids.tolist() == ["img_001", "img_002"]  # img_003 shares its mask with 4 others: an outlier
    ids_file.write_text("img_001\nnope\n")
    before = snapshot(tmp_path)
    one_line_error(
        ens(*args, "--split", "val", "--val-ids", ids_file), "'nope' is not an image of the folder"
    )
    assert_unchanged(before, tmp_path)
    result = ens("data", "inspect", images, "--masks", masks)
    assert "outliers: 5 images in 1 duplicated-mask group(s)" in result.output


def test_folder_fingerprint_changes_with_a_file(tmp_path):
    images, _ = write_folder(tmp_path, [(8, 8)] * 2, masks=False)
    first = open_folder(images).sha256
    assert open_folder(images).sha256 == first
    path = images / "img_001.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(path)
    assert open_folder(images).sha256 != first


def test_api_takes_rgb_channels_last_or_first(tmp_path, store):
    import ensemble as api

    model = api.load_ensemble(["a", "b"], store=store)
    rgb = np.random.default_rng(0).integers(0, 256, (3, 8, 10, 3)).astype(np.uint8)
    last = api.predict(model, rgb).labels
    np.testing.assert_array_equal(api.predict(model, rgb.transpose(0, 3, 1, 2)).labels, last)
    assert last.shape == (3, 8, 10)
    with pytest.raises(EnsError, match="gray_to_rgb=True"):
        api.predict(model, rgb[..., 0])
    gray_model = api.load_ensemble(["a", "b"], store=store, gray_to_rgb=True)
    np.testing.assert_array_equal(
        api.predict(gray_model, rgb[..., 0]).labels,
        api.predict(model, np.repeat(rgb[..., :1], 3, axis=3)).labels,
    )


def test_save_probs_keeps_stems_and_needs_one_size(tmp_path, store):
    images, _ = write_folder(tmp_path / "one", [(8, 8)] * 3, masks=False)
    out, probs = tmp_path / "sub.csv", tmp_path / "probs"
    args = ("predict", "--members", "a", "--models-dir", store, "--out", out, "--save-probs", probs)
    assert ens(*args, "--data", images).exit_code == 0
    assert np.load(probs / "ids.npy").tolist() == ["img_000", "img_001", "img_002"]
    assert np.load(probs / "probs.npy").shape == (3, 5, 8, 8)
    mixed, _ = write_folder(tmp_path / "mixed", [(8, 8), (6, 6)], masks=False)
    before = snapshot(tmp_path)
    one_line_error(ens(*args, "--data", mixed), "several sizes", "drop --save-probs")
    assert_unchanged(before, tmp_path)


def test_scoring_a_folder_csv_against_an_npz_is_one_line(tmp_path, store, tiny_npz):
    images, _ = write_folder(tmp_path / "data", [(8, 12)] * 2, masks=False)
    out = tmp_path / "sub.csv"
    assert (
        ens("predict", "--members", "a", "--models-dir", store, "--data", images, "--out", out).exit_code == 0
    )
    before = snapshot(tmp_path)
    one_line_error(ens("score", out, "--truth", tiny_npz), "are image names", "--truth MASKS_DIR")
    assert_unchanged(before, tmp_path)


def test_colour_and_jpeg_masks_are_refused_naming_the_file(tmp_path):
    images, masks = write_folder(tmp_path, [(8, 8)] * 2)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(masks / "img_001.png")
    before = snapshot(tmp_path)
    one_line_error(ens("data", "inspect", images, "--masks", masks), "img_001.png", "is a RGB image")
    assert_unchanged(before, tmp_path)
    (masks / "img_001.png").unlink()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(masks / "img_001.jpg")
    before = snapshot(tmp_path)
    one_line_error(ens("data", "inspect", images, "--masks", masks), "img_001.jpg", "save masks as PNG")
    assert_unchanged(before, tmp_path)
