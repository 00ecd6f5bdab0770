"""The Python API refuses what the CLI refuses: every mistake is an EnsError with a one-line message,
never a raw ValueError/TypeError/IndexError/AttributeError/MemoryError, and no class count wraps
the uint8 labels."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import ens, one_line_error, write_npz
from onnx_members import make_member

import ensemble as api
from ensemble.errors import EnsError

IMAGES = np.random.default_rng(0).integers(0, 256, (4, 8, 12)).astype(np.uint8)
MASKS = np.random.default_rng(1).integers(1, 5, (4, 8, 12))


def refused(call, *fragments: str) -> str:
    """Assert `call()` raises an EnsError whose one-line message holds every fragment."""
    with pytest.raises(EnsError) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, message
    return message


# ---- class counts the uint8 labels cannot hold ------------------------------------------------------


def test_score_refuses_a_class_count_the_labels_cannot_hold():
    # labels 257 would wrap to 1 and an all-wrong prediction would score 1.0
    wrong, truth = np.full((1, 4, 4), 257), np.ones((1, 4, 4), np.int64)
    refused(lambda: api.score(wrong, truth, 300), "n_classes 300", "2..256", "uint8")
    refused(lambda: api.score(wrong.astype(np.uint16), truth, 256), "labels must lie in 0..255")
    assert api.score(np.full((1, 4, 4), 2), truth, 256).attrs["score"] == 0.0


@pytest.mark.parametrize("n_classes", [5.5, 5.7, "5", 10**6, True, None, 1, 10**400])
def test_score_refuses_a_class_count_that_is_not_a_whole_number_in_range(n_classes):
    refused(lambda: api.score(MASKS, MASKS, n_classes), "n_classes", "2..256")


def test_a_member_with_more_classes_than_uint8_labels_is_refused_by_predict_fit_and_the_api(tmp_path):
    store = tmp_path / "models"
    make_member(store / "wide.onnx", n_classes=300)
    rng = np.random.default_rng(0)
    data = write_npz(
        tmp_path / "d.npz", rng.integers(0, 256, (6, 8, 12)), rng.integers(0, 5, (6, 8, 12)),
        rng.integers(0, 256, (2, 8, 12)),
    )  # fmt: skip
    common = ["--data", data, "--models-dir", store, "--members", "wide"]
    one_line_error(ens("predict", *common, "--out", tmp_path / "s.csv"), "class_names", "2..256")
    one_line_error(ens("fit", *common, "--cache-dir", tmp_path / "c"), "class_names", "2..256")
    refused(lambda: api.load_ensemble(["wide"], store=store), "class_names", "2..256", "uint8")
    assert not (tmp_path / "s.csv").exists() and not (store / "ensemble.json").exists()


def test_export_refuses_a_net_with_more_classes_than_uint8_labels_hold():
    from exporters.request import class_names_for

    refused(lambda: class_names_for(300, None), "300 class channels", "at most 256", "uint8")
    assert len(class_names_for(256, None)) == 256


# ---- load_ensemble / load_members ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "fragments"),
    [
        ({"members": []}, ["no members given"]),
        ({"members": 5}, ["members 5", "names"]),
        ({"members": [None]}, ["member None", "not a file path"]),
        ({"weights": "a=1"}, ["--weights gives no weight for ['b']"]),
        ({"weights": "a=1,b=x"}, ["--weights entry 'b=x'"]),
        ({"weights": [True, False]}, ["fusion weights [True, False]", "True/False"]),
        ({"weights": [1, True]}, ["True/False"]),
        ({"weights": [[1, 2], [3]]}, ["fusion weights", "not numbers"]),
        ({"class_gain": "4=x"}, ["--class-gain entry '4=x'"]),
        ({"class_gain": [1, 1, 1, 1, True]}, ["class gains", "True/False"]),
        ({"min_area": [1, 2]}, ["min_area [1, 2]", "5 non-negative areas"]),
        ({"min_area": [[1, 2], [3]]}, ["min_area", "holds [1, 2]"]),
        ({"min_area": "x"}, ["--min-area 'x'"]),
        ({"batch_size": "64"}, ["--batch-size got '64'", "whole number"]),
        ({"batch_size": 1.5}, ["--batch-size got 1.5", "whole number"]),
        ({"batch_size": 0}, ["--batch-size got '0'", "greater than or equal to 1"]),
        ({"threads": 2.5}, ["--threads got 2.5", "whole number"]),
        ({"threads": 0}, ["--threads got '0'", "greater than or equal to 1"]),
        ({"workers": 0}, ["--workers got '0'", "greater than or equal to 1"]),
        ({"workers": "2"}, ["--workers got '2'", "whole number"]),
        ({"runtime": "nope"}, ["--runtime got 'nope'", "allowed: 'auto', 'ort', 'openvino'"]),
        ({"runtime": None}, ["--runtime got None"]),
        ({"graph": "fast"}, ["--graph got 'fast'", "allowed: 'auto', 'pipeline', 'compiled'"]),
        ({"device": "tpu"}, ["--device got 'tpu'", "'auto', 'cpu', 'cuda'"]),
        ({"device": None}, ["--device got None"]),
        ({"tta": ["flip"]}, ["unknown TTA"]),
        ({"connectivity": 5}, ["connectivity must be 4 or 8"]),
        ({"connectivity": 4.0}, ["connectivity must be 4 or 8"]),
        ({"allow_background": "no"}, ["--allow-background got 'no'", "allowed: True, False"]),
        ({"ensemble_file": 7}, ["ensemble_file 7", "not a file path"]),
        ({"store": None}, ["store None"]),
    ],
)
def test_load_ensemble_refuses_each_mistake_in_one_line(store, kwargs, fragments):
    arguments = {"members": ["a", "b"], "store": store, **kwargs}
    refused(lambda: api.load_ensemble(**arguments), *fragments)


def test_load_members_refuses_an_empty_list(store):
    refused(lambda: api.load_members([], store=store), "no members given")


def test_text_settings_are_read_as_ens_predict_reads_them(store):
    text = api.load_ensemble(["a", "b"], store=store, weights="a=1,b=3", class_gain="4=2", min_area="1=3")
    numbers = api.load_ensemble(
        ["a", "b"], store=store, weights=[1, 3], class_gain=[1, 1, 1, 1, 2], min_area=[0, 3, 0, 0, 0]
    )
    np.testing.assert_array_equal(text.options.class_gain, numbers.options.class_gain)
    np.testing.assert_array_equal(text.options.min_area, numbers.options.min_area)
    np.testing.assert_array_equal(api.predict(text, IMAGES).labels, api.predict(numbers, IMAGES).labels)


# ---- predict -----------------------------------------------------------------------------------------


def test_predict_refuses_each_mistake_in_one_line(store):
    model = api.load_ensemble(["a"], store=store)
    refused(lambda: api.predict(None, IMAGES), "predict takes the ensemble of load_ensemble", "NoneType")
    refused(lambda: api.predict("models", IMAGES), "predict takes the ensemble of load_ensemble", "str")
    refused(lambda: api.predict(model, [[[1, 2], [3]]]), "images", "ragged")
    refused(lambda: api.predict(model, [[1, 2], [3]]), "images", "ragged")
    refused(lambda: api.predict(model, IMAGES, probabilities="yes"), "probabilities got 'yes'")


# ---- fit ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "fragments"),
    [
        ({"batch_size": 0}, ["--batch-size got '0'", "greater than or equal to 1"]),
        ({"batch_size": 1.5}, ["--batch-size got 1.5"]),
        ({"device": "tpu"}, ["--device got 'tpu'"]),
        ({"tta": ["flip"]}, ["unknown TTA ['flip']"]),
        ({"settings": "x"}, ["fit settings str", "FitSettings"]),
        ({"settings": api.FitSettings(folds=2.5)}, ["--folds 2.5", "not a whole number"]),
        ({"settings": api.FitSettings(metric=["course"])}, ["unknown metric"]),
        ({"settings": api.FitSettings(connectivity=6)}, ["connectivity must be 4 or 8"]),
        ({"settings": api.FitSettings(seed=-1)}, ["seed -1"]),
        ({"images": IMAGES[:0], "masks": MASKS[:0]}, ["no validation images"]),
        ({"masks": [[[1, 2], [3]]]}, ["masks", "ragged"]),
        ({"gray_to_rgb": 1}, ["--gray-to-rgb got 1", "allowed: True, False"]),
        ({"out": 3}, ["out 3", "not a file path"]),
    ],
)
def test_fit_refuses_each_mistake_in_one_line(store, kwargs, fragments):
    arguments = {"members": ["a"], "images": IMAGES, "masks": MASKS, "store": store, **kwargs}
    refused(lambda: api.fit(**arguments), *fragments)


def test_fit_on_masks_without_labelled_pixels_says_so_in_one_line(store, tmp_path):
    background = np.zeros_like(MASKS)
    settings = api.FitSettings(folds=0)
    fit = lambda: api.fit(["a", "b"], IMAGES, background, store=store, settings=settings)  # noqa: E731
    refused(fit, "no labelled pixels")
    rng = np.random.default_rng(0)
    images, test = rng.integers(0, 256, (8, 8, 12)), rng.integers(0, 256, (2, 8, 12))
    data = write_npz(tmp_path / "bg.npz", images, np.zeros((8, 8, 12)), test)
    result = ens(
        "fit", "--data", data, "--models-dir", store, "--cache-dir", tmp_path / "c", "--keep-outliers",
        "--val-fraction", "0.5", "--folds", "2",
    )  # fmt: skip
    one_line_error(result, "no labelled pixels", "class 0")
    assert not (store / "ensemble.json").exists()


def test_a_fold_whose_training_images_are_all_background_still_fits(store):
    masks = MASKS[:3].copy()
    masks[:2] = 0  # leave-one-out: the fold holding out image 2 trains on background only
    spec = api.fit(["a", "b"], IMAGES[:3], masks, store=store, settings=api.FitSettings(folds=3))
    assert np.isfinite(np.asarray(spec.weights)).all() and spec.fit["folds"] == 3


# ---- score -------------------------------------------------------------------------------------------


def test_score_refuses_each_mistake_in_one_line():
    refused(lambda: api.score([[[1, 2], [3]]], MASKS, 5), "labels", "ragged")
    refused(lambda: api.score(MASKS, MASKS, 5, ["course"]), "unknown metric")
    refused(lambda: api.score(MASKS.transpose(0, 2, 1), MASKS, 5), "labels have shape (4, 12, 8)")


# ---- read_submission / write_submission -----------------------------------------------------------


def test_read_and_write_submission_refuse_each_mistake_in_one_line(tmp_path):
    labels = MASKS[:2].astype(np.uint8)
    path = tmp_path / "s.csv"
    api.write_submission(path, [0, 1], labels, "rle", 5)
    refused(lambda: api.read_submission(path, (64.5, 128), 5), "image shape side 64.5", "whole number")
    refused(lambda: api.read_submission(path, "8x12", 5), "image shape '8x12'")
    refused(lambda: api.read_submission(path, (8, 12), 5.7), "n-classes 5.7", "whole number")
    refused(lambda: api.read_submission(None, (8, 12), 5), "submission path None")
    refused(lambda: api.read_submission(path, (8, 12), 5, rle="column"), "not an RleConvention")
    target = tmp_path / "t.csv"
    refused(lambda: api.write_submission(target, [None, 1], labels, "rle", 5), "id None", "NoneType")
    refused(lambda: api.write_submission(target, [0, 1], labels, "rle", 5.7), "n_classes 5.7")
    refused(lambda: api.write_submission(target, [0, 1], labels, "rle", 300), "n_classes 300", "2..256")
    refused(lambda: api.write_submission(target, [0, 1], labels, ["rle"], 5), "unknown submission format")
    assert not target.exists()
