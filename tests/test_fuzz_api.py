"""Fuzzing the Python API's entry points: arbitrary values (None, text, floats, huge ints, bools, nested
and ragged lists, arrays of odd dtypes and shapes) in any argument give a result or an EnsError.

Each example keeps most arguments valid and swaps some for odd values, so the checks deep inside
are reached too. Derandomised and small, like tests/test_fuzz.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from onnx_members import make_member

import ensemble as api
from ensemble.errors import EnsError
from ensemble.submission.convention import DEFAULT_RLE

FUZZ = settings(
    max_examples=40,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
SHAPE = (6, 8)
DTYPES = [
    "bool", "int8", "uint8", "int16", "uint16", "int64", "uint64", "float16", "float32", "float64",
    "complex64", "<U3", "S2", "datetime64[s]", "timedelta64[ms]",
]  # fmt: skip
ARRAYS = hnp.arrays(
    st.sampled_from(DTYPES).map(np.dtype), hnp.array_shapes(min_dims=0, max_dims=5, min_side=0, max_side=4)
)
STACKS = hnp.arrays(  # near-valid image, mask and label stacks: odd dtypes, values or shapes
    st.sampled_from(DTYPES).map(np.dtype),
    st.sampled_from(
        [(3, *SHAPE), (2, *SHAPE), (3, 8, 6), (3, *SHAPE, 3), (3, 3, *SHAPE), (0, *SHAPE), (3, 0, 8)]
    ),
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-300, 300),
    st.integers(-(10**40), 10**40),
    st.just(10**400),
    st.floats(),
    st.text(max_size=8),
    st.sampled_from(["", "a", "a,b", "a=1", "flip", "course", "rle", "cpu", "4=8", "x\0y", "/", "7"]),
    st.binary(max_size=4),
    st.just(np.bool_(True)),
    st.just(np.float64(2.0)),
    st.just(np.int64(5)),
    st.just(1 + 2j),
    st.just(object()),
)
NESTED = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=4) | st.tuples(inner, inner), max_leaves=12
)
ODD = st.one_of(
    NESTED,
    ARRAYS,
    STACKS,
    st.dictionaries(st.integers(-2, 6) | st.text(max_size=2), SCALARS, max_size=3),
    st.just(np.array([None, 1], dtype=object)),
    st.just(np.zeros((1, 0, 3))),
    st.just(np.full((1, 2, 2), np.nan)),
)


def valid_or_odd(valid) -> st.SearchStrategy:
    """The valid value three times in four, else an odd one."""
    return st.one_of(st.just(valid), st.just(valid), st.just(valid), ODD)


def only_result_or_ens_error(call) -> None:
    try:
        call()
    except EnsError as error:
        assert "\n" not in str(error), str(error)


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fuzz-api")
    for seed, name in enumerate(["a", "b"]):
        make_member(root / "models" / f"{name}.onnx", seed=seed)
    rng = np.random.default_rng(0)
    api.write_submission(root / "s.csv", [0, 1], rng.integers(0, 5, (2, *SHAPE)).astype(np.uint8), "rle", 5)
    return root


@pytest.fixture(scope="module")
def model(work):
    return api.load_ensemble(["a", "b"], store=work / "models", tta="none", batch_size=4)


def images(n: int = 3) -> np.ndarray:
    return np.random.default_rng(n).integers(0, 256, (n, *SHAPE)).astype(np.uint8)


def masks(n: int = 3) -> np.ndarray:
    return np.random.default_rng(n + 1).integers(0, 5, (n, *SHAPE))


@FUZZ
@given(
    members=valid_or_odd(["a", "b"]),
    ensemble_file=st.one_of(st.none(), st.none(), st.none(), ODD),
    tta=valid_or_odd(None),
    weights=valid_or_odd(None),
    class_gain=valid_or_odd(None),
    min_area=valid_or_odd(None),
    connectivity=valid_or_odd(None),
    allow_background=valid_or_odd(False),
    batch_size=valid_or_odd(4),
    device=valid_or_odd("cpu"),
    threads=valid_or_odd(1),
    gray_to_rgb=valid_or_odd(False),
    runtime=valid_or_odd("ort"),
    workers=valid_or_odd(None),
    graph=valid_or_odd("pipeline"),
)
def test_load_ensemble_gives_an_ensemble_or_ens_error(work, **arguments):
    only_result_or_ens_error(lambda: api.load_ensemble(store=work / "models", **arguments))


@FUZZ
@given(members=ODD, store=st.one_of(st.just("models"), ODD))
def test_load_members_gives_members_or_ens_error(work, members, store):
    store = work / "models" if isinstance(store, str) and store == "models" else store
    only_result_or_ens_error(lambda: api.load_members(members, store=store))


@FUZZ
@given(ensemble=valid_or_odd("model"), pixels=valid_or_odd("images"), probabilities=valid_or_odd(False))
def test_predict_gives_labels_or_ens_error(model, ensemble, pixels, probabilities):
    ensemble = model if isinstance(ensemble, str) and ensemble == "model" else ensemble
    pixels = images() if isinstance(pixels, str) and pixels == "images" else pixels
    only_result_or_ens_error(lambda: api.predict(ensemble, pixels, probabilities=probabilities))


@settings(FUZZ, max_examples=25)
@given(
    members=valid_or_odd(["a", "b"]),
    pixels=valid_or_odd("images"),
    truth=valid_or_odd("masks"),
    tta=valid_or_odd("none"),
    fit_settings=valid_or_odd("settings"),
    weights_per=valid_or_odd("member"),
    folds=valid_or_odd(2),
    metric=valid_or_odd("course"),
    out=st.one_of(st.none(), st.none(), st.none(), ODD.filter(lambda v: not isinstance(v, str))),
    device=valid_or_odd("cpu"),
    batch_size=valid_or_odd(4),
    gray_to_rgb=valid_or_odd(False),
)
def test_fit_gives_a_spec_or_ens_error(
    work, members, pixels, truth, fit_settings, weights_per, folds, metric, **rest
):
    pixels = images() if isinstance(pixels, str) and pixels == "images" else pixels
    truth = masks() if isinstance(truth, str) and truth == "masks" else truth
    if isinstance(fit_settings, str) and fit_settings == "settings":
        fit_settings = api.FitSettings(weights_per=weights_per, folds=folds, metric=metric)
    only_result_or_ens_error(
        lambda: api.fit(members, pixels, truth, settings=fit_settings, store=work / "models", **rest)
    )


@FUZZ
@given(
    labels=valid_or_odd("labels"),
    truth=valid_or_odd("masks"),
    n_classes=valid_or_odd(5),
    metric=valid_or_odd("course"),
)
def test_score_gives_a_table_or_ens_error(labels, truth, n_classes, metric):
    labels = masks(2) if isinstance(labels, str) and labels == "labels" else labels
    truth = masks(3)[:2] if isinstance(truth, str) and truth == "masks" else truth
    only_result_or_ens_error(lambda: api.score(labels, truth, n_classes, metric))


@FUZZ
@given(
    labels=valid_or_odd("labels"),
    min_area=valid_or_odd(2),
    n_classes=valid_or_odd(None),
    connectivity=valid_or_odd(4),
    out=valid_or_odd(None),
)
def test_remove_small_regions_gives_labels_or_ens_error(labels, min_area, n_classes, connectivity, out):
    labels = masks(2).astype(np.uint8) if isinstance(labels, str) and labels == "labels" else labels
    only_result_or_ens_error(lambda: api.remove_small_regions(labels, min_area, n_classes, connectivity, out))


@FUZZ
@given(
    path=valid_or_odd("csv"),
    image_shape=valid_or_odd(SHAPE),
    n_classes=valid_or_odd(5),
    rle=valid_or_odd(DEFAULT_RLE),
    complete=valid_or_odd(True),
    images=valid_or_odd(None),
)
def test_read_submission_gives_labels_or_ens_error(work, path, image_shape, n_classes, rle, complete, images):
    path = work / "s.csv" if isinstance(path, str) and path == "csv" else path
    only_result_or_ens_error(
        lambda: api.read_submission(path, image_shape, n_classes, images, complete, rle=rle)
    )


@FUZZ
@given(
    path=valid_or_odd("csv").filter(lambda v: not isinstance(v, str) or v == "csv"),
    ids=valid_or_odd([0, 1]),
    labels=valid_or_odd("labels"),
    fmt=valid_or_odd("rle"),
    n_classes=valid_or_odd(5),
    rle=valid_or_odd(DEFAULT_RLE),
)
def test_write_submission_writes_or_gives_ens_error(work, path, ids, labels, fmt, n_classes, rle):
    path = work / "out.csv" if isinstance(path, str) and path == "csv" else path
    labels = masks(2).astype(np.uint8) if isinstance(labels, str) and labels == "labels" else labels
    only_result_or_ens_error(lambda: api.write_submission(path, ids, labels, fmt, n_classes, rle=rle))
