"""The shared CLI frame: user text printed through Rich is escaped, --debug / ENS_DEBUG show the
chained traceback, an unexpected exception (a bug) is one line naming it, Ctrl-C while loading is
one line and exit 130."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tomllib
import typer
from conftest import ens, one_line_error
from onnx_members import CLASS_NAMES, make_member
from typer.testing import CliRunner

from ensemble.cli import app
from ensemble.cli.common import user_errors
from ensemble.demo.synthetic import DemoSpec, write_demo
from ensemble.errors import EnsError

MARKUP = "[bold]x[/bold][/bold]"


@pytest.fixture
def marked(tmp_path):
    """A folder, two members and class names all holding Rich markup, and a small labelled data set."""
    root = tmp_path / f"run{MARKUP}"
    classes = tuple(f"{name}{MARKUP}" for name in CLASS_NAMES)
    for seed, name in enumerate(["m[bold]", "n[red]"]):
        make_member(root / "models" / f"{name}.onnx", seed=seed, class_names=classes)  # no '/' in a file name
    write_demo(root / "d.npz", DemoSpec(seed=1, n_train=16, n_test=4, height=16, width=32, n_aliens=0))
    return root


def ok(*args):
    result = ens(*args)
    assert result.exit_code == 0, result.output
    return result.output


def test_markup_in_paths_member_and_class_names_is_printed_verbatim(marked):
    common = ["--data", marked / "d.npz", "--models-dir", marked / "models"]
    members = ["--members", "m[bold],n[red]"]
    out = marked / "sub.csv"

    printed = ok("predict", *common, *members, "--out", out)
    assert str(out) in printed and str(marked / "sub.manifest.json") in printed

    printed = ok("members", "--models-dir", marked / "models")
    assert "m[bold]" in printed and "n[red]" in printed and f"soil{MARKUP}" in printed

    cache = ["--cache-dir", marked / "cache", "--val-fraction", "0.5"]
    printed = ok("fit", *common, *members, *cache, "--folds", "0", "--out", marked / "e.json")
    assert "m[bold]" in printed and str(marked / "e.json") in printed

    plots = marked / "plots"
    printed = ok("score", "--val", *common, "--ensemble", marked / "e.json", *cache, "--plots", plots)
    assert "n[red]" in printed and f"sand{MARKUP}" in printed and str(plots / "gallery.png") in printed

    printed = ok("check", out, "--shape", "16x32")
    assert printed.startswith("OK: rle")
    printed = ok("convert", out, marked / "flat.csv", "--to", "flat", "--shape", "16x32")
    assert str(marked / "flat.csv") in printed

    printed = ok("data", "inspect", marked / "d.npz")
    assert str(marked / "d.npz") in printed
    printed = ok("data", "grid", marked / "d.npz", "--out", marked / "grid.png", "--count", "2")
    assert str(marked / "grid.png") in printed
    demo = marked / "demo.npz"
    printed = ok(
        "data", "demo", "--out", demo, "--n-train", "8", "--n-test", "2", "--height", "16", "--width", "32"
    )
    assert str(demo) in printed


def test_debug_reraises_with_the_chained_cause(tmp_path, tiny_npz):
    ids = tmp_path / "ids.txt"
    ids.write_bytes(b"1, 2, \xff\n")
    args = ["predict", "--data", tiny_npz, "--split", "val", "--val-ids", ids]
    line = one_line_error(ens(*args, env={"ENS_DEBUG": "0"}), "is not UTF-8 text", "image indices")
    assert "Traceback" not in line

    for prefix, env in ((["--debug"], {}), ([], {"ENS_DEBUG": "1"})):
        result = CliRunner().invoke(app, [str(a) for a in [*prefix, *args]], env=env)
        assert isinstance(result.exception, EnsError), result.output
        assert isinstance(result.exception.__cause__, ValueError)
        assert result.exit_code != 0


def bug_app() -> typer.Typer:
    """A one-command app whose command has a real bug (ZeroDivisionError), wrapped like every command."""
    bug = typer.Typer()

    @bug.command()
    @user_errors
    def divide(count: int = 0) -> None:
        print(10 // count)

    return bug


def test_unexpected_exception_is_one_line_pointing_at_debug():
    result = CliRunner().invoke(bug_app(), [], env={"ENS_DEBUG": ""})
    assert result.exit_code == 1 and "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error: unexpected ZeroDivisionError: integer division or modulo by zero")
    assert "--debug" in lines[0] and "ENS_DEBUG=1" in lines[0]

    result = CliRunner().invoke(bug_app(), [], env={"ENS_DEBUG": "1"})
    assert isinstance(result.exception, ZeroDivisionError)


def wait_for_handler(pid: int, signum: int, timeout: float = 60.0) -> None:
    """Wait until process `pid` catches `signum` (bit in SigCgt of /proc/PID/status)."""
    status = Path(f"/proc/{pid}/status")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        caught = next(line for line in status.read_text().splitlines() if line.startswith("SigCgt:"))
        if int(caught.split()[1], 16) >> (signum - 1) & 1:
            return
        time.sleep(0.005)
    raise AssertionError(f"process {pid} never caught signal {signum}")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc to see the handlers")
@pytest.mark.parametrize(
    ("signum", "code", "words"), [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "SIGTERM")]
)
def test_signal_while_loading_is_one_line(tmp_path, signum, code, words):
    """Ctrl-C / SIGTERM as soon as `ens` handles them, while numpy, ONNX Runtime and Numba still load."""
    process = subprocess.Popen(
        [sys.executable, "-m", "ensemble", "predict", "--out", str(tmp_path / "s.csv")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    wait_for_handler(process.pid, signal.SIGTERM)
    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == code, stderr
    assert "Traceback" not in stderr and stdout == ""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], stderr
    assert list(tmp_path.iterdir()) == []


def test_the_console_script_loads_nothing_heavy_before_main():
    """The `ens` script of pyproject.toml handles Ctrl-C and stop signals before numpy / ONNX Runtime load."""
    scripts = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]["scripts"]
    module = scripts["ens"].split(":")[0]
    heavy = {"numpy", "onnxruntime", "typer", "importlib.metadata"}
    code = f"import sys, {module}; print(sorted({heavy!r} & set(sys.modules)))"
    printed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert printed.stdout.strip() == "[]"
