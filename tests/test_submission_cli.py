"""`ens check`, `ens convert` and `ens score CSV` end to end on tiny files: one-line errors, exit 1."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from conftest import ens

from ensemble.cli.submission_cmd import parse_shape
from ensemble.data.metrics import confusion_matrix, course_miou
from ensemble.errors import EnsError
from ensemble.submission.io import read_submission, write_submission


@pytest.fixture
def test_masks(tiny_npz):
    return np.load(tiny_npz)["test_masks"].astype(np.uint8)


@pytest.fixture
def flat_csv(tmp_path, test_masks):
    """A prediction of the tiny test set with the top two rows wrong."""
    pred = test_masks.copy()
    pred[:, :2] = (pred[:, :2] % 4) + 1
    write_submission(tmp_path / "sub.csv", np.arange(len(pred)), pred, "flat", 5)
    return tmp_path / "sub.csv"


def test_check_ok_prints_format_count_and_shape(flat_csv):
    result = ens("check", flat_csv, "--shape", "8x12", "--n-images", 6)
    assert result.exit_code == 0
    assert result.output.strip() == "OK: flat, 6 images, 8x12"


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda b: b[:-7], "line 7: the last line has no newline at its end"),
        (lambda b: b.replace(b"id,0,1,", b"ID,0,1,", 1), "line 1: header 'ID,0,1,"),
        (lambda b: re.sub(rb"\n3,\d,", b"\n3,7,", b, count=1), "line 5: label '7' in column '0'"),
    ],
)
def test_check_rejects_with_one_line_reasons(flat_csv, damage, reason):
    flat_csv.write_bytes(damage(flat_csv.read_bytes()))
    result = ens("check", flat_csv, "--shape", "8x12")
    assert result.exit_code == 1
    assert result.output.splitlines()[0].startswith(reason)
    assert "is not a valid submission" in result.output.splitlines()[-1]


def test_check_rejects_overlapping_rle_runs(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("ImageId_ClassId,EncodedPixels\n0_1,1 5\n0_2,4 2\n0_3,\n0_4,\n")
    result = ens("check", path, "--shape", "2x4")
    assert result.exit_code == 1
    assert result.output.splitlines()[0] == (
        "line 3: image 0 pixel 4 is claimed by class 1 (line 2) and class 2; a pixel can have only one class"
    )


@pytest.mark.parametrize("what", ["directory", "empty", "binary"])
def test_check_unreadable_inputs_fail_in_one_line(tmp_path, what):
    path = tmp_path if what == "directory" else tmp_path / "x.csv"
    if what != "directory":
        path.write_bytes(b"" if what == "empty" else bytes(range(256)) * 4)
    result = ens("check", path)
    assert result.exit_code == 1
    assert len(result.output.strip().splitlines()) <= 2


def test_convert_round_trips_through_rle(tmp_path, flat_csv, test_masks):
    result = ens("convert", flat_csv, tmp_path / "sub.rle.csv", "--to", "rle", "--shape", "8x12")
    assert result.exit_code == 0, result.output
    assert "6 images, flat -> rle" in result.output
    assert (
        ens(
            "convert", tmp_path / "sub.rle.csv", tmp_path / "back.csv", "--to", "flat", "--shape", "8x12"
        ).exit_code
        == 0
    )
    assert (tmp_path / "back.csv").read_bytes() == flat_csv.read_bytes()


def test_convert_refuses_an_invalid_source_and_writes_nothing(tmp_path, flat_csv):
    flat_csv.write_bytes(flat_csv.read_bytes()[:-5])
    result = ens("convert", flat_csv, tmp_path / "out.csv", "--to", "rle", "--shape", "8x12")
    assert result.exit_code == 1
    assert "is invalid: line 7" in result.output
    assert not (tmp_path / "out.csv").exists()


def test_score_test_split_matches_the_metric_and_writes_json(tmp_path, tiny_npz, flat_csv, test_masks):
    _, pred, _ = read_submission(flat_csv, (8, 12), 5)
    expected = course_miou(confusion_matrix(test_masks, pred, 5))
    result = ens("score", flat_csv, "--truth", tiny_npz, "--json", tmp_path / "s.json")
    assert result.exit_code == 0, result.output
    assert f"{expected:.4f}" in result.output
    report = json.loads((tmp_path / "s.json").read_text())
    assert report["miou"] == pytest.approx(expected)
    assert report["metric"] == "course" and report["n_images"] == 6
    assert set(report["per_class"]) == {"0", "1", "2", "3", "4"}
    assert report["per_class"]["0"] is None  # class 0 is never predicted


def test_score_val_split_uses_training_masks_of_the_ids(tmp_path, tiny_npz):
    masks = np.load(tiny_npz)["training_set"][:, 1].astype(np.uint8)
    ids = np.array([2, 5, 11])
    write_submission(tmp_path / "val.csv", ids, masks[ids], "rle", 5)
    result = ens("score", tmp_path / "val.csv", "--truth", tiny_npz, "--split", "val", "--metric", "miou")
    assert result.exit_code == 0, result.output
    assert "mIoU (miou): 1.0000 over 3 images" in result.output


@pytest.mark.parametrize(
    ("ids", "split", "reason"),
    [
        ([0, 1, 2], "test", "submission has 3 images but there are the 6 test images"),
        ([0, 1, 2, 3, 4, 6], "test", "submission id 6 is not among the 6 test images"),
        ([3, 12], "val", "submission id 12 is not among the 12 training images"),
    ],
)
def test_score_rejects_ids_outside_the_truth(tmp_path, tiny_npz, ids, split, reason):
    write_submission(tmp_path / "s.csv", ids, np.ones((len(ids), 8, 12), np.uint8), "flat", 5)
    result = ens("score", tmp_path / "s.csv", "--truth", tiny_npz, "--split", split)
    assert result.exit_code == 1
    assert reason in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_score_without_a_csv_fails_in_one_line():
    result = ens("score")
    assert result.exit_code == 1
    assert "give a submission CSV to score" in result.output


def test_score_rejects_a_csv_of_another_shape(tmp_path, tiny_npz):
    write_submission(tmp_path / "s.csv", [0], np.ones((1, 4, 4), np.uint8), "flat", 5)
    result = ens("score", tmp_path / "s.csv", "--truth", tiny_npz)
    assert result.exit_code == 1
    assert "header has 16 pixel columns, expected 96 for 8x12 images" in result.output


def test_shape_parser():
    assert parse_shape("64x128") == (64, 128)
    assert parse_shape(" 8 X 12 ") == (8, 12)
    for bad in ["64by128", "64", "0x5", "64x128x3"]:
        with pytest.raises(EnsError, match="is not HxW; give height and width like 64x128"):
            parse_shape(bad)
    assert ens("check", "x.csv", "--shape", "64by128").exit_code == 1
