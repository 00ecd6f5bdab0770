"""refuse_overwrite: outputs that are inputs, through symlinks and hard links, are refused before any work."""

from __future__ import annotations

import os

import pytest

from ensemble.errors import EnsError
from ensemble.files.outputs import refuse_overwrite


def test_same_path_symlink_and_hard_link_are_refused(tmp_path):
    data = tmp_path / "d.npz"
    data.write_bytes(b"data")
    (tmp_path / "link.csv").symlink_to(data)
    os.link(data, tmp_path / "hard.csv")
    for out in (data, tmp_path / "link.csv", tmp_path / "hard.csv"):
        with pytest.raises(EnsError, match="--out .* is the same file as --data"):
            refuse_overwrite({"--out": out}, {"--data": data})
    assert data.read_bytes() == b"data"


def test_new_and_unrelated_outputs_pass(tmp_path):
    data = tmp_path / "d.npz"
    data.write_bytes(b"data")
    other = tmp_path / "old.csv"
    other.write_text("x")
    refuse_overwrite({"--out": tmp_path / "new.csv", "--json": other, "--plots": None}, {"--data": data})


def test_lists_of_inputs_and_two_outputs_on_one_file(tmp_path):
    members = [tmp_path / "a.onnx", tmp_path / "b.onnx"]
    for path in members:
        path.write_bytes(b"m")
    with pytest.raises(EnsError, match="member"):
        refuse_overwrite({"--out": members[1]}, {"member": members})
    with pytest.raises(EnsError, match="name the same file"):
        refuse_overwrite({"--out": tmp_path / "x.csv", "--json": tmp_path / "x.csv"}, {})
