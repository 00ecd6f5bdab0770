"""int8 copies of members (`ens quantize`, `ens export --quantize int8`): ONNX Runtime's static QDQ
quantization keeps the member contract, and the copy is kept only when both gates pass."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import onnx
import pytest
from conftest import ens, one_line_error, write_npz
from onnx_members import make_member

from ensemble.data.datasets import open_dataset
from ensemble.data.split import SplitSpec
from ensemble.inference.runner import contract_problem
from ensemble.members.member import load_member
from ensemble.members.session import build_session
from ensemble.runtimes.int8 import QUANTIZATION_KEY, quantization_note, quantize_member
from ensemble.scoring import int8gate
from ensemble.scoring.int8gate import Int8Outcome, int8_failures, quantize_and_judge


@pytest.fixture
def data(tmp_path):
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (20, 16, 24))
    return write_npz(tmp_path / "d.npz", images, rng.integers(0, 5, (20, 16, 24)), images[:9], dtype=np.uint8)


def props(path):
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


def test_the_gates_accept_and_refuse_on_given_numbers():
    assert int8_failures(0.600, 0.5985, 1.30) == ()  # within 0.002, exactly 1.3x
    (accuracy,) = int8_failures(0.600, 0.597, 2.0)
    assert "val mIoU 0.5970 is 0.0030 below" in accuracy and "0.002" in accuracy
    (speed,) = int8_failures(0.600, 0.600, 1.29)
    assert "1.29x as fast" in speed and ">= 1.3x" in speed
    assert len(int8_failures(0.6, 0.5, 1.0)) == 2
    assert len(int8_failures(0.6, float("nan"), float("nan"))) == 2  # not a number never passes
    assert Int8Outcome(0.6, 0.6, 3.0, 2.0, 0.01, (), None).speedup == 1.5


def test_the_int8_copy_keeps_the_member_contract(tmp_path):
    member = load_member(make_member(tmp_path / "m.onnx", seed=2))
    rng = np.random.default_rng(0)
    pixels = [rng.integers(0, 256, (1, 1, 16, 24)).astype(np.float32) for _ in range(8)]
    target = tmp_path / "m_int8.onnx"
    quantize_member(member, iter(pixels), target, "8 random images")
    copy = load_member(target)
    note = quantization_note(target)
    assert copy.info == replace(member.info, quantization=note)  # the member's metadata and the note
    assert note.startswith("int8 static QDQ") and "'m'" in note and "8 random images" in note
    assert props(target)[QUANTIZATION_KEY] == note and quantization_note(member.path) is None
    model = onnx.load(str(target))
    ops = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Softmax"} <= ops
    (inp,), (out,) = model.graph.input, model.graph.output
    assert inp.type.tensor_type.elem_type == out.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    batch = rng.integers(0, 256, (3, 1, 20, 36)).astype(np.float32)  # another size: H, W stay dynamic
    probs = build_session(copy, "cpu").run(batch)
    assert probs.dtype == np.float32 and probs.shape == (3, 5, 20, 36)
    assert contract_problem(probs) is None
    reference = build_session(member, "cpu").run(batch)
    assert np.abs(probs - reference).max() < 0.2  # close to the float32 member, not identical
    result = ens("members", target)
    assert result.exit_code == 0 and "FAIL" not in result.output


def test_a_copy_failing_a_gate_is_not_written_and_force_keeps_it(tmp_path, data, monkeypatch):
    member = load_member(make_member(tmp_path / "models" / "m.onnx", seed=1))
    dataset = open_dataset(data)
    monkeypatch.setattr(int8gate, "pipeline_seconds", lambda *a, **k: (1.0, 1.0))  # 1.0x: too slow
    outcome = quantize_and_judge(member, dataset)
    assert outcome.path is None and len(outcome.failures) == 1 and "1.00x" in outcome.failures[0]
    assert abs(outcome.fp32_miou - outcome.int8_miou) <= 0.002 and outcome.max_prob_error < 0.2
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["m.onnx"]
    monkeypatch.setattr(int8gate, "pipeline_seconds", lambda *a, **k: (2.0, 1.0))
    kept = quantize_and_judge(member, dataset)
    assert kept.failures == () and kept.path == tmp_path / "models" / "m_int8.onnx"
    written = load_member(kept.path)
    assert written.info.val_miou == pytest.approx(kept.int8_miou)  # its own score, not the member's
    assert "measured by ens quantize" in props(kept.path)["ens.val_miou_from"]
    forced = quantize_and_judge(member, dataset, SplitSpec(), force=True)
    assert forced.path.exists()
    with pytest.raises(Exception, match="already an int8 copy"):
        quantize_and_judge(load_member(kept.path), dataset)


def test_ens_quantize_end_to_end(tmp_path, data):
    store = tmp_path / "models"
    make_member(store / "m.onnx", seed=1)
    (store / "x_int8.onnx").write_bytes(b"not mine")
    make_member(store / "x.onnx", seed=2)
    refused = ens("quantize", "x", "--models-dir", store, "--data", data)
    one_line_error(refused, "x_int8.onnx", "--force")
    assert (store / "x_int8.onnx").read_bytes() == b"not mine"
    (store / "x_int8.onnx").unlink()
    result = ens("quantize", "m", "--models-dir", store, "--data", data)
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "timing member 'm'" in text and "timing member 'm_int8'" in text  # runtimes chosen for both
    if "not kept" in text:  # a one-conv member is rarely 1.3x faster in int8
        assert "as fast as the float32 member" in text and not (store / "m_int8.onnx").exists()
        forced = ens("quantize", "m", "--models-dir", store, "--data", data, "--force")
        assert forced.exit_code == 0 and "wrote" in forced.output  # "--force despite" if it fails again
    assert (store / "m_int8.onnx").exists()
    listed = ens("members", "--models-dir", store)
    assert listed.exit_code == 0 and "m_int8" in listed.output
    out = tmp_path / "s.csv"
    predicted = ens("predict", "--members", "m,m_int8", "--models-dir", store, "--data", data, "--out", out)
    assert predicted.exit_code == 0, predicted.output
    manifest = json.loads(out.with_name("s.manifest.json").read_text())
    assert [m["runtime"]["how"] for m in manifest["members"]] == ["cached", "cached"]


def test_quantize_refuses_an_unknown_precision(tmp_path, data):
    result = ens("export", tmp_path / "none.pt", "--name", "n", "--quantize", "int4", "--data", data)
    one_line_error(result, "int4", "int8")


def test_export_quantize_int8_writes_or_explains(tmp_path):
    torch = pytest.importorskip("torch")
    from export_checks import images_npz
    from tiny_nets import TinyNet, trained_like

    data = images_npz(tmp_path / "d.npz", n_train=12, labelled=True)
    torch.save(trained_like(TinyNet()).state_dict(), tmp_path / "tiny.pt")
    store = tmp_path / "models"
    result = ens(
        "export", tmp_path / "tiny.pt", "--name", "tiny", "--factory", "tiny_nets:TinyNet", "--data", data,
        "--out-dir", store, "--quantize", "int8", "--force",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    int8 = store / "tiny_int8.onnx"
    if "not kept" in text:
        assert "int8 copy of 'tiny' not kept" in text and not int8.exists()
    else:
        assert f"wrote {int8}" in text and load_member(int8).info.quantization is not None
    assert "val mIoU" in text and "float32" in text
