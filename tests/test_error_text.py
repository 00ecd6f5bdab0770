"""One way to quote an exception (`errors.first_line` / `errors.shorten`), and exceptions that cross a
process carried as data (type + message): a Ray actor returns a user's mistake as a row, which the
driver raises as the same one-line EnsError without reading Ray's exception text."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import numpy as np
import pytest
from onnx_members import make_member
from test_folders import write_folder

import ensemble
from ensemble.data.folder import open_folder
from ensemble.data.sources import make_source
from ensemble.errors import EnsError, error_data, first_line, raised_error, shorten
from ensemble.inference.options import PredictOptions
from ensemble.members.store import resolve_members

ROOT = Path(ensemble.__file__).parent.parent


def test_shorten_cuts_between_words_and_marks_the_cut():
    words = " ".join(f"word{i}" for i in range(100))
    text = shorten(words, 60)
    assert text.endswith(" …") and len(text) <= 60 and all(w in words.split() for w in text[:-2].split())
    assert shorten("x" * 300, 50) == "x" * 48 + " …"  # one long word is cut inside it
    assert shorten("two\n  lines", 50) == "two lines"
    assert first_line(ValueError("\n\x1b[31mfirst\x1b[0m\nsecond")) == "first"
    assert first_line(ValueError("")) == "ValueError"


def test_no_module_shortens_an_exception_its_own_way():
    """Slicing `str(exc)` or joining its words by hand would be a second way: use `first_line`."""
    found = []
    for folder in ("ensemble", "exporters", "zoo"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Slice):
                    inner = ast.unparse(node.value)
                    if "str(exc" in inner or "first_line(" in inner or inner.endswith(".split())"):
                        found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}")
    assert not found, "\n".join(found)


def test_error_data_keeps_the_type_and_the_message():
    user = error_data(EnsError("image 'a.png' is damaged;\nreplace it"))
    assert user == {"type": "EnsError", "message": "image 'a.png' is damaged;\nreplace it"}
    assert raised_error(user, "a worker") == user["message"]
    bug = error_data(ValueError("missing\nmore"))
    assert bug == {"type": "ValueError", "message": "missing"}
    assert raised_error(bug, "a worker") == "a worker raised ValueError: missing"


def test_a_ray_actor_returns_a_user_error_as_data_and_the_driver_raises_it(tmp_path, monkeypatch):
    pytest.importorskip("ray")
    from ensemble.runs.plan import ShardPlan
    from ensemble.runs.rayengine import ShardPredictor, _Collector

    make_member(tmp_path / "models" / "a.onnx", channels=3, seed=1)
    images, _ = write_folder(tmp_path / "data", [(16, 16)] * 4, masks=False)
    source = make_source(open_folder(images))
    whole = (images / "img_002.png").read_bytes()
    (images / "img_002.png").write_bytes(whole[: len(whole) // 2])  # damaged after the listing
    members = resolve_members(["a"], tmp_path / "models")
    plan = ShardPlan(source.n_images, 2)
    actor = ShardPredictor(members, PredictOptions(batch_size=2), source, plan, os.getcwd())

    good = actor({"shard": np.array([0])})
    assert good["error"].tolist() == ["", ""] and good["error_type"].tolist() == ["", ""]
    bad = actor({"shard": np.array([1])})
    assert bad["error_type"].tolist() == ["EnsError"]
    assert "img_002.png" in bad["error"][0] and "Traceback" not in bad["error"][0]

    collector = object.__new__(_Collector)  # only `add`'s check of the error columns runs
    with pytest.raises(EnsError) as raised:
        collector.add(bad)
    assert str(raised.value) == bad["error"][0]


def test_the_keras_worker_replies_with_the_error_type_and_message(tmp_path):
    import json
    import subprocess
    import sys

    code = "import sys, pathlib; from exporters.keras_tf import _serve; _serve(pathlib.Path(sys.argv[1]))"
    request = json.dumps({"op": "run"}) + "\n"  # before `load`: a bug on the worker's side
    result = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], input=request, capture_output=True, text=True, cwd=ROOT
    )
    error = json.loads(result.stdout.splitlines()[0])["error"]
    assert error["type"] == "AttributeError" and "keras" in error["message"], error
    assert raised_error(error, "run") == f"run raised AttributeError: {error['message']}"
