"""Files ens writes and reads back later are checked by content before they are trusted: the compiled
graph against the sha256 sealed into it, its stamp field by field, each probability cache entry
against the sha256 written beside it, and runtimes.json as bounded, finite JSON. A changed or damaged
file is a one-line error (`--graph compiled`) or is recomputed, never a wrong answer or a traceback."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import onnx
import pytest
from conftest import assert_unchanged, ens, one_line_error, snapshot
from hypothesis import given
from hypothesis import strategies as st
from onnx import numpy_helper
from onnx_members import make_member
from test_fuzz import EDITS, FUZZ, JSON, _mutate

from ensemble.compiled.compiler import compile_ensemble
from ensemble.compiled.scorer import open_compiled
from ensemble.compiled.stamp import graph_path, read_stamp, wanted_stamp
from ensemble.data.datafile import open_data
from ensemble.data.datasets import open_dataset
from ensemble.data.sources import make_source
from ensemble.data.tta import IDENTITY
from ensemble.demo.synthetic import DemoSpec, write_demo
from ensemble.errors import EnsError
from ensemble.fitting.cache import ProbCache
from ensemble.inference.options import PredictOptions, resolve_options
from ensemble.inference.pipeline import PipelineScorer, open_pipeline
from ensemble.members.ensemblefile import EnsembleSpec, read_spec, write_spec
from ensemble.members.member import load_member
from ensemble.members.store import get_member, resolve_members
from ensemble.runtimes.measurements import cached_seconds, read_cache

STAMP_KEY, SEAL_KEY = "ens.compiled", "ens.compiled.sha256"


# ---- the compiled graph ---------------------------------------------------------------------------------


@pytest.fixture
def compiled(tmp_path, tiny_npz):
    """A store of members a and b, their ensemble file and its compiled graph."""
    store = tmp_path / "models"
    make_member(store / "a.onnx", seed=1)
    make_member(store / "b.onnx", seed=2)
    members = resolve_members(["a", "b"], store)
    spec = EnsembleSpec(
        members=("a", "b"),
        member_sha256=tuple(m.sha256 for m in members),
        weights=((0.7, 0.2, 0.5, 0.6, 0.1), (0.3, 0.8, 0.5, 0.4, 0.9)),
        tta="flip",
        min_area=(0, 2, 2, 2, 2),
    )
    write_spec(store / "ensemble.json", spec)
    result = ens("compile", "--models-dir", store)
    assert result.exit_code == 0, result.output
    return store, tiny_npz, graph_path(store / "ensemble.json")


def zero_member_weights(model: onnx.ModelProto) -> None:
    """Every member initializer zeroed: the members then give uniform probabilities."""
    for init in model.graph.initializer:
        if init.name.startswith("m"):
            init.CopyFrom(numpy_helper.from_array(np.zeros_like(numpy_helper.to_array(init)), init.name))


def constant_label(model: onnx.ModelProto) -> None:
    """Fusion weights that make class 4 win every pixel."""
    for init in model.graph.initializer:
        if init.name.startswith("weight"):
            weight = np.zeros_like(numpy_helper.to_array(init))
            weight[4] = 1e6
            init.CopyFrom(numpy_helper.from_array(weight, init.name))


def predict(store, data, out, *extra):
    return ens("predict", "--models-dir", store, "--data", data, "--out", out, "--device", "cpu", *extra)


@pytest.mark.parametrize("tamper", [zero_member_weights, constant_label])
def test_a_graph_changed_after_compile_is_refused_or_passed_over(tmp_path, compiled, tamper):
    store, data, graph = compiled
    model = onnx.load(graph)
    tamper(model)
    onnx.save(model, graph)  # its stamp and seal are kept as they were
    before = snapshot(tmp_path)
    refused = predict(store, data, tmp_path / "x.csv", "--graph", "compiled")
    one_line_error(refused, "--graph compiled", "changed after `ens compile` wrote it", "ens compile")
    assert_unchanged(before, tmp_path)

    result = predict(store, data, tmp_path / "auto.csv")  # auto: a note, and the pipeline runs
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "auto.manifest.json").read_text())
    assert manifest["graph"]["name"] == "pipeline"
    assert "changed after `ens compile` wrote it" in manifest["graph"]["notes"][0]
    assert predict(store, data, tmp_path / "pipe.csv", "--graph", "pipeline").exit_code == 0
    assert (tmp_path / "auto.csv").read_bytes() == (tmp_path / "pipe.csv").read_bytes()

    members = resolve_members(["a", "b"], store)
    options = resolve_options(members, read_spec(store / "ensemble.json"), PredictOptions(device="cpu"))
    with pytest.raises(EnsError, match="changed after `ens compile`"):  # the API opens no tampered graph
        open_compiled(members, options, graph)


def test_an_untouched_graph_still_runs_and_gives_the_pipeline_csv(tmp_path, compiled):
    store, data, _ = compiled
    for engine in ("compiled", "pipeline"):
        result = predict(store, data, tmp_path / f"{engine}.csv", "--graph", engine)
        assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "compiled.manifest.json").read_text())
    assert manifest["graph"]["name"] == "compiled"
    assert (tmp_path / "compiled.csv").read_bytes() == (tmp_path / "pipeline.csv").read_bytes()


def reseal(model: onnx.ModelProto) -> bytes:
    """The model serialised with a valid seal, as `ens compile` writes one (so the stamp is read)."""
    props = {p.key: p.value for p in model.metadata_props}
    props[SEAL_KEY] = "0" * 64
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, props)
    data = model.SerializeToString()
    blank = onnx.StringStringEntryProto(key=SEAL_KEY, value="0" * 64).SerializeToString()
    sealed = onnx.StringStringEntryProto(key=SEAL_KEY, value=hashlib.sha256(data).hexdigest())
    return data.replace(blank, sealed.SerializeToString())


def stamp_edits(stamp: dict) -> dict[str, str]:
    """The stamp's JSON text with one thing wrong, by name."""

    def field(name: str, text: str) -> str:
        return json.dumps({**stamp, name: 0}).replace(f'"{name}": 0', f'"{name}": {text}')

    return {
        "a JSON string": json.dumps("ens-compiled/1"),
        "a number": "7",
        "member_sha256 a number": field("member_sha256", "5"),
        "one member_sha256 short": field("member_sha256", json.dumps(stamp["member_sha256"][:1])),
        "members a string": field("members", '"ab"'),
        "weights of text": field("weights", json.dumps([["x"] * 5] * 2)),
        "channels true": field("channels", "true"),
        "channels 10**400": field("channels", "1" + "0" * 400),
        "tta nested 100k deep": field("tta", "[" * 100_000 + "]" * 100_000),
    }


STAMP_EDITS = list(stamp_edits({"member_sha256": []}))


@pytest.mark.parametrize("edit", STAMP_EDITS)
def test_a_stamp_that_is_not_an_object_of_its_fields_is_one_line(tmp_path, compiled, edit):
    store, data, graph = compiled
    model = onnx.load(graph)
    props = {p.key: p.value for p in model.metadata_props}
    props[STAMP_KEY] = stamp_edits(json.loads(props[STAMP_KEY]))[edit]
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, props)
    graph.write_bytes(reseal(model))
    before = snapshot(tmp_path)
    refused = predict(store, data, tmp_path / "x.csv", "--graph", "compiled")
    line = one_line_error(refused, "--graph compiled", "not a compiled ensemble graph", "ens compile")
    assert len(line) < 500
    assert_unchanged(before, tmp_path)
    result = predict(store, data, tmp_path / "auto.csv")
    assert result.exit_code == 0 and "not a compiled ensemble graph" in result.output, result.output


# ---- the probability cache ------------------------------------------------------------------------------


@pytest.fixture
def demo(tmp_path):
    path = tmp_path / "demo.npz"
    write_demo(path, DemoSpec(seed=3, n_train=40, n_test=12, height=16, width=32, n_aliens=0))
    return path


@pytest.fixture
def members(tmp_path):
    for seed, name in enumerate("ab"):
        make_member(tmp_path / "models" / f"{name}.onnx", seed=seed + 10)
    return tmp_path / "models"


def cache_args(demo, store, tmp_path):
    return ["--data", demo, "--models-dir", store, "--cache-dir", tmp_path / "cache", "--val-fraction", "0.5",
            "--tta", "none"]  # fmt: skip


def overwrite_with_one_class(entry) -> None:
    """Finite float16 probabilities of the right shape: class 1 everywhere."""
    array = np.load(entry)
    fake = np.zeros_like(array)
    fake[:, 1] = 1
    np.save(entry, fake)


def damage_hash(entry, kind: str) -> None:
    sidecar = entry.with_suffix(".json")
    if kind == "entry overwritten":
        overwrite_with_one_class(entry)
    elif kind == "hash missing":
        sidecar.unlink()
    elif kind == "hash deeply nested":
        sidecar.write_text("[" * 200_000)
    elif kind == "hash a string":
        sidecar.write_text(json.dumps(hashlib.sha256(entry.read_bytes()).hexdigest()))
    else:  # another entry's hash
        sidecar.write_text(json.dumps({"sha256": hashlib.sha256(b"other").hexdigest()}))


KINDS = ["entry overwritten", "hash missing", "hash deeply nested", "hash a string", "hash of another"]


@pytest.mark.parametrize("kind", KINDS)
def test_score_recomputes_an_entry_whose_content_changed(tmp_path, demo, members, kind):
    args = (*cache_args(demo, members, tmp_path), "--members", "a,b")
    first = ens("score", "--val", *args, "--json", tmp_path / "first.json")
    assert first.exit_code == 0, first.output
    entry = sorted((tmp_path / "cache").glob("a-*.npy"))[0]
    clean = entry.read_bytes()
    damage_hash(entry, kind)
    again = ens("score", "--val", *args, "--json", tmp_path / "again.json")
    assert again.exit_code == 0, again.output
    assert again.output.count(entry.name) == 1 and "recomputing" in again.output, again.output
    rows = [json.loads((tmp_path / f"{name}.json").read_text())["rows"] for name in ("first", "again")]
    assert [r["miou"] for r in rows[1]] == [r["miou"] for r in rows[0]]
    assert entry.read_bytes() == clean
    third = ens("score", "--val", *args, "--json", tmp_path / "third.json")
    assert third.exit_code == 0 and "recomputing" not in third.output, third.output


def test_fit_recomputes_an_overwritten_entry(tmp_path, demo, members):
    args = (*cache_args(demo, members, tmp_path), "--folds", "0")
    assert ens("fit", *args).exit_code == 0
    spec = (members / "ensemble.json").read_bytes()
    for entry in sorted((tmp_path / "cache").glob("*.npy")):
        overwrite_with_one_class(entry)
    result = ens("fit", *args)
    assert result.exit_code == 0, result.output
    assert result.output.count("recomputing") == 2, result.output
    assert (members / "ensemble.json").read_bytes() == spec


# ---- runtimes.json ----------------------------------------------------------------------------------------


@pytest.fixture
def timed(tmp_path):
    pytest.importorskip("openvino")
    store = tmp_path / "models"
    for seed, name in enumerate("ab"):
        make_member(store / f"{name}.onnx", seed=seed)
    rng = np.random.default_rng(5)
    path = tmp_path / "data.npz"
    np.savez(
        path, training_set=np.zeros((2, 2, 16, 24)), test_set=rng.integers(0, 256, (9, 16, 24)).astype(float)
    )
    return store, make_source(open_dataset(path), "test")


def ensemble_of(store, source, cache) -> PipelineScorer:
    """Members a and b, their runtimes chosen (timed, with `cache`) on `source`."""
    members = [load_member(store / f"{name}.onnx") for name in "ab"]
    options = PredictOptions(batch_size=8, device="cpu", workers=2)
    return open_pipeline(members, options, source, runtime="auto", cache=cache, min_images=0)


@pytest.mark.parametrize("damage", ["nested", "huge seconds"])
def test_a_damaged_runtimes_json_is_measured_again(tmp_path, timed, damage):
    store, source = timed
    cache = tmp_path / "runtimes.json"
    ensemble_of(store, source, cache)
    entries = json.loads(cache.read_text())
    if damage == "nested":
        cache.write_text("[" * 200_000 + "]" * 200_000)
    else:  # 10**400 seconds: an integer no float holds
        huge = {
            key: {"member": e["member"], "seconds": dict.fromkeys(e["seconds"], 0)}
            for key, e in entries.items()
        }
        cache.write_text(json.dumps(huge).replace(": 0", ": 1" + "0" * 400))
    again = ensemble_of(store, source, cache)
    assert [c.how for c in again.choices] == ["measured"] * 2
    assert json.loads(cache.read_text()).keys() == entries.keys()


# ---- fuzzing the three readers ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fuzz_graph(tmp_path_factory):
    """A compiled graph of two tiny members, its model and the stamp a run of them wants."""
    root = tmp_path_factory.mktemp("fuzz-graph")
    store = root / "models"
    make_member(store / "a.onnx", seed=1)
    make_member(store / "b.onnx", seed=2)
    members = resolve_members(["a", "b"], store)
    hashes = tuple(m.sha256 for m in members)
    spec = EnsembleSpec(("a", "b"), hashes, ((1.0,) * 5, (0.5,) * 5), "flip", (0,) * 5)
    write_spec(store / "ensemble.json", spec)
    path = compile_ensemble(store=store).path
    wanted = wanted_stamp(members, resolve_options(members, spec), store / "ensemble.json")
    return path, path.read_bytes(), wanted


def _check_graph(path, wanted) -> None:
    try:
        stamp = read_stamp(path)
        assert isinstance(stamp.mismatch(wanted), str | None)
    except EnsError as exc:
        assert "\n" not in str(exc)


@FUZZ
@given(edits=EDITS)
def test_compiled_graph_reader_gives_a_stamp_or_ens_error(fuzz_graph, edits):
    path, raw, wanted = fuzz_graph
    mutated = _mutate(raw, edits)
    path.write_bytes(mutated)
    try:
        _check_graph(path, wanted)
        if mutated != raw:  # any change to the bytes breaks the seal
            with pytest.raises(EnsError):
                read_stamp(path)
    finally:
        path.write_bytes(raw)


@FUZZ
@given(
    field=st.sampled_from(["format", "ensemble_sha256", "members", "member_sha256", "tta", "weights",
                           "class_gain", "allow_background", "channels", "other"]),
    value=JSON,
    text=st.one_of(st.none(), st.text(max_size=40)),
)  # fmt: skip
def test_compiled_stamp_reader_gives_a_stamp_or_ens_error(fuzz_graph, field, value, text):
    path, raw, wanted = fuzz_graph
    model = onnx.load_model_from_string(raw)
    props = {p.key: p.value for p in model.metadata_props}
    if text is None:
        stamp = json.loads(props[STAMP_KEY])
        stamp[field] = value
        text = json.dumps(stamp)
    props[STAMP_KEY] = text
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, props)
    path.write_bytes(reseal(model))
    try:
        _check_graph(path, wanted)
    finally:
        path.write_bytes(raw)


@pytest.fixture(scope="module")
def fuzz_cache(tmp_path_factory):
    """A probability cache holding one entry of a tiny member, its bytes and its hash file's."""
    root = tmp_path_factory.mktemp("fuzz-cache")
    write_demo(root / "demo.npz", DemoSpec(seed=3, n_train=8, n_test=2, height=8, width=16, n_aliens=0))
    make_member(root / "models" / "a.onnx", seed=3)
    source = make_source(open_data(root / "demo.npz"), "val")
    member = get_member("a", root / "models")
    cache = ProbCache(source, root / "cache")
    clean = np.array(cache.get(member, IDENTITY))
    entry = cache.path(member, IDENTITY)
    return source, member, entry, entry.read_bytes(), entry.with_suffix(".json").read_bytes(), clean


@FUZZ
@given(which=st.sampled_from(["entry", "hash", "both"]), edits=EDITS, text=st.one_of(st.none(), JSON))
def test_probability_cache_reader_gives_the_entry_or_a_recompute(fuzz_cache, which, edits, text):
    source, member, entry, raw, hash_raw, clean = fuzz_cache
    sidecar = entry.with_suffix(".json")
    if which in ("entry", "both"):
        entry.write_bytes(_mutate(raw, edits))
    if which in ("hash", "both"):
        sidecar.write_bytes(_mutate(hash_raw, edits) if text is None else json.dumps(text).encode())
    said: list[str] = []
    cache = ProbCache(source, entry.parent, warn=said.append)
    np.testing.assert_array_equal(cache.get(member, IDENTITY), clean)
    assert len(said) == len(cache.computed) <= 1 and all("\n" not in line for line in said)
    assert entry.read_bytes() == raw and sidecar.read_bytes() == hash_raw


@FUZZ
@given(
    content=st.one_of(
        st.binary(max_size=60),
        JSON.map(lambda v: json.dumps(v).encode()),
        JSON.map(lambda v: json.dumps({"k": {"seconds": v}}).encode()),
        st.sampled_from(
            [b"[" * 100_000, b'{"k": {"seconds": {"ort": 1' + b"0" * 400 + b"}}}", b'{"k": 1e999}']
        ),
    )
)
def test_runtimes_json_reader_gives_entries_or_measures_again(tmp_path_factory, content):
    path = tmp_path_factory.getbasetemp() / "runtimes.json"
    path.write_bytes(content)
    entries = read_cache(path)
    assert isinstance(entries, dict)
    for entry in entries.values():
        seconds = cached_seconds(entry, ["ort"])
        assert seconds is None or all(0 < s < float("inf") for s in seconds.values())
