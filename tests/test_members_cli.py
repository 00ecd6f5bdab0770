"""`ens members`: the store as a table, and one-line errors for files that are not members."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from conftest import ens
from onnx_members import make_member
from tiny_nets import TinyNet, trained_like

from exporters import ExportRequest, Normalisation, export_member


def test_lists_exported_and_hand_made_members(tmp_path):
    store = tmp_path / "models"
    make_member(store / "handmade.onnx", seed=1)
    torch.save(trained_like(TinyNet()).state_dict(), tmp_path / "net.pt")
    request = ExportRequest(tmp_path / "net.pt", "exported", factory="tiny_nets:TinyNet", out_dir=store,
                            normalisation=Normalisation("0-1"), val_miou=0.6125)  # fmt: skip
    export_member(request, default_data=tmp_path / "absent.npz")
    result = ens("members", "--models-dir", store)
    assert result.exit_code == 0, result.output
    rows = {line.split("│")[1].strip(): line for line in result.output.splitlines() if line.count("│") > 5}
    assert set(rows) == {"exported", "handmade"}
    assert "torch" in rows["exported"] and "0.6125" in rows["exported"] and "x/255" in rows["exported"]
    assert "onnx" in rows["handmade"] and "HxW" in rows["handmade"]
    assert "classes: background, soil, bedrock, sand, big rock" in result.output


def test_explicit_paths_and_mixed_classes(tmp_path):
    five, three = make_member(tmp_path / "five.onnx"), make_member(tmp_path / "three.onnx", n_classes=3)
    result = ens("members", five, three)
    assert result.exit_code == 0, result.output
    assert "classes (five): background, soil, bedrock, sand, big rock" in result.output
    assert "classes (three): background, soil, bedrock" in result.output


def test_non_contract_onnx_is_one_line_error(tmp_path):
    make_member(tmp_path / "plain.onnx", metadata=False)
    result = ens("members", tmp_path / "plain.onnx")
    assert result.exit_code == 1
    (line,) = result.output.strip().splitlines()
    assert (
        line.startswith("error: ") and "not an ens member" in line and "ens export SOURCE --name NAME" in line
    )
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    result = ens("members", "--models-dir", tmp_path)
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1


def test_empty_store_says_how_to_export(tmp_path):
    (tmp_path / "empty").mkdir()
    result = ens("members", "--models-dir", tmp_path / "empty")
    assert result.exit_code == 0
    assert "no members" in result.output and "ens export" in result.output


def test_wrong_io_names_or_fixed_batch_break_the_contract(tmp_path):
    import onnx

    model = onnx.load(make_member(tmp_path / "m.onnx"))
    model.graph.input[0].name = "x"
    model.graph.node[0].input[0] = "x"
    onnx.save(model, tmp_path / "renamed.onnx")
    model = onnx.load(tmp_path / "m.onnx")
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 8
    onnx.save(model, tmp_path / "fixed.onnx")
    for name, fragment in (("renamed", "expected 'pixels'/'probs'"), ("fixed", "batch axis is fixed to 8")):
        result = ens("members", tmp_path / f"{name}.onnx")
        assert result.exit_code == 1
        (line,) = result.output.strip().splitlines()
        assert "breaks the member contract" in line and fragment in line, line
