"""`ens export --factory` runs no code that is not installed without --trust, whatever the module's
file looks like (a hyphenated name, a lone .pyc, a C extension, a folder extending an installed
namespace package, a package on PYTHONPATH), and the export options that are parsed before any
loading take only their documented spellings. Every module and file is built here."""

from __future__ import annotations

import importlib.machinery
import py_compile
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from conftest import assert_unchanged, ens, one_line_error, snapshot
from export_checks import images_npz
from tiny_nets import TinyNet, trained_like

MARKER_CODE = "open({marker!r}, 'w').write('ran')\nfrom tiny_nets import TinyNet as unet\n"


@pytest.fixture
def case(tmp_path, monkeypatch):
    """A checkpoint and data outside a fresh working folder `work`, which is the current folder; the
    modules a test imports are dropped from sys.modules afterwards."""
    torch.save(trained_like(TinyNet()).state_dict(), tmp_path / "net.pt")
    images_npz(tmp_path / "tiny.npz", (32, 48))
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        if any(part.startswith("evil") for part in name.split(".")):
            del sys.modules[name]


def export_args(root: Path, *extra) -> list:
    return ["export", root / "net.pt", "--name", "n", "--data", root / "tiny.npz",
            "--out-dir", root / "models", *extra]  # fmt: skip


def refused(root: Path, factory: str, *fragments: str) -> str:
    """Export with `factory` without --trust: one line naming --trust, nothing ran, nothing written."""
    before = snapshot(root)
    line = one_line_error(
        ens(*export_args(root, "--factory", factory)), "runs its code", "--trust", *fragments
    )
    assert not (root / "MARKER").exists(), "the module's code ran"
    assert_unchanged(before, root)
    return line


def c_extension(folder: Path, name: str, marker: Path) -> Path:
    """A real C extension module whose initialisation writes `marker` (a fake one without a compiler)."""
    target = folder / f"{name}{importlib.machinery.EXTENSION_SUFFIXES[0]}"
    compiler = shutil.which("gcc") or shutil.which("cc")
    include = sysconfig.get_paths()["include"]
    if compiler is None or not (Path(include) / "Python.h").is_file():
        target.write_bytes(b"\x7fELF not really a shared object")
        return target
    source = folder.parent / f"{name}.c"
    source.write_text(
        "#include <Python.h>\n#include <stdio.h>\n"
        f'static struct PyModuleDef def = {{PyModuleDef_HEAD_INIT, "{name}", NULL, -1, NULL}};\n'
        f"PyMODINIT_FUNC PyInit_{name}(void) {{\n"
        f'  FILE *f = fopen("{marker}", "w"); if (f) {{ fputs("ran", f); fclose(f); }}\n'
        "  return PyModule_Create(&def);\n}\n"
    )
    subprocess.run([compiler, "-shared", "-fPIC", f"-I{include}", str(source), "-o", str(target)], check=True)
    return target


# HIGH 1: the module is judged by where it would be loaded from, before anything is imported


def test_hyphenated_module_in_the_current_folder_needs_trust(case):
    (case / "work" / "evil-mod.py").write_text(MARKER_CODE.format(marker=str(case / "MARKER")))
    refused(case, "evil-mod:unet", str(case / "work" / "evil-mod.py"), "in the current folder")


def test_lone_pyc_in_the_current_folder_needs_trust(case):
    source = case / "evilpyc_source.py"
    source.write_text(MARKER_CODE.format(marker=str(case / "MARKER")))
    py_compile.compile(str(source), cfile=str(case / "work" / "evilpyc.pyc"), doraise=True)
    source.unlink()
    refused(case, "evilpyc:unet", "evilpyc.pyc", "in the current folder")


def test_c_extension_in_the_current_folder_needs_trust(case):
    built = c_extension(case / "work", "evilso", case / "MARKER")
    refused(case, "evilso:unet", str(built))


def test_folder_extending_an_installed_namespace_package_needs_trust(case):
    pytest.importorskip("google.protobuf")  # google is an installed namespace package (protobuf, onnx)
    (case / "work" / "google").mkdir()
    (case / "work" / "google" / "evilns.py").write_text(MARKER_CODE.format(marker=str(case / "MARKER")))
    refused(case, "google.evilns:unet", str(case / "work" / "google"))


def test_package_on_pythonpath_needs_trust_before_its_init_runs(case, monkeypatch):
    elsewhere = case / "elsewhere"
    (elsewhere / "evilpkg").mkdir(parents=True)
    (elsewhere / "evilpkg" / "__init__.py").write_text(MARKER_CODE.format(marker=str(case / "MARKER")))
    (elsewhere / "evilpkg" / "nets.py").write_text("from tiny_nets import TinyNet as unet\n")
    monkeypatch.syspath_prepend(str(elsewhere))
    refused(case, "evilpkg.nets:unet", str(elsewhere / "evilpkg"), f"in {str(elsewhere)!r}")


def test_submodule_an_installed_package_finds_at_import_needs_trust(case, monkeypatch):
    """An installed package whose __init__ extends its __path__ over sys.path (pkgutil.extend_path)
    would import a submodule from the current folder: each level is judged again once its parent ran."""
    from exporters import modulesource

    site_dir = case / "site"
    (site_dir / "evilext").mkdir(parents=True)
    extend = "__path__ = __import__('pkgutil').extend_path(__path__, __name__)\n"
    (site_dir / "evilext" / "__init__.py").write_text(extend)
    roots = modulesource.installed_roots()
    monkeypatch.setattr(modulesource, "installed_roots", lambda: roots | {site_dir.resolve()})
    monkeypatch.syspath_prepend(str(site_dir))
    (case / "work" / "evilext").mkdir()
    (case / "work" / "evilext" / "evilchild.py").write_text(MARKER_CODE.format(marker=str(case / "MARKER")))
    refused(case, "evilext.evilchild:unet", str(case / "work" / "evilext" / "evilchild.py"))


def test_module_given_by_path_is_named_where_it_is(case):
    elsewhere = case / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "x.py").write_text(MARKER_CODE.format(marker=str(case / "MARKER")))
    line = refused(case, f"{elsewhere / 'x.py'}:unet", f"would import {str(elsewhere / 'x.py')!r}")
    assert f"in {str(elsewhere)!r}" in line and "this folder" not in line and "current folder" not in line


def test_installed_factories_load_without_trust(case):
    net = torch.nn.Conv2d(1, 5, 3, padding=1)
    torch.save(net.state_dict(), case / "net.pt")
    kwargs = '{"in_channels": 1, "out_channels": 5, "kernel_size": 3, "padding": 1}'
    result = ens(*export_args(case, "--factory", "torch.nn:Conv2d", "--factory-kwargs", kwargs))
    assert result.exit_code == 0, result.output
    assert (case / "models" / "n.onnx").is_file()
    from exporters.trust import factory_origin

    for module in ("wsgiref.simple_server", "json.tool", "torch.nn.modules.conv", "onnx.helper"):
        assert factory_origin(f"{module}:f") is None, module  # the standard library, site-packages


def test_editable_install_loads_without_trust_unless_shadowed(case, monkeypatch):
    """A package served by an installed import hook (what `pip install -e` adds) is installed code; a
    folder of the same name in the current folder, found first, is not."""
    from exporters.trust import factory_origin

    project = case / "project"
    (project / "evilnets").mkdir(parents=True)
    (project / "evilnets" / "__init__.py").write_text("")
    (project / "evilnets" / "nets.py").write_text("from tiny_nets import TinyNet as unet\n")

    class EditableFinder:
        @staticmethod
        def find_spec(name, path=None, target=None):
            if name != "evilnets":
                return None
            return importlib.machinery.PathFinder.find_spec(name, [str(project)])

    monkeypatch.setattr(sys, "meta_path", [*sys.meta_path, EditableFinder()])
    assert factory_origin("evilnets.nets:unet") is None
    (case / "work" / "evilnets").mkdir()
    (case / "work" / "evilnets" / "__init__.py").write_text(MARKER_CODE.format(marker=str(case / "MARKER")))
    refused(case, "evilnets.nets:unet", str(case / "work" / "evilnets"))


def test_local_module_loads_with_trust(case):
    (case / "work" / "evil-trusted.py").write_text(MARKER_CODE.format(marker=str(case / "MARKER")))
    result = ens(*export_args(case, "--factory", "evil-trusted:unet", "--trust"))
    assert result.exit_code == 0, result.output
    assert (case / "MARKER").exists() and (case / "models" / "n.onnx").is_file()


# LOW: options parsed before loading take only their documented spellings


@pytest.mark.parametrize(
    ("extra", "fragments"),
    [
        (["--input-range", "0..1"], ["--input-range '0..1' is not one of 0-255, 0-1, -1-1"]),
        (["--input-range", "0 - 1"], ["--input-range '0 - 1' is not one of 0-255, 0-1, -1-1"]),
        (["--input-range", "0-1 "], ["--input-range '0-1 ' is not one of 0-255, 0-1, -1-1"]),
        (
            ["--input-range", "0-1", "--mean", "0.5", "--std", "0.2,0.2"],
            ["--std lists 2 values but the net takes 1 channel(s)"],
        ),
        (["--factory-kwargs", '{"width": 8, "width": 4}'], ["--factory-kwargs", "key 'width' appears twice"]),
        (["--factory-kwargs", '{"a": {"b": 1, "b": 2}}'], ["key 'b' appears twice"]),
        *[
            (
                ["--class-names", f"bg,big{char}rock,sand,soil,bedrock"],
                ["--class-names", "non-printing", repr(char)],
            )
            for char in ("\n", "\r", "\u2028", "\u2029", "\x85", "\x0b", "\x0c", "\x1c", "\t", "\x00")
        ],
        (["--class-names", "bg,rock,sand,soil,bedrock\n"], ["non-printing", "'\\n'"]),
    ],
)
def test_loose_export_options_are_refused(tmp_path, extra, fragments):
    torch.save(trained_like(TinyNet()).state_dict(), tmp_path / "net.pt")
    images_npz(tmp_path / "tiny.npz", (32, 48))
    args = export_args(tmp_path, "--factory", "tiny_nets:TinyNet", *extra)
    before = snapshot(tmp_path)
    one_line_error(ens(*args), *fragments)
    assert not (tmp_path / "models").exists()
    assert_unchanged(before, tmp_path)


def test_the_documented_spellings_still_export(tmp_path):
    torch.save(trained_like(TinyNet()).state_dict(), tmp_path / "net.pt")
    images_npz(tmp_path / "tiny.npz", (32, 48))
    args = export_args(tmp_path, "--factory", "tiny_nets:TinyNet", "--input-range", "0-1", "--mean", "0.5",
                       "--std", "0.25", "--factory-kwargs", '{"width": 8}',
                       "--class-names", "background,soil,bedrock,sand,big rock")  # fmt: skip
    result = ens(*args)
    assert result.exit_code == 0, result.output
    assert "big rock" in result.output and "(x/255-0.5)/0.25" in result.output
