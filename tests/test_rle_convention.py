"""RLE conventions of other competitions (pixel order, start, layout, header): every combination
round-trips, matches an independent reference encoder byte for byte (the default one is today's
format), and `ens check`, `ens convert`, `ens score` and `ens predict` take the same `--rle-*` options."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from conftest import assert_unchanged, ens, one_line_error, snapshot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx_members import make_member

from ensemble.errors import EnsError
from ensemble.submission.check import check_submission
from ensemble.submission.convention import DEFAULT_RLE, RleConvention
from ensemble.submission.io import SubmissionWriter, convert_submission, read_submission, write_submission
from ensemble.submission.textids import ImageIndex

COMBINATIONS = list(itertools.product(["column", "row"], [1, 0], ["per-class", "class-column"]))
CUSTOM_HEADERS = {"per-class": "id,predicted", "class-column": "id,class,predicted"}


def reference_rle(ids, labels, n_classes, rle: RleConvention = DEFAULT_RLE) -> bytes:
    """A slow, obviously right encoder: one Python loop over the pixels of every image and class."""
    lines = [",".join(rle.header)]
    for image_id, image in zip(ids, labels, strict=True):
        pixels = (image.T if rle.order == "column" else image).flatten().tolist()
        for cls in range(1, n_classes):
            runs, i = [], 0
            while i < len(pixels):
                j = i
                while j < len(pixels) and pixels[j] == pixels[i]:
                    j += 1
                if pixels[i] == cls:
                    runs += [i + rle.start, j - i]
                i = j
            key = f"{image_id}_{cls}" if rle.layout == "per-class" else f"{image_id},{cls}"
            lines.append(f"{key},{' '.join(map(str, runs))}")
    return ("\n".join(lines) + "\n").encode()


def tricky_labels(height=3, width=5, n_classes=4, seed=0):
    """Noise, an all-background image, a one-class image and a striped one."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_classes, (4, height, width)).astype(np.uint8)
    labels[1] = 0
    labels[2] = n_classes - 1
    labels[3] = np.arange(width) % n_classes
    return labels


@pytest.mark.parametrize(("order", "start", "layout"), COMBINATIONS)
@pytest.mark.parametrize("custom_header", [False, True])
def test_every_convention_matches_the_reference_and_round_trips(
    tmp_path, order, start, layout, custom_header
):
    rle = RleConvention(order, start, layout, CUSTOM_HEADERS[layout] if custom_header else None)
    labels, ids = tricky_labels(), np.array([0, 7, 12, 1000])
    path = tmp_path / "sub.csv"
    write_submission(path, ids, labels, "rle", 4, rle=rle)
    assert path.read_bytes() == reference_rle(ids, labels, 4, rle)
    assert check_submission(path, 4, (3, 5), 4, rle=rle) == []
    got_ids, got, fmt = read_submission(path, (3, 5), 4, rle=rle)
    assert fmt == "rle"
    np.testing.assert_array_equal(got_ids, ids)
    np.testing.assert_array_equal(got, labels)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    convention=st.sampled_from(COMBINATIONS),
    shape=st.sampled_from([(1, 1), (1, 9), (7, 1), (3, 5), (8, 12)]),
    n_classes=st.integers(2, 12),
    seed=st.integers(0, 2**32 - 1),
    blocky=st.booleans(),
)
def test_random_labels_round_trip_under_every_convention(
    tmp_path, convention, shape, n_classes, seed, blocky
):
    rng = np.random.default_rng(seed)
    n_images = int(rng.integers(1, 4))
    if blocky:
        labels = np.repeat(rng.integers(0, n_classes, (n_images, shape[0], 1)), shape[1], axis=2)
    else:
        labels = rng.integers(0, n_classes, (n_images, *shape))
    labels = labels.astype(np.uint8)
    ids = np.cumsum(rng.integers(1, 50, n_images))
    rle = RleConvention(*convention)
    path = tmp_path / "sub.csv"
    write_submission(path, ids, labels, "rle", n_classes, rle=rle)
    assert path.read_bytes() == reference_rle(ids, labels, n_classes, rle)
    got_ids, got, _ = read_submission(path, shape, n_classes, rle=rle)
    np.testing.assert_array_equal(got_ids, ids)
    np.testing.assert_array_equal(got, labels)


def test_default_output_is_the_course_format_on_course_sized_images(tmp_path):
    labels = np.random.default_rng(3).integers(1, 5, (20, 64, 128)).astype(np.uint8)
    labels[:, 10:30, 40:90] = 4
    ids = np.arange(100, 120)
    with SubmissionWriter(tmp_path / "sub.csv", "rle", (64, 128), 5) as writer:
        writer.write(ids[:7], labels[:7])
        writer.write(ids[7:], labels[7:])
    assert (tmp_path / "sub.csv").read_bytes() == reference_rle(ids, labels, 5)


def test_row_major_zero_indexed_numbering_on_a_small_image(tmp_path):
    labels = np.array([[[1, 1, 0], [1, 3, 0]]], np.uint8)  # row-major pixels 0..5: 1 1 0 1 3 0
    write_submission(tmp_path / "r.csv", [4], labels, "rle", 4, rle=RleConvention("row", 0, "class-column"))
    assert (tmp_path / "r.csv").read_text() == ("ImageId,ClassId,EncodedPixels\n4,1,0 2 3 1\n4,2,\n4,3,4 1\n")


def test_class_column_reader_takes_missing_rows_as_empty_classes(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text("ImageId,ClassId,EncodedPixels\n3,2,1 2\n3,4,5 2\n8,1,1 6\n")
    rle = RleConvention(layout="class-column")
    ids, labels, _ = read_submission(path, (2, 3), 5, rle=rle)
    assert ids.tolist() == [3, 8]
    assert labels.tolist() == [[[2, 0, 4], [2, 0, 4]], [[1, 1, 1], [1, 1, 1]]]
    assert [str(p) for p in check_submission(path, 3, (2, 3), 5, rle=rle)] == [
        "file has rows for 2 images, expected 3 images"
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0,1,1 2\n0,2\n", "line 3: expected 2 commas, as in `<id>,<class>,<runs>`"),
        ("0,1,1 2\n0_2,3 1\n", "line 3: expected 2 commas"),
        ("0,1,1 2\n0,x,3 1\n", "line 3: key '0,x' is not `<id>,<class>` with integers, e.g. '12,3'"),
        ("0,1,1 2\n0,5,3 1\n", "line 3: class 5 in key '0,5' is outside 1..4"),
        ("0,1,1 2\n0,1,4 1\n", "line 3: key '0,1' repeats line 2"),
        ("0,1,0 2\n0,2,1 2\n", "line 3: image 0 pixel 1 is claimed by class 1 (line 2) and class 2"),
        ("0,1,5 2\n", "line 2: run '5 2' ends past pixel 5, the last pixel of an image"),
    ],
)
def test_class_column_zero_indexed_problems(tmp_path, text, expected):
    path = tmp_path / "s.csv"
    path.write_text("ImageId,ClassId,EncodedPixels\n" + text)
    problems = [
        str(p)
        for p in check_submission(path, None, (2, 3), 5, rle=RleConvention(start=0, layout="class-column"))
    ]
    assert len(problems) == 1, problems
    assert problems[0].startswith(expected), problems


@pytest.mark.parametrize(
    ("header", "rle", "hint"),
    [
        (
            "ImageId,ClassId,EncodedPixels",
            DEFAULT_RLE,
            "looks like class-column RLE, read it with --rle-layout class-column",
        ),
        ("id,predicted", DEFAULT_RLE, "if it is per-class RLE, read it with --rle-header 'id,predicted'"),
        (
            "id,class,predicted",
            RleConvention("row", 0),
            "read it with --rle-order row --rle-start 0 --rle-layout class-column "
            "--rle-header 'id,class,predicted'",
        ),
        (
            "ImageId_ClassId,EncodedPixels",
            RleConvention(layout="class-column"),
            "looks like per-class RLE, read it with no --rle-* options",
        ),
    ],
)
def test_a_header_of_another_convention_names_the_options_that_read_it(tmp_path, header, rle, hint):
    path = tmp_path / "s.csv"
    path.write_text(header + "\n")
    (problem,) = [str(p) for p in check_submission(path, None, (2, 3), 5, rle=rle)]
    assert problem.startswith(f"line 1: header '{header}' is not a submission header")
    assert hint in problem


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"order": "diagonal"}, "RLE pixel order 'diagonal' is not one of column, row"),
        ({"start": 2}, "RLE start 2 is not one of 1, 0"),
        ({"start": True}, "RLE start True is not one of 1, 0"),
        ({"layout": "wide"}, "RLE layout 'wide' is not one of per-class, class-column"),
        ({"header": "A,B,C"}, "RLE header 'A,B,C' has 3 names; the per-class layout has 2 columns"),
        ({"layout": "class-column", "header": "A,B"}, "has 2 names; the class-column layout has 3 columns"),
        ({"header": 'A,"B"'}, "RLE header name '\"B\"' is not allowed"),
        ({"header": "A, B"}, "RLE header name ' B' is not allowed"),
        ({"header": "A,"}, "RLE header name '' is not allowed"),
        ({"header": "A,A"}, "RLE header 'A,A' repeats a name"),
    ],
)
def test_bad_conventions_are_user_errors(kwargs, match):
    with pytest.raises(EnsError, match=match):
        RleConvention(**kwargs)


def test_rle_options_on_a_flat_file_are_refused_when_writing(tmp_path):
    with pytest.raises(EnsError, match="--rle-order row apply to the rle format, not 'flat'"):
        write_submission(
            tmp_path / "s.csv", [0], np.ones((1, 2, 2), np.uint8), "flat", 5, rle=RleConvention("row")
        )
    assert not (tmp_path / "s.csv").exists()


# ---- the command line -----------------------------------------------------------------------------------

OPTIONS = {
    "column-1-per-class": [],
    "row-0-class-column": ["--rle-order", "row", "--rle-start", "0", "--rle-layout", "class-column"],
    "row-1-custom": ["--rle-order", "row", "--rle-header", "id,predicted"],
}


@pytest.fixture
def full_class_csvs(tmp_path):
    """The same labels under three conventions; image 1 is one class, so its run covers every pixel and
    a 0-based file read 1-based (or the other way) is caught."""
    labels = tricky_labels(4, 6, 5, seed=2)
    conventions = {
        "column-1-per-class": DEFAULT_RLE,
        "row-0-class-column": RleConvention("row", 0, "class-column"),
        "row-1-custom": RleConvention("row", header="id,predicted"),
    }
    labels[1] = 3
    paths = {}
    for name, rle in conventions.items():
        paths[name] = tmp_path / f"{name}.csv"
        write_submission(paths[name], np.arange(4), labels, "rle", 5, rle=rle)
    return paths, labels


@pytest.mark.parametrize("name", list(OPTIONS))
def test_check_accepts_a_file_under_its_options_and_rejects_it_under_others(full_class_csvs, name):
    paths, _ = full_class_csvs
    result = ens("check", paths[name], "--shape", "4x6", "--n-images", 4, *OPTIONS[name])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("OK: rle")
    before = snapshot(paths[name].parent)
    for other, options in OPTIONS.items():
        if other == name:
            continue
        result = ens("check", paths[name], "--shape", "4x6", *options)
        assert result.exit_code == 1, (name, other)
        lines = result.output.splitlines()
        assert len(lines) == 2 and lines[0].startswith("line ") and "error:" in lines[1], result.output
    assert_unchanged(before, paths[name].parent)


def test_check_catches_the_wrong_start_from_a_run_that_covers_the_image(full_class_csvs):
    paths, _ = full_class_csvs
    zero = ["--rle-order", "row", "--rle-layout", "class-column"]
    result = ens("check", paths["row-0-class-column"], "--shape", "4x6", *zero)
    assert result.exit_code == 1
    assert (
        "line 8: run '0 24' is not positive; starts are 1-based and lengths at least 1 "
        "(for 0-based runs pass --rle-start 0)"
    ) in result.output.splitlines()
    text = paths["row-0-class-column"].read_text().replace("1,3,0 24", "1,3,1 24")
    paths["row-0-class-column"].write_text(text)
    result = ens("check", paths["row-0-class-column"], "--shape", "4x6", *zero, "--rle-start", "0")
    assert result.output.splitlines()[0] == (
        "line 8: run '1 24' ends past pixel 23, the last pixel of an image "
        "(for 1-based runs pass --rle-start 1)"
    )


def test_check_says_ok_with_the_convention_in_words(full_class_csvs):
    paths, _ = full_class_csvs
    result = ens("check", paths["row-0-class-column"], "--shape", "4x6", *OPTIONS["row-0-class-column"])
    assert result.output.strip() == (
        "OK: rle (row-major 0-indexed class-column RLE (ImageId,ClassId,EncodedPixels)), 4 images, 4x6"
    )
    assert (
        ens("check", paths["column-1-per-class"], "--shape", "4x6").output.strip() == "OK: rle, 4 images, 4x6"
    )


@pytest.mark.parametrize("name", [n for n in OPTIONS if OPTIONS[n]])
def test_convert_to_another_convention_and_back_is_byte_identical(tmp_path, full_class_csvs, name):
    paths, labels = full_class_csvs
    original = paths["column-1-per-class"]
    to_options = [option.replace("--rle-", "--to-rle-") for option in OPTIONS[name]]
    result = ens("convert", original, tmp_path / "there.csv", "--to", "rle", "--shape", "4x6", *to_options)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "there.csv").read_bytes() == paths[name].read_bytes()
    result = ens(
        "convert",
        tmp_path / "there.csv",
        tmp_path / "back.csv",
        "--to",
        "rle",
        "--shape",
        "4x6",
        *OPTIONS[name],
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "back.csv").read_bytes() == original.read_bytes()
    write_submission(tmp_path / "flat.csv", np.arange(4), labels, "flat", 5)
    ens(
        "convert",
        tmp_path / "there.csv",
        tmp_path / "flat2.csv",
        "--to",
        "flat",
        "--shape",
        "4x6",
        *OPTIONS[name],
    )
    assert (tmp_path / "flat2.csv").read_bytes() == (tmp_path / "flat.csv").read_bytes()
    ens(
        "convert",
        tmp_path / "flat.csv",
        tmp_path / "there2.csv",
        "--to",
        "rle",
        "--shape",
        "4x6",
        *to_options,
    )
    assert (tmp_path / "there2.csv").read_bytes() == paths[name].read_bytes()


def test_convert_api_between_conventions(tmp_path, full_class_csvs):
    paths, _ = full_class_csvs
    to_rle = RleConvention("row", 0, "class-column")
    convert_submission(paths["column-1-per-class"], tmp_path / "t.csv", "rle", (4, 6), 5, to_rle=to_rle)
    assert (tmp_path / "t.csv").read_bytes() == paths["row-0-class-column"].read_bytes()


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (
            ["convert", "{csv}", "{dir}/out.csv", "--to", "flat", "--to-rle-order", "row"],
            ["--to-rle-* options describe an rle TARGET"],
        ),
        (
            ["convert", "{csv}", "{dir}/out.csv", "--to", "rle", "--to-rle-header", "A,B,C"],
            ["RLE header 'A,B,C' has 3 names"],
        ),
        (
            ["check", "{csv}", "--rle-layout", "class-column", "--rle-header", "ImageId,EncodedPixels"],
            ["has 2 names; the class-column layout has 3"],
        ),
        (["check", "{csv}", "--rle-order", "diagonal"], ["diagonal"]),
        (["score", "--val", "--rle-start", "0"], ["the --rle-* options describe a CSV to score"]),
    ],
)
def test_bad_rle_options_fail_in_one_line_and_write_nothing(
    tmp_path, tiny_npz, full_class_csvs, args, fragments
):
    paths, _ = full_class_csvs
    args = [a.format(csv=paths["column-1-per-class"], dir=tmp_path) for a in args]
    before = snapshot(tmp_path)
    result = ens(*args)
    one_line_error(result, *fragments)
    assert_unchanged(before, tmp_path)


def test_score_reads_the_csv_under_the_rle_options(tmp_path, tiny_npz):
    masks = np.load(tiny_npz)["test_masks"].astype(np.uint8)
    rle = RleConvention("row", 0, "class-column")
    write_submission(tmp_path / "s.csv", np.arange(len(masks)), masks, "rle", 5, rle=rle)
    args = ["score", tmp_path / "s.csv", "--truth", tiny_npz, "--metric", "miou"]
    result = ens(*args, *OPTIONS["row-0-class-column"])
    assert result.exit_code == 0, result.output
    assert "mIoU (miou): 1.0000 over 6 images" in result.output
    one_line_error(ens(*args), "line 1: header 'ImageId,ClassId,EncodedPixels'", "--rle-layout class-column")


def test_predict_writes_the_convention_and_records_it_in_the_manifest(tmp_path, tiny_npz):
    make_member(tmp_path / "models" / "a.onnx", seed=0)
    common = ["--data", tiny_npz, "--models-dir", tmp_path / "models", "--tta", "none"]
    assert ens("predict", *common, "--out", tmp_path / "default.csv").exit_code == 0
    options = OPTIONS["row-0-class-column"]
    result = ens("predict", *common, "--out", tmp_path / "other.csv", *options)
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "other.manifest.json").read_text())
    assert manifest["submission"]["rle"] == {
        "order": "row",
        "start": 0,
        "layout": "class-column",
        "header": ["ImageId", "ClassId", "EncodedPixels"],
    }
    default = json.loads((tmp_path / "default.manifest.json").read_text())["submission"]["rle"]
    assert default == {
        "order": "column",
        "start": 1,
        "layout": "per-class",
        "header": ["ImageId_ClassId", "EncodedPixels"],
    }
    ids, labels, _ = read_submission(tmp_path / "default.csv", (8, 12), 5)
    rle = RleConvention("row", 0, "class-column")
    assert (tmp_path / "other.csv").read_bytes() == reference_rle(ids, labels, 5, rle)
    assert ens("check", tmp_path / "other.csv", "--shape", "8x12", "--n-images", 6, *options).exit_code == 0
    before = snapshot(tmp_path)
    one_line_error(
        ens("predict", *common, "--out", tmp_path / "flat.csv", "--format", "flat", "--rle-order", "row"),
        "--rle-order row apply to the rle format, not 'flat'",
    )
    assert_unchanged(before, tmp_path)


@pytest.mark.parametrize(
    "convention",
    [RleConvention(), RleConvention("row", 0, "class-column"), RleConvention("row", 1)],
    ids=["course", "row0-class-column", "row1"],
)
def test_text_ids_of_mixed_sizes_round_trip_under_each_convention(tmp_path, convention):
    """Image-folder stems and images of two sizes are written and read back under any convention."""
    rng = np.random.default_rng(0)
    wide = rng.integers(0, 3, (2, 4, 6)).astype(np.uint8)
    tall = rng.integers(0, 3, (1, 5, 3)).astype(np.uint8)
    path = tmp_path / "mixed.csv"
    with SubmissionWriter(path, "rle", None, 3, rle=convention) as writer:
        writer.write(np.array(["a1", "a2"]), wide)
        writer.write(np.array(["b"]), tall)
    index = ImageIndex(("a1", "a2", "b"), np.array([[4, 6], [4, 6], [5, 3]]))
    ids, labels, _ = read_submission(path, None, 3, images=index, rle=convention)
    assert ids.tolist() == ["a1", "a2", "b"]
    for found, expected in zip(labels, [wide[0], wide[1], tall[0]], strict=True):
        np.testing.assert_array_equal(found, expected)
