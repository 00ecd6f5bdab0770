"""Fuzzing the readers of user files and option text: every input gives a result or an EnsError.

Byte mutations (truncations, flipped bits, overwritten runs, edited npy headers) of small valid
files, and arbitrary JSON or text for the ensemble file and the option parsers. Derandomised and
small, so the default suite stays fast and stable.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx_members import make_member

from ensemble.data.datafile import open_data
from ensemble.data.split import SplitSpec, read_ids_file
from ensemble.data.summary import inspect_data
from ensemble.errors import EnsError
from ensemble.inference.cleanup import min_area_array, parse_min_area
from ensemble.inference.fusion import gain_array, normalise_weights, parse_class_gain, parse_weights
from ensemble.members.ensemblefile import EnsembleSpec, read_spec
from ensemble.members.store import get_member
from ensemble.runs.predict import PredictRequest, request_options
from ensemble.submission.check import check_submission
from ensemble.submission.convention import DEFAULT_RLE, RleConvention
from ensemble.submission.io import read_submission, write_submission

FUZZ = settings(
    max_examples=60,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
SHAPE, N_CLASSES = (4, 6), 5


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def _mutate(raw: bytes, edits) -> bytes:
    data = bytearray(raw)
    for kind, where, value in edits:
        if not data:
            break
        pos = where % len(data)
        if kind == "truncate":
            del data[pos:]
        elif kind == "flip":
            data[pos] ^= 1 << (value % 8)
        elif kind == "overwrite":
            data[pos : pos + len(value)] = value
        elif kind == "insert":
            data[pos:pos] = value
        else:  # delete
            del data[pos : pos + 1 + len(value)]
    return bytes(data)


EDITS = st.lists(
    st.one_of(
        st.tuples(st.just("truncate"), st.integers(0, 10**6), st.just(b"")),
        st.tuples(st.just("flip"), st.integers(0, 10**6), st.integers(0, 7)),
        st.tuples(
            st.sampled_from(["overwrite", "insert", "delete"]),
            st.integers(0, 10**6),
            st.binary(min_size=1, max_size=8),
        ),
    ),
    min_size=1,
    max_size=3,
)


# ---- npz ----------------------------------------------------------------------------------------------


def _npy(array: np.ndarray, header_edit: tuple[str, str] | None = None) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array)
    raw = buffer.getvalue()
    if header_edit is None:
        return raw
    length = int.from_bytes(raw[8:10], "little")
    header = raw[10 : 10 + length].decode("latin1").replace(*header_edit, 1).encode("latin1")
    return raw[:8] + len(header).to_bytes(2, "little") + header + raw[10 + length :]


def _npz(compression: int, header_edit=None) -> bytes:
    rng = np.random.default_rng(0)
    train = np.stack([rng.integers(0, 256, (5, *SHAPE)), rng.integers(0, 5, (5, *SHAPE))], 1).astype(float)
    test = rng.integers(0, 256, (3, *SHAPE)).astype(np.uint8)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        archive.writestr("training_set.npy", _npy(train, header_edit))
        archive.writestr("test_set.npy", _npy(test))
        archive.writestr("test_masks.npy", _npy(rng.integers(0, 5, (3, *SHAPE)).astype(np.int64)))
    return buffer.getvalue()


HEADER_EDITS = st.one_of(
    st.none(),
    st.tuples(st.just("(5, 2, 4, 6)"), st.sampled_from(["(5, 2, 4)", "(10000000, 2, 4, 6)", "(-5, 2, 4, 6)",
                                                         "(5, 2, 4, 6, 1)", "()", "(5, 2, 99999999999, 6)"])),
    st.tuples(st.just("<f8"), st.sampled_from(["<f4", "|b1", "<c16", "|O", "<U3", "V8", "xx", "<f8', (2,)"])),
    st.tuples(st.just("False"), st.sampled_from(["True", "1", "None"])),
    st.tuples(st.just("'descr'"), st.sampled_from(["'desc'", "'descr' : 1, 'x'"])),
)  # fmt: skip


def _read_everything(path: Path) -> None:
    data = open_data(path)
    data.load_train(N_CLASSES)
    if data.has_test:
        data.load_test_images()
    if data.has_test_masks:
        data.load_test_masks(N_CLASSES)
    inspect_data(path)


@FUZZ
@given(
    compression=st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]),
    header_edit=HEADER_EDITS,
    edits=st.one_of(st.just([]), EDITS),
)
def test_npz_reader_gives_arrays_or_ens_error(work, compression, header_edit, edits):
    path = work / "fuzz.npz"
    path.write_bytes(_mutate(_npz(compression, header_edit), edits))
    try:
        _read_everything(path)
    except EnsError as exc:
        assert "\n" not in str(exc)


def test_npz_reader_reads_the_unmutated_file(work):
    for compression in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        path = work / "valid.npz"
        path.write_bytes(_npz(compression))
        _read_everything(path)
        assert open_data(path).load_test_images().shape == (3, *SHAPE)


# ---- submission CSVs ----------------------------------------------------------------------------------


CSV_KINDS = {
    "flat": ("flat", DEFAULT_RLE),
    "rle": ("rle", DEFAULT_RLE),
    "rle row 0 class-column": ("rle", RleConvention("row", 0, "class-column")),
    "rle custom header": ("rle", RleConvention(start=0, header="id,predicted")),
}


@pytest.fixture(scope="module")
def csvs(work) -> dict[str, bytes]:
    labels = np.random.default_rng(1).integers(0, N_CLASSES, (3, *SHAPE)).astype(np.uint8)
    out = {}
    for kind, (fmt, rle) in CSV_KINDS.items():
        path = work / "valid.csv"
        write_submission(path, np.arange(3), labels, fmt, N_CLASSES, rle=rle)
        out[kind] = path.read_bytes()
    return out


@FUZZ
@given(kind=st.sampled_from(list(CSV_KINDS)), edits=EDITS, n_images=st.sampled_from([None, 0, 3]))
def test_csv_readers_give_labels_problems_or_ens_error(work, csvs, kind, edits, n_images):
    path = work / "fuzz.csv"
    path.write_bytes(_mutate(csvs[kind], edits))
    rle = CSV_KINDS[kind][1]
    try:
        ids, labels, _ = read_submission(path, SHAPE, N_CLASSES, rle=rle)
        assert labels.shape == (len(ids), *SHAPE) and (labels < N_CLASSES).all()
    except EnsError as exc:
        assert "\n" not in str(exc)
    problems = check_submission(path, n_images, SHAPE, N_CLASSES, rle=rle)
    assert all(isinstance(str(p), str) for p in problems)


# ---- the ensemble file --------------------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=8), children, max_size=6)
    ),
    max_leaves=20,
)


@pytest.fixture(scope="module")
def members(work):
    for seed, name in enumerate("abc"):
        make_member(work / "models" / f"{name}.onnx", seed=seed)
    return [get_member(name, work / "models") for name in "abc"]


def _valid_spec(members) -> dict:
    spec = EnsembleSpec(
        members=tuple(m.name for m in members),
        member_sha256=tuple(m.sha256 for m in members),
        weights=((0.5,) * 5, (0.3,) * 5, (0.2,) * 5),
        tta="flip",
        min_area=(0, 6, 6, 6, 6),
        class_gain=(1.0,) * 5,
        fit={"folds": 5},
    )
    return json.loads(spec.to_json())


def _use_spec(path: Path, members) -> None:
    """Read the file and resolve it into prediction settings as `ens predict` does (no sessions)."""
    spec = read_spec(path)
    request = PredictRequest(data=None)  # type: ignore[arg-type]  # data is not read by request_options
    if list(spec.members) != [m.name for m in members] or len(spec.min_area) != N_CLASSES:
        return
    options = request_options(request, members, spec)
    normalise_weights(options.weights, len(members), N_CLASSES)
    gain_array(options.class_gain, N_CLASSES)
    min_area_array(options.min_area, N_CLASSES)


@FUZZ
@given(
    field=st.sampled_from(["format", "members", "member_sha256", "weights", "tta", "min_area", "class_gain",
                           "connectivity", "metric", "fit", "other"]),
    value=JSON,
    text=st.one_of(st.none(), st.text(max_size=40), st.binary(max_size=40)),
)  # fmt: skip
def test_ensemble_file_reader_gives_a_spec_or_ens_error(work, members, field, value, text):
    path = work / "fuzz.json"
    if text is None:
        raw = _valid_spec(members)
        raw[field] = value
        path.write_text(json.dumps(raw))
    elif isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    try:
        _use_spec(path, members)
    except EnsError as exc:
        assert "\n" not in str(exc)


# ---- option parsers -----------------------------------------------------------------------------------

PIECES = st.sampled_from(["a", "b", "c", "1", "4", "0", "=", ",", " ", "-", ".", "e", "1e308", "nan", "inf",
                          "²", "١", "_", "99999999999999999999", "+", "\n", "x", "0.5"])  # fmt: skip
OPTION_TEXT = st.one_of(st.text(max_size=30), st.lists(PIECES, max_size=12).map("".join))


@FUZZ
@given(text=OPTION_TEXT)
def test_option_parsers_give_values_or_ens_error(text):
    for parse, check in (
        (lambda t: parse_weights(t, ["a", "b", "c"]), lambda w: normalise_weights(w, 3, N_CLASSES)),
        (lambda t: parse_min_area(t, N_CLASSES), lambda a: min_area_array(a, N_CLASSES)),
        (lambda t: parse_class_gain(t, N_CLASSES), lambda g: gain_array(g, N_CLASSES)),
    ):
        try:
            check(parse(text))
        except EnsError as exc:
            assert "\n" not in str(exc)


@FUZZ
@given(content=st.one_of(st.binary(max_size=40), OPTION_TEXT.map(str.encode)))
def test_val_ids_files_give_a_split_or_ens_error(work, content):
    path = work / "ids.txt"
    path.write_bytes(content)
    try:
        split = SplitSpec(val_ids=read_ids_file(path)).resolve(20)
        assert set(split.val) <= set(range(20))
    except EnsError as exc:
        assert "\n" not in str(exc)
