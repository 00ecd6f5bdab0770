"""Submission CSVs: round trips of both formats, the pandas-identical flat writer, the atomic
streaming writer, and one hand-made file for every problem `check_submission` reports."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ensemble.errors import EnsError
from ensemble.submission.check import check_submission, parse_submission
from ensemble.submission.io import (
    SubmissionWriter,
    convert_submission,
    read_submission,
    write_submission,
)
from ensemble.submission.numtext import format_ints, scan_ints

FORMATS = ["flat", "rle"]


@st.composite
def label_maps(draw):
    """(ids, labels, n_classes): random sizes incl. 1xN / Nx1, empty classes, whole-image classes."""
    n_classes = draw(st.integers(2, 12))
    height, width = draw(st.sampled_from([(1, 1), (1, 9), (7, 1), (3, 5), (8, 12), (16, 4)]))
    n_images = draw(st.integers(1, 4))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    style = draw(st.sampled_from(["noise", "blocks", "constant", "few classes"]))
    if style == "noise":
        labels = rng.integers(0, n_classes, (n_images, height, width))
    elif style == "blocks":
        labels = np.repeat(rng.integers(0, n_classes, (n_images, height, 1)), width, axis=2)
    elif style == "constant":
        labels = np.full((n_images, height, width), draw(st.integers(0, n_classes - 1)))
    else:
        labels = rng.choice(rng.choice(n_classes, 2), (n_images, height, width))
    start = draw(st.integers(0, 10**6))
    ids = start + np.cumsum(rng.integers(1, 1000, n_images)) - 1
    return ids, labels.astype(np.uint8), n_classes


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=label_maps())
def test_both_formats_round_trip_and_convert(tmp_path, case):
    ids, labels, n_classes = case
    shape = labels.shape[1:]
    for fmt in FORMATS:
        path = tmp_path / f"sub.{fmt}.csv"
        write_submission(path, ids, labels, fmt, n_classes)
        assert check_submission(path, len(ids), shape, n_classes) == []
        got_ids, got, got_fmt = read_submission(path, shape, n_classes)
        assert got_fmt == fmt
        np.testing.assert_array_equal(got_ids, ids)
        np.testing.assert_array_equal(got, labels)
    convert_submission(tmp_path / "sub.flat.csv", tmp_path / "conv.rle.csv", "rle", shape, n_classes)
    assert (tmp_path / "conv.rle.csv").read_bytes() == (tmp_path / "sub.rle.csv").read_bytes()
    convert_submission(tmp_path / "sub.rle.csv", tmp_path / "conv.flat.csv", "flat", shape, n_classes)
    assert (tmp_path / "conv.flat.csv").read_bytes() == (tmp_path / "sub.flat.csv").read_bytes()


@pytest.mark.parametrize("n_classes", [5, 12])
def test_flat_writer_matches_pandas_byte_for_byte(tmp_path, n_classes):
    rng = np.random.default_rng(n_classes)
    labels = rng.integers(0, n_classes, (13, 4, 6)).astype(np.uint8)
    ids = np.array([0, 1, 2, 3, 9, 10, 11, 99, 100, 101, 999, 1000, 123456])
    write_submission(tmp_path / "ours.csv", ids, labels, "flat", n_classes)
    frame = pd.DataFrame(labels.reshape(len(labels), -1))
    frame.insert(0, "id", ids)
    frame.to_csv(tmp_path / "pandas.csv", index=False, lineterminator="\n")
    assert (tmp_path / "ours.csv").read_bytes() == (tmp_path / "pandas.csv").read_bytes()


def test_rle_is_column_major_one_indexed_with_empty_rows(tmp_path):
    labels = np.array([[[1, 1, 0], [1, 3, 0]]], np.uint8)  # column-major pixels: 1 1 1 3 0 0
    write_submission(tmp_path / "r.csv", [4], labels, "rle", 4)
    assert (tmp_path / "r.csv").read_text() == ("ImageId_ClassId,EncodedPixels\n4_1,1 3\n4_2,\n4_3,4 1\n")


def test_streaming_writer_batches_equal_one_call(tmp_path):
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 5, (10, 3, 4)).astype(np.uint8)
    for fmt in FORMATS:
        with SubmissionWriter(tmp_path / "streamed.csv", fmt, (3, 4), 5) as writer:
            for start in range(0, 10, 3):
                writer.write(np.arange(start, min(start + 3, 10)), labels[start : start + 3])
        assert writer.n_images == 10
        write_submission(tmp_path / "once.csv", np.arange(10), labels, fmt, 5)
        assert (tmp_path / "streamed.csv").read_bytes() == (tmp_path / "once.csv").read_bytes()


def test_failing_write_leaves_no_file_and_keeps_the_old_one(tmp_path):
    target = tmp_path / "sub.csv"
    labels = np.zeros((2, 3, 4), np.uint8)
    with pytest.raises(RuntimeError), SubmissionWriter(target, "flat", (3, 4), 5) as writer:
        writer.write([0, 1], labels)
        raise RuntimeError("prediction crashed")
    assert list(tmp_path.iterdir()) == []
    write_submission(target, [0, 1], labels, "flat", 5)
    before = target.read_bytes()
    with pytest.raises(EnsError, match="increase"), SubmissionWriter(target, "rle", (3, 4), 5) as writer:
        writer.write([0, 1], labels)
        writer.write([1, 2], labels)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["sub.csv"]


@pytest.mark.parametrize(
    ("ids", "labels", "match"),
    [
        ([0, 1], np.zeros((2, 3, 5), np.uint8), r"labels \(2, 3, 5\).*\(B, 3, 4\)"),
        ([0], np.zeros((2, 3, 4), np.uint8), r"ids \(1,\)"),
        ([0, 1], np.full((2, 3, 4), 5, np.uint8), r"labels span 5\.\.5; allowed are 0\.\.4"),
        ([0, 1], np.zeros((2, 3, 4), np.float32), "integer arrays"),
        ([-1, 0], np.zeros((2, 3, 4), np.uint8), "non-negative and increase"),
        ([3, 3], np.zeros((2, 3, 4), np.uint8), "increase"),
    ],
)
def test_writer_rejects_bad_batches(tmp_path, ids, labels, match):
    with pytest.raises(EnsError, match=match), SubmissionWriter(tmp_path / "s.csv", "flat", (3, 4), 5) as w:
        w.write(ids, labels)
    assert not (tmp_path / "s.csv").exists()


def test_unknown_format_lists_the_valid_ones(tmp_path):
    with pytest.raises(EnsError, match="choose one of flat, rle"):
        write_submission(tmp_path / "s.csv", [0], np.zeros((1, 2, 2), np.uint8), "parquet", 5)


def test_large_ids_and_values_format_and_scan_back():
    values = np.array([0, 9, 10, 99, 100, 8191, 8192, 10**12 - 1, 10**12, -1])
    terminators = np.full(values.size, ord(" "), np.uint8)
    text = format_ints(values, terminators).tobytes()
    assert text == b"0 9 10 99 100 8191 8192 999999999999 1000000000000  "
    buf = np.frombuffer(text, np.uint8)
    parsed = scan_ints(buf, buf != ord(" "))[2]
    np.testing.assert_array_equal(parsed, [*values[:-2], -1])  # 13 digits is too long


def test_crlf_line_ends_are_accepted(tmp_path):
    labels = np.arange(12, dtype=np.uint8).reshape(1, 3, 4) % 5
    for fmt in FORMATS:
        write_submission(tmp_path / "s.csv", [0], labels, fmt, 5)
        crlf = (tmp_path / "s.csv").read_bytes().replace(b"\n", b"\r\n")
        (tmp_path / "s.csv").write_bytes(crlf)
        np.testing.assert_array_equal(read_submission(tmp_path / "s.csv", (3, 4), 5)[1], labels)


# --- hand-made invalid files: (content, expected problem lines and message fragments) ---------

FLAT_HEADER = "id,0,1,2,3,4,5\n"  # images of 2x3
RLE_HEADER = "ImageId_ClassId,EncodedPixels\n"


def _problems(tmp_path, text, n_images=None, n_classes=5, limit=10):
    path = tmp_path / "sub.csv"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return [str(p) for p in check_submission(path, n_images, (2, 3), n_classes, limit)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (b"", "file is empty"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\xff", "line 1: header '\\x89PNG' is not a submission"),
        ("id;0;1;2;3;4;5\n0;1;1;1;1;1;1\n", "is not a submission header"),
        ("id,0,1,2,3\n0,1,1,1,1\n", "line 1: header has 4 pixel columns, expected 6 for 2x3 images"),
        ("id,0,1,2,4,3,5\n", "line 1: header column 5 is '4', expected '3'"),
        ("id,0,1,2", "line 1: the file ends inside the header line"),
        (FLAT_HEADER, "file has a header but no rows"),
        (FLAT_HEADER + "0,1,2,3,4,0,1\n1,1,2,3", "line 3: the last line has no newline at its end"),
        (FLAT_HEADER + "0,1,2,3,4,0\n", "line 2: row has 6 fields, expected 7 (the id and 6 labels)"),
        (FLAT_HEADER + "0,1,2,3,4,0,1,\n", "line 2: row has 8 fields"),
        (FLAT_HEADER + "0,1,2,3,4,0,1\n\n", "line 3: empty line"),
        (FLAT_HEADER + "0,1,2,3,1.0,0,1\n", "line 2: label '1.0' in column '3' is not a class index 0..4"),
        (FLAT_HEADER + "0,1,2,3,-1,0,1\n", "line 2: label '-1' in column '3'"),
        (FLAT_HEADER + "0,1,2,3,4,5,1\n", "line 2: label '5' in column '4' is not a class index 0..4"),
        (FLAT_HEADER + "0,1,2,3,4,0,12\n", "line 2: label '12' in column '5'"),
        (FLAT_HEADER + "a,1,2,3,4,0,1\n", "line 2: id 'a' is not a non-negative integer"),
        (FLAT_HEADER + "0, 1,2,3,4,0,1\n", "line 2: label ' 1' in column '0'"),
        (FLAT_HEADER + "3,0,0,0,0,0,0\n3,0,0,0,0,0,0\n", "line 3: id 3 repeats the id of line 2"),
        (FLAT_HEADER + "3,0,0,0,0,0,0\n2,0,0,0,0,0,0\n", "line 3: id 2 comes after id 3"),
    ],
)
def test_flat_problems(tmp_path, text, expected):
    problems = _problems(tmp_path, text)
    assert len(problems) == 1, problems
    assert expected in problems[0]


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        ("0_1,1 2\n0_2,3 1\n0_3,\n0_4,", "line 5: the last line has no newline"),
        ("0_1,1 2\n0-2,3 1\n0_3,\n0_4,\n", "line 3: key '0-2' is not `<id>_<class>`"),
        ("0_1,1 2\n0_2,3 1\n0_3,\n0_5,\n", "line 5: class 5 in key '0_5' is outside 1..4"),
        ("0_1,1 2\n0_2,3 1\n0_3,\n0_0,\n", "line 5: class 0 in key '0_0' is outside 1..4"),
        ("0_1,1 2\n0_2,3 1\n0_3,\n0_4,\n0_2,\n", "line 6: key '0_2' repeats line 3"),
        ("0_1,1 2\n0_2,3 1\n0_4,\n", "line 2: image 0 has no row for class 3"),
        ("0_1,1 2\n0_2,3 1 5\n0_3,\n0_4,\n", "line 3: 3 numbers do not make `start length` pairs"),
        ("0_1,1 2\n0_2,3 x\n0_3,\n0_4,\n", "line 3: runs must be space-separated non-negative integers"),
        ("0_1,1 2\n0_2,3 -1\n0_3,\n0_4,\n", "line 3: runs must be space-separated"),
        ("0_1,1 2\n0_2,3 0\n0_3,\n0_4,\n", "line 3: run '3 0' is not positive"),
        ("0_1,0 2\n0_2,3 1\n0_3,\n0_4,\n", "line 2: run '0 2' is not positive"),
        ("0_1,1 2\n0_2,5 3\n0_3,\n0_4,\n", "line 3: run '5 3' ends past pixel 6"),
        ("0_1,4 1 1 2\n0_2,\n0_3,\n0_4,\n", "line 2: run '1 2' does not start after the previous run"),
        ("0_1,1 3 2 1\n0_2,\n0_3,\n0_4,\n", "line 2: run '2 1' overlaps the previous run"),
        (
            "0_1,1 3\n0_2,3 2\n0_3,\n0_4,\n",
            "line 3: image 0 pixel 3 is claimed by class 1 (line 2) and class 2",
        ),
        ("0_1,1 2\n0_2 3 1\n0_3,\n0_4,\n", "line 3: expected one comma"),
        ("0_1,1 2\n0_2,3 1,\n0_3,\n0_4,\n", "line 3: expected one comma"),
        ("0_1,1 2\n\n0_2,\n0_3,\n0_4,\n", "line 3: empty line"),
    ],
)
def test_rle_problems(tmp_path, rows, expected):
    problems = _problems(tmp_path, RLE_HEADER + rows)
    assert len(problems) == 1, problems
    assert expected in problems[0]


def test_rle_header_typo_is_not_recognised(tmp_path):
    (problem,) = _problems(tmp_path, "ImageId_ClassId,EncodedPixel\n0_1,\n")
    assert "not a submission header" in problem


def test_quoted_rle_values_decode(tmp_path):
    text = RLE_HEADER + '0_1,"1 2"\n0_2,""\n0_3,"4 3"\n0_4,\n'
    assert _problems(tmp_path, text) == []
    _, labels, _ = read_submission(tmp_path / "sub.csv", (2, 3), 5)
    assert labels.tolist() == [[[1, 0, 3], [1, 3, 3]]]


def test_row_count_is_checked_against_n_images(tmp_path):
    flat = FLAT_HEADER + "0,0,0,0,0,0,0\n1,0,0,0,0,0,0\n"
    assert _problems(tmp_path, flat, n_images=2) == []
    assert _problems(tmp_path, flat, n_images=3) == ["file has 2 rows, expected 3 images"]
    rle = RLE_HEADER + "0_1,\n0_2,\n0_3,\n0_4,\n"
    assert _problems(tmp_path, rle, n_images=1) == []
    assert _problems(tmp_path, rle, n_images=2) == ["file has 4 rows, expected 2 images x 4 classes = 8 rows"]


def test_problems_come_sorted_by_line_and_are_capped(tmp_path):
    rows = "".join(f"{i},0,0,0,0,0,{9 if i % 2 else 0}\n" for i in range(40))
    problems = _problems(tmp_path, FLAT_HEADER + rows, n_images=41, limit=5)
    assert problems[0] == "file has 40 rows, expected 41 images"
    assert [p.split(":")[0] for p in problems[1:]] == ["line 3", "line 5", "line 7", "line 9"]
    path = tmp_path / "sub.csv"
    parsed = parse_submission(path, (2, 3), 5, n_images=41, limit=5)
    assert parsed.n_hidden == 21 - 5


def test_more_classes_make_large_labels_valid(tmp_path):
    text = FLAT_HEADER + "0,0,11,0,0,0,0\n"
    assert "not a class index 0..4" in _problems(tmp_path, text)[0]
    assert _problems(tmp_path, text, n_classes=12) == []


def test_reader_names_the_first_problem(tmp_path):
    (tmp_path / "sub.csv").write_text(FLAT_HEADER + "0,1,2,3,4,0,7\n1,1,1,1,1,1,1\n1,0,0,0,0,0,0\n")
    with pytest.raises(EnsError, match=r"line 2: label '7'.*\(and 1 more\).*ens check"):
        read_submission(tmp_path / "sub.csv", (2, 3), 5)


def test_directory_and_missing_file_are_user_errors(tmp_path):
    with pytest.raises(EnsError, match="is a directory"):
        check_submission(tmp_path, 1, (2, 3), 5)
    with pytest.raises(EnsError, match="does not exist"):
        check_submission(tmp_path / "nope.csv", 1, (2, 3), 5)
