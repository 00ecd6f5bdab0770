"""`ens bundle`: an ensemble, its members and every wheel as one offline folder; `--check`; run.py.

The fast tests make bundles without downloading (a stand-in fetch that adds no wheels); the slow ones
download for real, install into a fresh virtualenv inside a network namespace without network, and
compare run.py's CSV with `ens predict`'s byte for byte.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_unchanged, ens, one_line_error, snapshot
from onnx_members import make_member
from PIL import Image

from ensemble.bundle.build import BundleRequest, make_bundle
from ensemble.bundle.readme import notebook_cell, run_script
from ensemble.bundle.runscript import bundle_problem, read_manifest
from ensemble.bundle.target import Target, make_target, pip_target_args, requirements_for
from ensemble.bundle.wheels import build_ens_wheel, requires_dist
from ensemble.errors import EnsError
from ensemble.members.ensemblefile import EnsembleSpec, write_spec
from ensemble.members.store import resolve_members

HERE = f"{sys.version_info.major}.{sys.version_info.minor}"


@pytest.fixture(scope="module")
def ens_wheel(tmp_path_factory) -> Path:
    """The ens wheel of this checkout, built once for the module."""
    return build_ens_wheel(tmp_path_factory.mktemp("ens-wheel"))


@pytest.fixture
def fitted(tmp_path: Path) -> Path:
    """A store of three members, `a`, `b` and `c`, and an ensemble file of `a` and `b` (c is not in it)."""
    store = tmp_path / "models"
    for seed, name in enumerate("abc"):
        make_member(store / f"{name}.onnx", seed=seed)
    (store / "notes.pkl").write_bytes(b"\x80\x04N.")
    members = resolve_members(["a", "b"], store)
    spec = EnsembleSpec(
        members=("a", "b"),
        member_sha256=tuple(m.sha256 for m in members),
        weights=((0.6, 0.5, 0.7, 0.4, 0.5), (0.4, 0.5, 0.3, 0.6, 0.5)),
        tta="flip",
        min_area=(0, 2, 2, 2, 2),
    )
    write_spec(store / "ensemble.json", spec)
    return store


def no_download(requirements, target, dest, note):
    """A fetch that adds no wheels: the bundle holds the ens wheel only."""
    return []


def offline_bundle(store: Path, out: Path, wheel: Path, **options) -> Path:
    """A bundle of `store`'s ensemble without downloading its dependencies."""
    fields = {"ensemble": None, "target": Target(), "command": "ens bundle", "ens_wheel": wheel, **options}
    request = BundleRequest(out=out, models_dir=store, **fields)
    return make_bundle(request, lambda line: None, fetch=no_download).out


def write_images(folder: Path, n: int = 4) -> Path:
    rng = np.random.default_rng(3)
    folder.mkdir(parents=True)
    for k in range(n):
        Image.fromarray(rng.integers(0, 256, (16, 24)).astype(np.uint8)).save(folder / f"img_{k:03d}.png")
    return folder


def test_requirements_take_onnxruntime_for_cpu_and_onnxruntime_gpu_with_cuda_for_gpu(ens_wheel):
    declared = requires_dist(ens_wheel)
    cpu = requirements_for(declared, make_target(None, None, "cpu"))
    gpu = requirements_for(declared, make_target(None, None, "gpu"))
    assert "onnxruntime>=1.20" in cpu and not any("gpu" in line for line in cpu)
    assert "onnxruntime-gpu[cuda,cudnn]>=1.20" in gpu and "onnxruntime>=1.20" not in gpu
    assert [line for line in cpu if "onnxruntime" not in line] == [
        line for line in gpu if "onnx" not in line or line.startswith("onnx>")
    ]
    assert not any("torch" in line or "keras" in line or ";" in line for line in cpu + gpu)
    assert {"numpy>=1.26", "numba>=0.60", "pandas>=2.1", "typer>=0.12"} <= set(cpu)


def test_target_tags_cover_older_manylinux_and_bad_targets_are_one_line():
    args = pip_target_args(make_target("3.12", "manylinux_2_28_x86_64", None))
    platforms = [args[i + 1] for i, arg in enumerate(args) if arg == "--platform"]
    assert platforms[0] == "manylinux_2_28_x86_64" and "manylinux2014_x86_64" in platforms
    assert args[args.index("--abi") : args.index("--abi") + 2] == ["--abi", "cp312"]
    assert "--only-binary=:all:" in args
    for python, platform, fragment in [("2.7", None, "--python '2.7'"), ("3.x", None, "3.N"),
                                       (None, "win_amd64", "--platform 'win_amd64'")]:  # fmt: skip
        with pytest.raises(EnsError, match=fragment.replace(".", r"\.")):
            make_target(python, platform, None)
    result = ens("bundle", "out", "--python", "3.9")
    one_line_error(result, "--python '3.9'", "N >= 10")


def test_a_bundle_holds_exactly_the_ensemble_members_and_hashes_every_file(tmp_path, fitted, ens_wheel):
    out = offline_bundle(fitted, tmp_path / "bundle", ens_wheel, archive=True)
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert files == [
        "README.md", "bundle.json", "models/a.onnx", "models/b.onnx", "models/ensemble.json",
        "requirements.txt", "run.py", f"wheels/{ens_wheel.name}",
    ]  # fmt: skip
    for name in ("a.onnx", "b.onnx", "ensemble.json"):
        assert (out / "models" / name).read_bytes() == (fitted / name).read_bytes()
    manifest = read_manifest(out)
    target = {"python": "3.11", "platform": "manylinux_2_28_x86_64", "implementation": "cp", "abi": "cp311"}
    assert manifest["target"] == {**target, "runtime": "cpu"}
    assert set(manifest["files"]) == set(files) - {"bundle.json"}
    assert manifest["members"] == ["a", "b"] and manifest["command"] == "ens bundle"
    assert manifest["ens_version"] and manifest["versions"]["wheels"]["ens"] == "0.1.0"
    assert bundle_problem(out, manifest) is None
    assert (out / "run.py").read_text() == run_script()
    assert notebook_cell() in (out / "README.md").read_text() and "__file__" not in notebook_cell()
    assert (out / "requirements.txt").read_text().split() == manifest["requirements"]
    with zipfile.ZipFile(tmp_path / "bundle.zip") as archive:
        assert archive.namelist() == sorted(files)
        assert archive.read("models/a.onnx") == (fitted / "a.onnx").read_bytes()
    first = (tmp_path / "bundle.zip").read_bytes()
    (tmp_path / "bundle.zip").unlink()
    from ensemble.bundle.archive import write_zip

    assert write_zip(out, tmp_path / "bundle.zip").read_bytes() == first
    assert not list(tmp_path.glob(".bundle.partial-*"))


def test_an_edited_member_fails_check_and_run_py_with_one_line_naming_it(tmp_path, fitted, ens_wheel):
    out = offline_bundle(fitted, tmp_path / "bundle", ens_wheel)
    member = out / "models" / "b.onnx"
    member.write_bytes(member.read_bytes()[:-1] + bytes([member.read_bytes()[-1] ^ 1]))
    one_line_error(ens("bundle", "--check", out), "'models/b.onnx'", "changed since the bundle was made")
    result = run_py_without_pip(out, tmp_path)
    assert result.returncode == 1 and not (tmp_path / "pip-was-run").exists(), result
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "'models/b.onnx'" in lines[0], lines
    assert not (tmp_path / "work" / "submission.csv").exists()


def run_py_without_pip(bundle: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    """Run the bundle's run.py with a `pip` that only records that it ran, so nothing can be installed."""
    fake = tmp_path / "fake-pip" / "pip"
    fake.mkdir(parents=True, exist_ok=True)
    (fake / "__init__.py").write_text("")
    (fake / "__main__.py").write_text(
        f"open({str(tmp_path / 'pip-was-run')!r}, 'w').close()\nraise SystemExit(3)\n"
    )
    (tmp_path / "work").mkdir(exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(fake.parent)}
    command = [sys.executable, str(bundle / "run.py"), str(tmp_path / "images")]
    return subprocess.run(
        command, cwd=tmp_path / "work", env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize(
    "damage, fragment",
    [
        (lambda out: (out / "models" / "ensemble.json").unlink(), "'models/ensemble.json' is missing"),
        (
            lambda out: (out / "wheels" / "extra-1.0-py3-none-any.whl").write_bytes(b"PK"),
            "is not in bundle.json",
        ),
        (lambda out: (out / "run.py").write_text("print('hi')\n"), "'run.py' changed"),
        (lambda out: (out / "bundle.json").write_text("{"), "cannot read"),
    ],
)
def test_every_damage_is_one_line_from_check(tmp_path, fitted, ens_wheel, damage, fragment):
    out = offline_bundle(fitted, tmp_path / "bundle", ens_wheel)
    damage(out)
    one_line_error(ens("bundle", "--check", out), fragment)


def test_check_resolves_the_wheels_offline_and_names_what_is_missing(tmp_path, fitted, ens_wheel):
    out = offline_bundle(fitted, tmp_path / "bundle", ens_wheel)
    result = ens("bundle", "--check", out)
    one_line_error(result, "pip could not resolve the wheels", "offline", "numpy>=1.26")


def test_out_must_be_new_or_empty_and_never_an_input(tmp_path, fitted, ens_wheel):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("keep")
    shutil.copy(fitted / "ensemble.json", tmp_path / "e.zip")
    before = snapshot(tmp_path)
    cases = [
        (["bundle", tmp_path / "full", "--models-dir", fitted], ["not empty"]),
        (["bundle", fitted / "a.onnx", "--models-dir", fitted], ["is a file"]),
        (["bundle", fitted, "--models-dir", fitted], ["not empty"]),
        (["bundle", tmp_path / "e", "--ensemble", tmp_path / "e.zip", "--models-dir", fitted, "--zip"],
         ["the --zip archive", "the ensemble file"]),
        (["bundle", "--check", tmp_path / "full", "--zip"], ["takes no --zip"]),
        (["bundle", "--check", tmp_path / "nothing"], ["not a bundle"]),
        (["bundle", tmp_path / "new", "--models-dir", tmp_path / "none"], ["does not exist"]),
    ]  # fmt: skip
    for args, fragments in cases:
        one_line_error(
            ens(*args, "--ens-wheel", ens_wheel) if "--check" not in args else ens(*args), *fragments
        )
    assert_unchanged(before, tmp_path)


def test_a_member_changed_since_the_fit_is_refused(tmp_path, fitted, ens_wheel):
    make_member(fitted / "a.onnx", seed=7)
    result = ens("bundle", tmp_path / "new", "--models-dir", fitted, "--ens-wheel", ens_wheel)
    one_line_error(result, "member 'a'", "changed since")
    assert not (tmp_path / "new").exists()


def this_platform() -> str:
    """This machine's newest manylinux tag."""
    from packaging.tags import sys_tags

    return next(tag.platform for tag in sys_tags() if tag.platform.startswith("manylinux_"))


def can_unshare() -> str | None:
    """Why a network namespace cannot be made here, or None."""
    if shutil.which("unshare") is None:
        return "unshare is not installed"
    if os.geteuid() != 0:
        return "unshare -n needs root"
    if subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode != 0:
        return "unshare -n is not permitted here"
    return None


def clean_env(**extra: str) -> dict:
    """This environment without PYTHONPATH and pip settings: the venv sees only what it installed."""
    drop = ("PYTHONPATH", "VIRTUAL_ENV")
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("PIP_")}
    return {**env, **extra}


@pytest.mark.slow
@pytest.mark.skipif(can_unshare() is not None, reason=str(can_unshare()))
def test_cpu_bundle_installs_without_network_and_predicts_like_ens_predict(tmp_path, fitted):
    images = write_images(tmp_path / "images")
    out = tmp_path / "bundle"
    made = ens("bundle", out, "--models-dir", fitted, "--python", HERE, "--platform", this_platform())
    assert made.exit_code == 0, made.output
    checked = ens("bundle", "--check", out)
    assert checked.exit_code == 0 and "is sound" in checked.output, checked.output
    expected = tmp_path / "expected.csv"
    options = ["--runtime", "ort"]
    result = ens("predict", "--ensemble", fitted / "ensemble.json", "--models-dir", fitted, "--data", images,
                 "--out", expected, *options)  # fmt: skip
    assert result.exit_code == 0, result.output
    venv.EnvBuilder(with_pip=True).create(tmp_path / "venv")
    python = tmp_path / "venv" / "bin" / "python"
    (tmp_path / "work").mkdir()
    command = ["unshare", "-n", str(python), str(out / "run.py"), str(images), "--", *options]
    run = subprocess.run(command, cwd=tmp_path / "work", env=clean_env(), capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert (tmp_path / "work" / "submission.csv").read_bytes() == expected.read_bytes()
    code = "import ensemble; print(ensemble.__file__)"
    site = subprocess.run(
        [str(python), "-c", code], cwd=tmp_path / "work", env=clean_env(), capture_output=True, text=True
    )
    assert str(tmp_path / "venv") in site.stdout, site


@pytest.mark.slow
def test_a_bundle_for_another_python_downloads_its_wheels_and_installs_nothing(tmp_path, fitted):
    other = "3.12" if HERE != "3.12" else "3.11"
    purelib = Path(sysconfig.get_paths()["purelib"])
    installed = sorted(p.name for p in purelib.iterdir())
    out = tmp_path / "bundle"
    made = ens("bundle", out, "--models-dir", fitted, "--python", other)
    assert made.exit_code == 0, made.output
    abi = "cp" + other.replace(".", "")
    wheels = [p.name for p in (out / "wheels").glob("*.whl")]
    for package in ("numpy", "onnxruntime", "numba", "pandas"):
        assert any(name.startswith(f"{package}-") and f"-{abi}-" in name for name in wheels), (
            package,
            wheels,
        )
    assert not any(f"-cp{HERE.replace('.', '')}-" in name for name in wheels), wheels
    assert read_manifest(out)["target"]["abi"] == abi
    checked = ens("bundle", "--check", out)
    assert checked.exit_code == 0 and f"Python {other}" in checked.output, checked.output
    assert sorted(p.name for p in purelib.iterdir()) == installed


def test_skip_preinstalled_leaves_out_what_kaggle_ships_and_says_so(tmp_path, fitted, ens_wheel):
    def fetch(requirements, target, dest, note):
        names = [
            "numpy-2.4.6-cp311-cp311-manylinux_2_28_x86_64.whl",
            "onnx-1.23.2-cp311-cp311-manylinux_2_28_x86_64.whl",
        ]
        for name in names:
            (dest / name).write_bytes(b"PK\x05\x06" + bytes(18))
        return [dest / name for name in names]

    notes: list[str] = []
    request = BundleRequest(
        out=tmp_path / "bundle", ensemble=None, models_dir=fitted, target=Target(), command="ens bundle",
        skip_preinstalled=True, ens_wheel=ens_wheel,
    )  # fmt: skip
    out = make_bundle(request, notes.append, fetch=fetch).out
    assert sorted(p.name for p in (out / "wheels").iterdir()) == sorted(
        [ens_wheel.name, "onnx-1.23.2-cp311-cp311-manylinux_2_28_x86_64.whl"]
    )
    manifest = read_manifest(out)
    assert manifest["preinstalled"] == ["numpy"] and "numpy>=1.26" in manifest["requirements"]
    assert any(line.startswith("left out 1 packages Kaggle's image ships: numpy") for line in notes), notes
    assert bundle_problem(out, manifest) is None


def test_an_ensemble_file_of_another_name_is_bundled_as_the_ensemble_file(tmp_path, fitted, ens_wheel):
    other = tmp_path / "fit-2.json"
    shutil.copy(fitted / "ensemble.json", other)
    out = offline_bundle(fitted, tmp_path / "bundle", ens_wheel, ensemble=other)
    assert (out / "models" / "ensemble.json").read_bytes() == other.read_bytes()
    assert sorted(p.name for p in (out / "models").iterdir()) == ["a.onnx", "b.onnx", "ensemble.json"]
