"""The ensemble in parts: a frozen description built without sessions, pure runtime choices, a
pool that takes any scoring callable, two scorers (pipeline, compiled graph) that give one result
type, and one batch loop behind the local engine, the Ray actors and the Python API."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import replace

import numpy as np
import pytest
from conftest import ens, one_line_error
from onnx_members import make_member

from ensemble import api
from ensemble.compiled.compiler import compile_ensemble
from ensemble.compiled.scorer import CompiledScorer, open_compiled
from ensemble.data.datafile import open_data
from ensemble.data.sources import make_source
from ensemble.demo.synthetic import DemoSpec, write_demo
from ensemble.errors import EnsError
from ensemble.inference import loop
from ensemble.inference.batchpool import ordered_batches, worker_layout
from ensemble.inference.description import describe_ensemble
from ensemble.inference.options import PredictOptions, resolve_options
from ensemble.inference.pipeline import PipelineScorer, open_pipeline, open_sessions
from ensemble.inference.scorer import Scored, Scorer, final_labels, unscaled
from ensemble.members.ensemblefile import EnsembleSpec, read_spec, write_spec
from ensemble.members.member import load_member
from ensemble.members.store import resolve_members
from ensemble.runs import engines
from ensemble.runs.plan import ShardPlan
from ensemble.runs.predict import PredictRequest, predict, prepare
from ensemble.runs.rayengine import ShardPredictor
from ensemble.runs.resumable import RunOptions
from ensemble.runs.rundir import run_dir
from ensemble.runtimes.choice import runtime_choices
from ensemble.submission.io import read_submission
from ensemble.timing import Timings


@pytest.fixture
def demo(tmp_path):
    """Demo data of 16x32 images and a store of two members with an ensemble file (weights, gains,
    cleanup) and its compiled graph."""
    path = tmp_path / "demo.npz"
    write_demo(path, DemoSpec(seed=3, n_train=40, n_test=21, height=16, width=32, n_aliens=0))
    store = tmp_path / "models"
    members = [load_member(make_member(store / f"{name}.onnx", seed=seed)) for seed, name in enumerate("ab")]
    spec = EnsembleSpec(
        members=("a", "b"),
        member_sha256=tuple(m.sha256 for m in members),
        weights=((0.7, 0.2, 0.5, 0.6, 0.1), (0.3, 0.8, 0.5, 0.4, 0.6)),
        tta="flip",
        min_area=(0, 3, 3, 3, 3),
        class_gain=(1.0, 1.0, 1.4, 0.8, 3.0),
    )
    write_spec(store / "ensemble.json", spec)
    compile_ensemble(store=store)
    return path, store


def options_of(store, **base) -> tuple[list, PredictOptions]:
    members = resolve_members(["a", "b"], store)
    return members, resolve_options(members, read_spec(store / "ensemble.json"), PredictOptions(**base))


def test_the_description_is_frozen_and_built_without_sessions(demo, monkeypatch):
    _, store = demo
    members, options = options_of(store)

    def no_session(*args, **kwargs):
        raise AssertionError("describing an ensemble opened a session")

    monkeypatch.setattr("ensemble.members.session.build_session", no_session)
    described = describe_ensemble(members, options)
    np.testing.assert_allclose(described.weights.sum(0), 1)  # normalised per class
    np.testing.assert_allclose(described.merge_weights, described.weights * described.class_gain[None, :])
    assert described.min_area.tolist() == [0, 3, 3, 3, 3] and [v.name for v in described.views] == [
        "identity",
        "hflip",
    ]
    with pytest.raises(dataclasses.FrozenInstanceError):
        described.min_area = np.zeros(5)  # type: ignore[misc]
    with pytest.raises(EnsError, match="no members"):
        describe_ensemble([], options)


def test_runtime_choices_leave_the_sessions_alone_and_build_the_pipeline(demo):
    data, store = demo
    members, options = options_of(store, device="cpu", workers=2, batch_size=4)
    description = describe_ensemble(members, options)
    sessions = open_sessions(description, worker_layout(options))
    runners = list(sessions.ort_runners)
    source = make_source(open_data(data), "test")
    chosen = runtime_choices(sessions, source, "ort")
    assert [c.how for c, _ in chosen] == ["requested"] * 2 and all(r is None for _, r in chosen)
    assert sessions.ort_runners == runners  # nothing replaced in place
    pipeline = PipelineScorer(sessions, chosen, timings=Timings())
    assert pipeline.runners == runners and pipeline.choices == [c for c, _ in chosen]
    assert not hasattr(pipeline, "engine") and pipeline.manifest() == {"name": "pipeline", "notes": []}


def test_the_pool_takes_any_scoring_callable(demo):
    calls = []

    def score(ids, images, timings):
        with timings("inference"):
            calls.append(len(ids))
            return images.sum(axis=(1, 2))

    batches = ((np.arange(i, i + 2), np.full((2, 3, 3), i, np.uint8)) for i in range(0, 10, 2))
    timings = Timings()
    got = list(ordered_batches(score, batches, 3, timings))
    assert [ids.tolist() for ids, _ in got] == [[i, i + 1] for i in range(0, 10, 2)]
    assert [out.tolist() for _, out in got] == [[9 * i, 9 * i] for i in range(0, 10, 2)]
    assert calls == [2] * 5 and timings.seconds["inference"] > 0  # the workers' timings added up


def test_both_scorers_give_one_result_type_and_the_same_labels(demo):
    data, store = demo
    members, options = options_of(store, device="cpu")
    graph = store / "compiled" / "ensemble.onnx"
    pipeline = open_pipeline(members, options)
    compiled = open_compiled(members, options, graph, want_scores=True)
    assert not isinstance(compiled, PipelineScorer) and isinstance(compiled, Scorer)
    assert isinstance(pipeline, Scorer)
    images = np.load(data)["test_set"][:5].astype(np.uint8)
    ids = np.arange(5)
    from_pipeline = pipeline.score(ids, images, Timings())
    from_graph = compiled.score(ids, images, Timings())
    assert isinstance(from_pipeline, Scored) and isinstance(from_graph, Scored)
    assert from_pipeline.labels is None and from_graph.labels is not None
    np.testing.assert_allclose(from_graph.scores, from_pipeline.scores, atol=1e-5)
    labels = final_labels(pipeline.description, from_pipeline, Timings())
    np.testing.assert_array_equal(final_labels(compiled.description, from_graph, Timings()), labels)
    record = compiled.manifest()
    assert (
        record["name"] == "compiled" and record["graph"] == str(graph) and len(record["graph_sha256"]) == 64
    )


def test_open_ensemble_is_what_the_cli_and_the_api_open(demo, tmp_path, monkeypatch):
    data, store = demo
    opened = []

    def recorded(*args, **kwargs):
        engine = engines.open_ensemble(*args, **kwargs)
        opened.append((kwargs["graph"], type(engine).__name__))
        return engine

    for module in ("ensemble.runs.predict", "ensemble.api"):
        monkeypatch.setattr(f"{module}.open_ensemble", recorded)
    request = PredictRequest(data=open_data(data), members="a,b", store=store, graph="compiled",
                             ensemble=store / "ensemble.json")  # fmt: skip
    engine, *_ = prepare(request)
    assert isinstance(engine, CompiledScorer)
    model = api.load_ensemble(
        ["a", "b"], ensemble_file=store / "ensemble.json", store=store, graph="pipeline"
    )
    api.predict(model, np.load(data)["test_set"][:2])
    assert opened == [("compiled", "CompiledScorer"), ("pipeline", "PipelineScorer")]
    members, options = options_of(store)
    with pytest.raises(EnsError, match="--graph compiled: the run has no ensemble file"):
        engines.open_ensemble(members, options, graph="compiled")
    one_line_error(
        ens("predict", "--data", data, "--models-dir", store, "--members", "a,b", "--graph", "compiled",
            "--out", tmp_path / "x.csv"),
        "--graph compiled", "no ensemble file",
    )  # fmt: skip


def test_one_batch_loop_behind_the_engine_the_ray_actor_and_the_api(demo, tmp_path, monkeypatch):
    data, store = demo
    seen = []
    original = loop.label_batches

    def counted(scorer, batches, sink, probs=False):
        seen.append(type(scorer).__name__)
        return original(scorer, batches, sink, probs)

    for module in ("ensemble.inference.loop", "ensemble.runs.rayengine", "ensemble.api"):
        monkeypatch.setattr(f"{module}.label_batches", counted)
    out = tmp_path / "s.csv"
    args = ("--data", data, "--models-dir", store, "--batch-size", 4, "--workers", 2, "--out", out)
    result = ens("predict", *args)
    assert result.exit_code == 0, result.output
    assert json.loads(out.with_name("s.manifest.json").read_text())["runtime"]["workers"] == 2
    _, from_cli, _ = read_submission(out, (16, 32), 5)

    model = api.load_ensemble(store=store, batch_size=4)
    labels = api.predict(model, np.load(data)["test_set"]).labels
    np.testing.assert_array_equal(labels, from_cli)

    members, options = options_of(store, batch_size=4, workers=2)
    source = make_source(open_data(data), "test")
    actor = ShardPredictor(members, options, source, ShardPlan(source.n_images, 8), os.getcwd())
    assert actor.ensemble.workers == 2  # the actor runs the local engine's worker pool
    rows = actor({"shard": np.asarray([1, 2])})
    assert rows["id"].tolist() == list(range(8, 21))
    for one_id, flat in zip(rows["id"].tolist(), rows["labels"], strict=True):
        np.testing.assert_array_equal(np.frombuffer(flat, np.uint8).reshape(16, 32), from_cli[one_id])
    assert seen == ["PipelineScorer"] * 4  # the CLI run, the API and the actor's two shards


def save_probs_request(data, store, out, engine="local", **run):
    """A validation-split prediction keeping its probabilities, in shards of 4 images."""
    ray_options = {"workers": 2, "gpus_per_worker": 0} if engine == "ray" else {}
    return PredictRequest(
        data=open_data(data),
        members="a,b",
        store=store,
        ensemble=store / "ensemble.json",
        split="val",
        out=out,
        save_probs=out.with_suffix(".probs"),
        options=PredictOptions(batch_size=3, threads=1),
        run=RunOptions(shard_size=4, engine=engine, **ray_options, **run),
    )


def test_save_probs_is_sharded_and_resumable(demo, tmp_path):
    data, store = demo
    whole = predict(save_probs_request(data, store, tmp_path / "whole.csv", keep=True))
    probs_dir = tmp_path / "whole.probs"
    ids, probs = np.load(probs_dir / "ids.npy"), np.load(probs_dir / "probs.npy")
    assert probs.dtype == np.float16 and probs.shape == (len(ids), 5, 16, 32)
    csv_ids, labels, _ = read_submission(tmp_path / "whole.csv", (16, 32), 5)
    np.testing.assert_array_equal(csv_ids, ids)
    members, options = options_of(store)
    pipeline = open_pipeline(members, options)
    source = make_source(open_data(data), "val")
    expected = np.concatenate(
        [unscaled(pipeline.description, pipeline.score(i, x, Timings())) for i, x in source.batches(5)]
    )
    np.testing.assert_allclose(probs, expected, atol=1e-3)  # the fused probabilities, gains divided out

    # a resumed run reuses every shard, probabilities included
    manifest = json.loads((tmp_path / "whole.manifest.json").read_text())
    assert manifest["run"]["shards"] == 2 and whole.reused_shards == 0
    again = predict(save_probs_request(data, store, tmp_path / "again.csv", resume=True))
    assert again.reused_shards == 2
    assert (tmp_path / "again.csv").read_bytes() == (tmp_path / "whole.csv").read_bytes()
    for name in ("ids.npy", "probs.npy"):
        assert (tmp_path / "again.probs" / name).read_bytes() == (probs_dir / name).read_bytes()

    # the same labels' run without --save-probs is another run (its shards hold no probabilities)
    plain = replace(save_probs_request(data, store, tmp_path / "plain.csv"), save_probs=None)
    assert predict(plain).reused_shards == 0
    assert (tmp_path / "plain.csv").read_bytes() == (tmp_path / "whole.csv").read_bytes()


@pytest.mark.slow
def test_save_probs_on_ray_gives_the_local_bytes(demo, tmp_path):
    pytest.importorskip("ray", reason="the ens[ray] extra is not installed")
    data, store = demo
    predict(save_probs_request(data, store, tmp_path / "local.csv"))
    predict(save_probs_request(data, store, tmp_path / "ray.csv", engine="ray"))
    assert (tmp_path / "ray.csv").read_bytes() == (tmp_path / "local.csv").read_bytes()
    for name in ("ids.npy", "probs.npy"):
        assert (tmp_path / "ray.probs" / name).read_bytes() == (tmp_path / "local.probs" / name).read_bytes()


def test_a_shard_with_other_probabilities_is_recomputed(demo, tmp_path):
    data, store = demo
    predict(save_probs_request(data, store, tmp_path / "first.csv", keep=True))
    key = json.loads((tmp_path / "first.manifest.json").read_text())["run"]["key"]
    shard = run_dir(key) / "shard-000000.npz"
    with np.load(shard) as stored:
        arrays = {name: stored[name] for name in stored.files}
    arrays["probs"] = arrays["probs"][::-1].copy()  # the other images' probabilities, same checksum
    with open(shard, "wb") as handle:
        np.savez(handle, **arrays)
    notes = []
    again = predict(save_probs_request(data, store, tmp_path / "again.csv"), on_note=notes.append)
    assert again.reused_shards == 1 and any("shard-000000.npz" in n and "recomputing" in n for n in notes)
    for name in ("ids.npy", "probs.npy"):
        assert (tmp_path / "again.probs" / name).read_bytes() == (
            tmp_path / "first.probs" / name
        ).read_bytes()
