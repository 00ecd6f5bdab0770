"""Usage errors of every command (a bad option value, a file where a folder is expected, an unknown
option or command, a missing argument) are one `error:` line naming the option, the value received
and what is allowed, exit 1, and write nothing; help pages stay as they were."""

from __future__ import annotations

import pytest
from conftest import assert_unchanged, ens, one_line_error, snapshot


@pytest.fixture
def place(tmp_path):
    """A file and a folder to pass where the other is expected."""
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "a-folder").mkdir()
    return tmp_path


CASES = [
    (
        ["predict", "--batch-size", "0"],
        ["--batch-size", "'0'", "greater than or equal to 1", "ens predict --help"],
    ),
    (["predict", "--batch-size=x"], ["--batch-size", "'x'", "valid integer"]),
    (["predict", "--tta", "bogus"], ["--tta", "'bogus'", "allowed: 'none', 'flip', 'hv'"]),
    (["predict", "--workers", "0"], ["--workers", "'0'", "greater than or equal to 1"]),
    (["predict", "--gpus-per-worker", "-1"], ["--gpus-per-worker", "'-1'", "greater than or equal to 0"]),
    (["predict", "--engine", "spark"], ["--engine", "'spark'", "allowed: 'local', 'ray'"]),
    (["predict", "--save-probs", "{dir}/a-file"], ["--save-probs expects a folder", "a-file'"]),
    (["predict", "--out", "{dir}/a-folder"], ["--out expects a file", "a-folder'"]),
    (["predict", "--val-ids", "{dir}/missing.txt"], ["--val-ids", "missing.txt'", "does not exist"]),
    (["predict", "--batch-size"], ["'--batch-size' requires an argument", "ens predict --help"]),
    (["predict", "--nope"], ["no such option: --nope", "ens predict --help"]),
    (["predict", "extra"], ["unexpected extra argument", "extra"]),
    (["score", "--plots", "{dir}/a-file"], ["--plots expects a folder", "a-file'", "ens score --help"]),
    (["fit", "--metric", "nope"], ["--metric", "'nope'", "allowed: 'course', 'miou'", "ens fit --help"]),
    (["export", "m.onnx", "--size-multiple", "0"], ["--size-multiple", "'0'", "ens export --help"]),
    (["check"], ["missing argument", "ens check --help"]),
    (["data", "demo", "--n-train", "x"], ["--n-train", "'x'", "ens data demo --help"]),
    (["bogus"], ["no such command 'bogus'", "predict", "ens --help"]),
    (["data", "bogus"], ["no such command 'bogus'", "demo", "ens data --help"]),
    (["--bogus"], ["no such option: --bogus", "ens --help"]),
]


@pytest.mark.parametrize(("args", "fragments"), CASES, ids=[" ".join(a) for a, _ in CASES])
def test_usage_errors_are_one_line_and_exit_1(place, args, fragments):
    before = snapshot(place)
    result = ens(*[arg.format(dir=place) for arg in args])
    one_line_error(result, *fragments)
    assert "Usage:" not in result.output and "╭" not in result.output
    assert_unchanged(before, place)


def test_usage_errors_stay_one_line_with_debug(place):
    result = ens("--debug", "predict", "--batch-size", "0")
    one_line_error(result, "--batch-size", "'0'")


@pytest.mark.parametrize(
    ("args", "code"),
    [(["--help"], 0), (["predict", "--help"], 0), (["data", "--help"], 0), ([], 2), (["data"], 2)],
)
def test_help_pages_are_unchanged(args, code):
    """--help, and a group called without a command, show the help page (the latter exit 2, as before)."""
    result = ens(*args)
    assert result.exit_code == code, result.output
    assert "Usage:" in result.output and "Commands" in result.output or "--batch-size" in result.output
    assert not any(line.startswith("error:") for line in result.output.splitlines())
