"""Submission formats and data readers on the inputs people really bring: `ens convert` of an image
folder's CSV to another pixel order, integer stems, JPEGs turned by EXIF, integers with leading zeros,
ids that break lines or start a spreadsheet formula, repeated npz names, empty validation splits and
the class count of a CSV read from its manifest or rows."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_unchanged, ens, one_line_error, snapshot, write_npz
from onnx_members import make_member
from PIL import Image

from ensemble.data.folder import open_folder
from ensemble.data.imagefiles import read_image
from ensemble.files.hashing import file_sha256
from ensemble.submission.convention import RleConvention
from ensemble.submission.io import read_submission, write_submission
from ensemble.submission.textids import ImageIndex


def write_folder(root: Path, names, sizes, n_classes: int = 5, seed: int = 0) -> tuple[Path, Path]:
    """Grayscale images and their masks (labels 0..n_classes-1) under root/images and root/masks."""
    rng = np.random.default_rng(seed)
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for name, (height, width) in zip(names, sizes, strict=True):
        Image.fromarray(rng.integers(0, 256, (height, width)).astype(np.uint8)).save(
            root / "images" / f"{name}.png"
        )
        Image.fromarray(rng.integers(0, n_classes, (height, width)).astype(np.uint8)).save(
            root / "masks" / f"{name}.png"
        )
    return root / "images", root / "masks"


def predict(tmp_path: Path, images: Path, out: Path, n_classes: int = 5, *options) -> Path:
    member = make_member(tmp_path / "models" / "m.onnx", n_classes=n_classes, seed=3)
    result = ens(
        "predict", "--members", "m", "--models-dir", member.parent, "--data", images, "--out", out, *options
    )
    assert result.exit_code == 0, result.output
    return out


def index(images: Path) -> ImageIndex:
    folder = open_folder(images)
    return ImageIndex(folder.stems, folder.sizes)


# HIGH 5: converting pixel order needs each image's size


def test_convert_to_row_order_needs_sizes_and_round_trips_with_data(tmp_path):
    images, _ = write_folder(tmp_path / "data", ["b_1", "a", "c", "d"], [(8, 12), (6, 10), (6, 10), (8, 12)])
    sub = predict(tmp_path, images, tmp_path / "sub.csv")
    row = tmp_path / "row.csv"
    before = snapshot(tmp_path)
    result = ens("convert", sub, row, "--to", "rle", "--to-rle-order", "row")
    one_line_error(
        result, "renumbering column-major", "needs each image's size", "--data IMAGES_DIR", "--shape HxW"
    )
    result = ens("convert", sub, row, "--to", "rle", "--to-rle-start", "0")
    one_line_error(result, "as column-major 0-indexed", "--data")
    result = ens(
        "convert", sub, row, "--to", "rle", "--to-rle-order", "row", "--data", images, "--shape", "8x12"
    )
    one_line_error(result, "--data", "--shape", "one of them")
    assert_unchanged(before, tmp_path)

    result = ens("convert", sub, row, "--to", "rle", "--to-rle-order", "row", "--data", images)
    assert result.exit_code == 0 and "4 images" in result.output, result.output
    ids, original, _ = read_submission(sub, None, 5, images=index(images))
    row_ids, converted, _ = read_submission(row, None, 5, images=index(images), rle=RleConvention("row"))
    assert row_ids.tolist() == ids.tolist() == ["a", "b_1", "c", "d"]
    for before_label, after_label in zip(original, converted, strict=True):
        np.testing.assert_array_equal(before_label, after_label)
    back = tmp_path / "back.csv"
    result = ens("convert", row, back, "--to", "rle", "--rle-order", "row", "--data", images)
    assert result.exit_code == 0, result.output
    assert back.read_bytes() == sub.read_bytes()
    class_column = tmp_path / "cc.csv"  # the layout alone changes no pixel number: no size needed
    result = ens("convert", sub, class_column, "--to", "rle", "--to-rle-layout", "class-column")
    assert result.exit_code == 0, result.output
    back.unlink()
    result = ens("convert", class_column, back, "--to", "rle", "--rle-layout", "class-column")
    assert result.exit_code == 0 and back.read_bytes() == sub.read_bytes(), result.output


def test_rle_to_flat_takes_the_size_from_the_manifest_or_refuses(tmp_path):
    images, _ = write_folder(tmp_path / "data", ["0", "1", "2"], [(6, 10)] * 3)
    sub = predict(tmp_path, images, tmp_path / "sub.csv")
    flat = tmp_path / "flat.csv"
    result = ens("convert", sub, flat, "--to", "flat")  # the manifest says 6x10
    assert result.exit_code == 0, result.output
    ids, labels, _ = read_submission(flat, (6, 10), 5)
    _, original, _ = read_submission(sub, (6, 10), 5)
    assert ids.tolist() == [0, 1, 2] and np.array_equal(labels, original)
    (tmp_path / "sub.manifest.json").unlink()
    flat.unlink()
    before = snapshot(tmp_path)
    result = ens("convert", sub, flat, "--to", "flat")
    one_line_error(result, "writing flat labels", "needs each image's size", "--shape HxW")
    assert_unchanged(before, tmp_path)


# MEDIUM: integer stems


def test_integer_stems_of_two_sizes_check_and_score_without_a_crash(tmp_path):
    images, masks = write_folder(tmp_path / "data", ["0", "1", "2", "10"], [(8, 12), (6, 10)] * 2)
    sub = predict(tmp_path, images, tmp_path / "sub.csv")
    assert ens("check", sub, "--data", images).exit_code == 0
    result = ens("score", sub, "--truth", masks)
    assert result.exit_code == 0 and "over 4 images" in result.output, result.output

    empty = tmp_path / "empty.csv"
    empty.write_text(sub.read_text().splitlines()[0] + "\n")
    strangers = tmp_path / "strangers.csv"
    lines = sub.read_text().splitlines()
    strangers.write_text("\n".join([lines[0], *("7" + line for line in lines[1:])]) + "\n")
    before = snapshot(tmp_path)
    result = ens("check", empty, "--data", images)
    assert result.exit_code == 1 and "file has a header but no rows" in result.output, result.output
    assert "image '10' has no rows" in result.output
    one_line_error(ens("score", empty, "--truth", masks), "header but no rows")
    one_line_error(ens("score", strangers, "--truth", masks), "id '70' is not one of the 4 images")
    assert_unchanged(before, tmp_path)


# MEDIUM: EXIF orientation


def test_jpeg_exif_orientation_is_applied_to_images(tmp_path):
    pixels = np.zeros((8, 12), np.uint8)
    pixels[:, :3] = 255  # a bright band on the left of the stored pixels
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6  # shown turned 90 degrees clockwise: the band is at the top
    (tmp_path / "images").mkdir()
    image.save(tmp_path / "images" / "turned.jpg", exif=exif.tobytes(), quality=100)
    read = read_image(tmp_path / "images" / "turned.jpg")
    assert read.shape == (12, 8)
    assert read[:3].mean() > 200 and read[4:].mean() < 50
    (tmp_path / "masks").mkdir()
    mask = Image.fromarray(np.ones((12, 8), np.uint8))
    mask.save(tmp_path / "masks" / "turned.png", exif=exif.tobytes())  # masks are read as stored
    folder = open_folder(tmp_path / "images", tmp_path / "masks")
    assert folder.sizes.tolist() == [[12, 8]]
    assert folder.read_masks([0]).shape == (1, 12, 8)


# LOW: loose integers


def test_flat_labels_and_ids_with_leading_zeros_are_refused(tmp_path):
    labels = np.array([[[1, 2, 0], [3, 4, 1]]], np.uint8)
    sub = tmp_path / "flat.csv"
    write_submission(sub, [0], labels, "flat", 5)
    header, row = sub.read_text().splitlines()
    cases = {"label": row.replace(",2,", ",02,", 1), "id": "00" + row[1:]}
    for name, bad_row in cases.items():
        bad = tmp_path / f"{name}.csv"
        bad.write_text(f"{header}\n{bad_row}\n")
        before = snapshot(tmp_path)
        result = ens("convert", bad, tmp_path / "out.csv", "--to", "rle", "--shape", "2x3")
        shown = "'02'" if name == "label" else "'00'"
        one_line_error(result, f"{name} {shown}", "leading zeros")
        assert_unchanged(before, tmp_path)


@pytest.mark.parametrize(
    "row, fragment",
    [("0,01,1 2", "key '0,01'"), (" 0,1,1 2", "id ' 0' has outer space")],
)
def test_class_column_class_and_id_written_loosely_are_refused(tmp_path, row, fragment):
    sub = tmp_path / "cc.csv"
    sub.write_text(f"ImageId,ClassId,EncodedPixels\n{row}\n")
    before = snapshot(tmp_path)
    result = ens("check", sub, "--shape", "2x3", "--rle-layout", "class-column")
    assert result.exit_code == 1 and f"line 2: {fragment}" in result.output, result.output
    result = ens(
        "convert", sub, tmp_path / "out.csv", "--to", "flat", "--shape", "2x3", "--rle-layout", "class-column"
    )
    one_line_error(result, fragment)
    assert_unchanged(before, tmp_path)


# LOW: ids that break lines or start a formula


SEPARATORS = ["\u2028", "\x85", "\x0b", "\x0c", "\x1c"]


@pytest.mark.parametrize("separator", SEPARATORS)
def test_stems_with_line_separators_are_refused(tmp_path, separator):
    images, _ = write_folder(tmp_path / "data", ["fine", f"a{separator}b"], [(4, 4)] * 2)
    sub = tmp_path / "sub.csv"
    sub.write_text("ImageId_ClassId,EncodedPixels\n")
    before = snapshot(tmp_path)
    one_line_error(ens("check", sub, "--data", images), f"U+{ord(separator):04X}", "rename the file")
    assert_unchanged(before, tmp_path)


@pytest.mark.parametrize("separator", SEPARATORS)
def test_csv_ids_with_line_separators_are_refused(tmp_path, separator):
    sub = tmp_path / "sub.csv"
    sub.write_bytes(f"ImageId_ClassId,EncodedPixels\na{separator}b_1,1 2\n".encode())
    before = snapshot(tmp_path)
    result = ens("convert", sub, tmp_path / "out.csv", "--to", "rle", "--n-classes", "2", "--shape", "2x2")
    one_line_error(result, f"U+{ord(separator):04X}", "line 2")
    assert_unchanged(before, tmp_path)


def test_formula_headers_ids_and_stems_are_refused(tmp_path):
    images, _ = write_folder(tmp_path / "data", ["=1+1"], [(4, 4)])
    sub = tmp_path / "sub.csv"
    sub.write_text("ImageId_ClassId,EncodedPixels\n@SUM(A1)_1,1 2\n")
    before = snapshot(tmp_path)
    result = ens(
        "convert", sub, tmp_path / "out.csv", "--to", "rle", "--to-rle-header", "=1+1,b", "--n-classes", "2"
    )
    one_line_error(result, "'=1+1'", "formula")
    result = ens("convert", sub, tmp_path / "out.csv", "--to", "rle", "--n-classes", "2", "--shape", "2x2")
    one_line_error(result, "'@SUM(A1)'", "formula")
    one_line_error(ens("check", sub, "--data", images), "'=1+1.png'", "formula")
    assert_unchanged(before, tmp_path)


# LOW: messages, npz names, class counts


def test_empty_validation_split_of_outliers_hints_keep_outliers(tmp_path, store):
    rng = np.random.default_rng(0)
    masks = rng.integers(0, 5, (12, 8, 12))
    masks[:6] = masks[0]  # six copies of one mask: duplicated-mask outliers
    data = write_npz(
        tmp_path / "d.npz", rng.integers(0, 256, (12, 8, 12)), masks, rng.integers(0, 256, (2, 8, 12))
    )
    ids = tmp_path / "val.txt"
    ids.write_text("1\n2\n")
    before = snapshot(tmp_path)
    result = ens(
        "predict",
        "--models-dir",
        store,
        "--data",
        data,
        "--split",
        "val",
        "--val-ids",
        ids,
        "--out",
        tmp_path / "val.csv",
    )
    line = one_line_error(result, "validation split is empty", "--keep-outliers")
    assert "--val-fraction" not in line
    assert_unchanged(before, tmp_path)


def test_npz_with_two_arrays_of_one_name_is_refused(tmp_path):
    data = write_npz(tmp_path / "d.npz", np.zeros((2, 4, 4)), np.zeros((2, 4, 4)), np.zeros((1, 4, 4)))
    with zipfile.ZipFile(data) as archive:
        first = archive.read("test_set.npy")
    other = tmp_path / "other.npz"
    np.savez(other, test_set=np.ones((3, 4, 4)))
    with zipfile.ZipFile(other) as archive:
        second = archive.read("test_set.npy")
    twice = tmp_path / "twice.npz"
    with zipfile.ZipFile(data) as source, zipfile.ZipFile(twice, "w") as target:
        target.writestr("training_set.npy", source.read("training_set.npy"))
        target.writestr("test_set.npy", first)
        with pytest.warns(UserWarning, match="Duplicate name"):
            target.writestr("test_set.npy", second)
    before = snapshot(tmp_path)
    one_line_error(ens("data", "inspect", twice), "two arrays named 'test_set'")
    assert_unchanged(before, tmp_path)


def test_class_count_comes_from_the_rows_or_the_manifest(tmp_path):
    images, masks = write_folder(tmp_path / "data", ["p", "q"], [(6, 8)] * 2, n_classes=7)
    folder = open_folder(images, masks)
    labels = folder.read_masks([0, 1])
    sub = tmp_path / "seven.csv"
    write_submission(sub, np.array(["p", "q"]), labels, "rle", 7)
    assert ens("check", sub, "--data", images).exit_code == 0
    scores = tmp_path / "scores.json"
    result = ens("score", sub, "--truth", masks, "--json", scores)
    assert result.exit_code == 0, result.output
    assert list(json.loads(scores.read_text())["per_class"]) == [str(c) for c in range(7)]

    flat_images, _ = write_folder(tmp_path / "ints", ["0", "1"], [(6, 8)] * 2, n_classes=7)
    flat = tmp_path / "flat.csv"
    write_submission(flat, [0, 1], labels, "flat", 7)
    manifest = tmp_path / "flat.manifest.json"
    manifest.write_text(
        json.dumps({"classes": [f"c{k}" for k in range(7)], "submission": {"sha256": file_sha256(flat)}})
    )
    result = ens("check", flat, "--shape", "6x8")
    assert result.exit_code == 0 and "OK: flat, 2 images" in result.output, result.output
    manifest.write_text(json.dumps({"classes": ["a", "b", "c"], "submission": {"sha256": "0" * 64}}))
    result = ens("check", flat, "--shape", "6x8")  # a manifest of other bytes is not read: 5 classes
    assert result.exit_code == 1 and "not a class index 0..4" in result.output, result.output


def test_three_class_rle_scores_three_classes(tmp_path):
    images, masks = write_folder(tmp_path / "data", ["u", "v"], [(6, 8), (5, 7)], n_classes=3)
    sub = predict(tmp_path, images, tmp_path / "sub.csv", 3)
    scores = tmp_path / "scores.json"
    result = ens("score", sub, "--truth", masks, "--json", scores)
    assert result.exit_code == 0, result.output
    assert list(json.loads(scores.read_text())["per_class"]) == ["0", "1", "2"]
