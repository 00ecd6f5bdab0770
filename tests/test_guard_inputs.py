"""The overwrite guard knows every input a run reads: a folder of images or masks covers each file in
it (an output inside it is refused too), a member's external data, the compiled graph a predict run
may use, and the Python API's writers go through the same guard. Each refusal is one line (an
EnsError for the API) and leaves every file as it was."""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from conftest import assert_unchanged, ens, one_line_error, snapshot
from onnx_members import make_member
from test_folders import write_folder

import ensemble as api
from ensemble.errors import EnsError
from ensemble.files.outputs import refuse_overwrite
from ensemble.members.ensemblefile import EnsembleSpec, write_spec
from ensemble.members.store import resolve_members
from ensemble.submission.io import write_submission


def refused(tmp_path, *fragments, args):
    """`ens *args` fails with one line holding `fragments`, and nothing under tmp_path changed."""
    before = snapshot(tmp_path)
    line = one_line_error(ens(*args), *fragments)
    assert_unchanged(before, tmp_path)
    return line


@pytest.fixture
def rgb_store(tmp_path):
    folder = tmp_path / "models"
    make_member(folder / "a.onnx", channels=3, seed=1)
    return folder


@pytest.fixture
def folders(tmp_path):
    """Three 8x12 RGB images and their masks under tmp_path/images and tmp_path/masks."""
    return write_folder(tmp_path, [(8, 12)] * 3)


def folder_csv(tmp_path, masks):
    """An rle CSV whose rows are the masks themselves, ids the image stems."""
    from PIL import Image

    stems = sorted(p.stem for p in masks.iterdir())
    labels = np.stack([np.asarray(Image.open(masks / f"{s}.png")) for s in stems])
    write_submission(tmp_path / "sub.csv", stems, labels, "rle", 5)
    return tmp_path / "sub.csv"


# Folders as inputs


def test_score_json_over_a_mask_of_the_truth_folder(tmp_path, folders):
    _, masks = folders
    csv = folder_csv(tmp_path, masks)
    assert ens("score", csv, "--truth", masks).exit_code == 0
    refused(
        tmp_path, "--json", "--truth", "a folder the run reads",
        args=["score", csv, "--truth", masks, "--json", masks / "img_001.png"],
    )  # fmt: skip


def test_score_json_hard_linked_to_a_mask_from_outside(tmp_path, folders):
    _, masks = folders
    csv = folder_csv(tmp_path, masks)
    os.link(masks / "img_002.png", tmp_path / "scores.json")
    refused(
        tmp_path, "--json", "same file as --truth",
        args=["score", csv, "--truth", masks, "--json", tmp_path / "scores.json"],
    )  # fmt: skip


def test_predict_out_and_save_probs_inside_the_image_folder(tmp_path, folders, rgb_store):
    images, _ = folders
    base = ["predict", "--data", images, "--models-dir", rgb_store, "--format", "rle"]
    refused(tmp_path, "--out", "--data", "a folder the run reads", args=[*base, "--out", images / "sub.csv"])
    refused(
        tmp_path, "--save-probs", "--data",
        args=[*base, "--out", tmp_path / "sub.csv", "--save-probs", images / "probs.npy"],
    )  # fmt: skip


def test_predict_out_through_a_symlinked_folder_into_the_images(tmp_path, folders, rgb_store):
    images, _ = folders
    (tmp_path / "link").symlink_to(images, target_is_directory=True)
    refused(
        tmp_path, "--out", "--data",
        args=["predict", "--data", images, "--models-dir", rgb_store, "--format", "rle",
              "--out", tmp_path / "link" / "sub.csv"],
    )  # fmt: skip


def test_score_plots_inside_the_masks_folder(tmp_path, folders, rgb_store):
    images, masks = folders
    refused(
        tmp_path, "--plots", "--masks",
        args=["score", "--val", "--data", images, "--masks", masks, "--models-dir", rgb_store,
              "--val-fraction", "0.5", "--plots", masks],
    )  # fmt: skip


def test_fit_out_inside_the_masks_folder(tmp_path, folders, rgb_store):
    images, masks = folders
    refused(
        tmp_path, "--out", "--masks",
        args=["fit", "--data", images, "--masks", masks, "--models-dir", rgb_store, "--val-fraction", "0.5",
              "--folds", "0", "--out", masks / "ensemble.json"],
    )  # fmt: skip


def test_export_into_the_data_folder(tmp_path, folders):
    images, masks = folders
    (tmp_path / "net.pt").write_bytes(b"not read: the guard refuses first")
    refused(
        tmp_path, "--out-dir/--name", "--data",
        args=["export", tmp_path / "net.pt", "--factory", "tiny_nets:TinyNet", "--data", images,
              "--masks", masks, "--out-dir", images, "--name", "net"],
    )  # fmt: skip


def test_guard_covers_a_folder_and_passes_outputs_beside_it(tmp_path, folders):
    images, masks = folders
    refuse_overwrite({"--out": tmp_path / "sub.csv", "--json": tmp_path / "images.json"}, {"--data": images})
    (tmp_path / "old.csv").write_text("x")
    refuse_overwrite({"--out": tmp_path / "old.csv"}, {"--data": images, "--masks": masks})
    with pytest.raises(EnsError, match="--out .* is --data .*, a folder the run reads"):
        refuse_overwrite({"--out": images}, {"--data": images})
    with pytest.raises(EnsError, match="--out .* is inside --masks"):
        refuse_overwrite({"--out": masks / "new" / "x.csv"}, {"--masks": masks})
    outside = tmp_path / "elsewhere.png"
    os.replace(images / "img_000.png", outside)
    (images / "img_000.png").symlink_to(outside)  # a symlinked image: its target is read
    with pytest.raises(EnsError, match="--json .* is the same file as --data .*img_000.png"):
        refuse_overwrite({"--json": outside}, {"--data": images})


# External data


def with_external_data(store, name="ext", seed=3):
    """A member whose tensors live in `bias.bin` beside it."""
    path = make_member(store / f"{name}.onnx", seed=seed)
    model = onnx.load(path)
    onnx.save_model(model, path, save_as_external_data=True, location="bias.bin", size_threshold=0)
    assert (store / "bias.bin").stat().st_size > 0
    return path


def test_predict_out_over_a_members_external_data(tmp_path, tiny_npz):
    store = tmp_path / "models"
    with_external_data(store)
    assert (
        ens("predict", "--data", tiny_npz, "--models-dir", store, "--out", tmp_path / "s.csv").exit_code == 0
    )
    refused(
        tmp_path, "--out", "the external data of member 'ext'",
        args=["predict", "--data", tiny_npz, "--models-dir", store, "--out", store / "bias.bin"],
    )  # fmt: skip


def test_every_member_reading_command_guards_external_data(tmp_path, tiny_npz):
    store = tmp_path / "models"
    with_external_data(store)
    os.link(store / "bias.bin", tmp_path / "hard.json")
    data = ["--data", tiny_npz, "--models-dir", store]
    fragment = "the external data of member 'ext'"
    refused(tmp_path, "--out", fragment, args=["fit", *data, "--folds", "0", "--out", tmp_path / "hard.json"])
    refused(tmp_path, "--json", fragment, args=["score", "--val", *data, "--json", tmp_path / "hard.json"])
    member = resolve_members(["ext"], store)[0]
    write_spec(
        store / "ensemble.json", EnsembleSpec(("ext",), (member.sha256,), ((1.0,) * 5,), "none", (0,) * 5)
    )
    refused(tmp_path, "--out", fragment, args=["compile", "--models-dir", store, "--out", store / "bias.bin"])


# The compiled graph


def test_predict_out_over_the_compiled_graph(tmp_path, tiny_npz, store):
    members = resolve_members(["a", "b"], store)
    spec = EnsembleSpec(("a", "b"), tuple(m.sha256 for m in members), ((1.0,) * 5,) * 2, "none", (0,) * 5)
    write_spec(store / "ensemble.json", spec)
    assert ens("compile", "--models-dir", store).exit_code == 0
    graph = store / "compiled" / "ensemble.onnx"
    for engine in ("compiled", "auto"):
        refused(
            tmp_path, "--out", "the compiled graph",
            args=["predict", "--data", tiny_npz, "--models-dir", store, "--graph", engine, "--out", graph],
        )  # fmt: skip


# The Python API


def test_api_fit_out_over_a_member_or_its_external_data(tmp_path):
    store = tmp_path / "models"
    make_member(store / "a.onnx", seed=1)
    with_external_data(store)
    rng = np.random.default_rng(0)
    images, masks = rng.integers(0, 256, (10, 8, 12)), rng.integers(0, 5, (10, 8, 12))
    before = snapshot(tmp_path)
    for out, fragment in (
        (store / "a.onnx", "member 'a'"),
        (store / "bias.bin", "the external data of member 'ext'"),
    ):
        with pytest.raises(EnsError, match=f"out= .* is the same file as {fragment}"):
            api.fit(["a", "ext"], images, masks, tta="none", out=out, store=store)
    with pytest.raises(EnsError, match="out=? .* holds a NUL character"):
        api.fit(["a", "ext"], images, masks, tta="none", out=f"{tmp_path}/spec\0.json", store=store)
    assert_unchanged(before, tmp_path)
    api.fit(["a", "ext"], images, masks, tta="none", out=store / "ensemble.json", store=store)


def test_api_write_submission_checks_its_path_first(tmp_path):
    labels = np.ones((2, 4, 6), np.uint8)
    before = snapshot(tmp_path)
    with pytest.raises(EnsError, match="path .* holds a NUL character"):
        api.write_submission(f"{tmp_path}/sub\0.csv", [0, 1], labels, "rle", 5)
    with pytest.raises(EnsError, match="it is a folder"):
        api.write_submission(tmp_path, [0, 1], labels, "rle", 5)
    assert_unchanged(before, tmp_path)
