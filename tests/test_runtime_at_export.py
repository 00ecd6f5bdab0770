"""The runtime choice made ahead of `ens predict` (at export, by `ens members --bench`), the one note of
a small run that has none, and Ray actors running the driver's per-member runtimes. Real ONNX Runtime
and OpenVINO sessions of tiny members; skipped without openvino, like tests/test_runtimes.py."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from conftest import ens, write_npz
from onnx_members import make_member

from ensemble.data.datafile import open_data
from ensemble.inference.memberbench import bench_member
from ensemble.inference.options import PredictOptions
from ensemble.inference.pipeline import open_pipeline
from ensemble.members.member import load_member
from ensemble.runs.rayengine import ShardPredictor
from ensemble.runtimes.choice import OPENVINO
from ensemble.runtimes.openvino import OpenVinoSession

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture
def store(tmp_path):
    for seed, name in enumerate(["a", "b"]):
        make_member(tmp_path / "models" / f"{name}.onnx", seed=seed)
    return tmp_path / "models"


@pytest.fixture
def data(tmp_path):
    rng = np.random.default_rng(5)
    images = rng.integers(0, 256, (8, 16, 24))
    return write_npz(
        tmp_path / "d.npz", images, rng.integers(0, 5, (8, 16, 24)), rng.integers(0, 256, (21, 16, 24))
    )


def cli_predict(tmp_path, store, data, name, *args):
    out = tmp_path / f"{name}.csv"
    result = ens("predict", "--members", "a,b", "--models-dir", store, "--data", data, "--out", out, *args)
    assert result.exit_code == 0, result.output
    return (
        out,
        json.loads(out.with_name(f"{name}.manifest.json").read_text()),
        " ".join(result.output.split()),
    )


def test_a_small_run_without_a_cached_choice_says_so_once(tmp_path, store, data):
    pytest.importorskip("openvino")
    _, manifest, output = cli_predict(tmp_path, store, data, "first")
    assert output.count("too few to time the runtimes") == 1
    assert "21 images" in output and "'a', 'b'" in output and "ens members --bench" in output
    assert [m["runtime"]["how"] for m in manifest["members"]] == ["default", "default"]
    forced = cli_predict(tmp_path, store, data, "ort", "--runtime", "ort")[2]
    assert "too few" not in forced  # nothing was going to be timed


def test_members_bench_makes_the_first_small_predict_use_the_choice(tmp_path, store, data):
    pytest.importorskip("openvino")
    result = ens("members", "--models-dir", store, "--bench", "--data", data)
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert text.count("timing member") == 2 and "a: runtime for `ens predict`:" in text
    assert "(measured;" in text and "ms per round" in text
    entries = json.loads((tmp_path.parent / os.environ["ENS_CACHE"] / "runtimes.json").read_text())
    assert sorted(e["member"] for e in entries.values()) == ["a", "b"]
    _, manifest, output = cli_predict(tmp_path, store, data, "after")
    assert "too few" not in output and "timing member" not in output
    assert [m["runtime"]["how"] for m in manifest["members"]] == ["cached", "cached"]
    again = " ".join(ens("members", "--models-dir", store, "--bench", "--data", data).output.split())
    assert "timing member" not in again and "(cached;" in again


def test_export_chooses_the_runtime_of_the_member_it_writes(tmp_path, data):
    torch = pytest.importorskip("torch")
    pytest.importorskip("openvino")
    from tiny_nets import TinyNet, trained_like

    torch.save(trained_like(TinyNet()).state_dict(), tmp_path / "tiny.pt")
    store = tmp_path / "models"
    args = (
        "export",
        tmp_path / "tiny.pt",
        "--factory",
        "tiny_nets:TinyNet",
        "--data",
        data,
        "--out-dir",
        store,
        "--force",  # the labels are random: the quality guard is not what this test is about
    )
    result = ens(*args, "--name", "a")
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "timing member 'a'" in text and "runtime for `ens predict`:" in text
    skipped = ens(*args, "--name", "b", "--no-bench")
    assert skipped.exit_code == 0 and "timing member" not in skipped.output
    out = tmp_path / "s.csv"
    predicted = ens("predict", "--members", "a", "--models-dir", store, "--data", data, "--out", out)
    assert predicted.exit_code == 0, predicted.output
    manifest = json.loads(out.with_name("s.manifest.json").read_text())
    assert manifest["members"][0]["runtime"]["how"] == "cached"
    assert bench_member(load_member(store / "a.onnx"), open_data(data)).how == "cached"


def test_a_ray_actor_runs_the_drivers_runtimes(store, data):
    pytest.importorskip("openvino")
    members = [load_member(store / f"{name}.onnx") for name in "ab"]
    options = PredictOptions(batch_size=4, device="cpu", workers=2)
    source = open_data(data)
    from ensemble.data.sources import make_source

    driver = open_pipeline(members, options, make_source(source, "test"), runtime="openvino")
    actor = ShardPredictor(
        members, options, make_source(source, "test"), None, os.getcwd(), choices=driver.choices
    )
    assert all(isinstance(r, OpenVinoSession) for r in actor.ensemble.runners)
    assert [c.runtime for c in actor.ensemble.choices] == [OPENVINO, OPENVINO]
    pixels = np.random.default_rng(0).integers(0, 256, (2, 16, 24)).astype(np.uint8)
    ids = np.arange(2)
    actor_scores = actor.ensemble.score(ids, pixels, actor.ensemble.timings).scores
    assert np.array_equal(actor_scores, driver.score(ids, pixels, driver.timings).scores)
    plain = ShardPredictor(members, options, make_source(source, "test"), None, os.getcwd())
    assert [c.runtime for c in plain.ensemble.choices] == ["onnxruntime"] * 2
