"""What runs code when ens loads it, checked before any loading, and the one wording of a refusal.

Unpickling calls whatever functions a file names; a TorchScript archive is a program; torch.export.load
unpickles parts of an archive with weights_only=False; a Keras Lambda layer holds Python bytecode;
`--custom-objects` and a `--factory` module that is not installed code (a .py path, or a module
found in the current folder or any folder outside the standard library and site-packages) are Python
files that run when imported. Each needs `--trust`. Everything else is read as data (state_dicts with
`weights_only=True`, Keras configs in safe mode).
"""

from __future__ import annotations

from pathlib import Path

from ensemble.errors import EnsError
from exporters.modulesource import cwd_importable, untrusted_origin
from exporters.request import ExportRequest

STATE_DICT_HINT = "or save model.state_dict() and export it with --factory"
FORMAT_RISKS = {
    "torch.export": (
        "is a torch.export archive",
        "torch.export.load unpickles parts of it with weights_only=False, which runs any code the file names",
    ),
    "torchscript": (
        "is a TorchScript archive",
        "torch.jit.load compiles and runs the program stored in it",
    ),
}


def untrusted(what: str, risk: str, hint: str = STATE_DICT_HINT) -> EnsError:
    """The refusal for anything that would run code from a file: what it is, the risk, --trust."""
    return EnsError(f"{what}: {risk}; pass --trust only if you trust where it came from, {hint}")


def check_trust(request: ExportRequest, source_format: str) -> None:
    """Refuse, before anything is loaded or imported, every input that runs code, unless --trust."""
    if request.trust:
        return
    if source_format in FORMAT_RISKS:
        kind, risk = FORMAT_RISKS[source_format]
        raise untrusted(f"{str(request.source)!r} {kind}", risk)
    if request.custom_objects is not None:
        raise untrusted(
            f"--custom-objects {str(request.custom_objects)!r} is a Python file",
            "importing it runs its code",
            "or install the layers as a package and register them there",
        )
    origin = factory_origin(request.factory) if request.factory else None
    if origin is not None:
        raise refuse_factory(request.factory, origin)


def factory_origin(spec: str) -> Path | None:
    """The file or folder a `--factory` would load code from when that is not installed code: a `.py`
    path, or a module (or a package above it) found in the current folder, on PYTHONPATH or anywhere
    outside the standard library and site-packages. Decided without importing anything."""
    module_name = spec.partition(":")[0]
    if module_name.endswith(".py"):
        return Path(module_name).absolute()
    with cwd_importable():
        return untrusted_origin(module_name)


def refuse_factory(spec: str, origin: Path) -> EnsError:
    """The refusal of a factory that is not installed code, naming where its code lies."""
    return untrusted(
        f"--factory {spec!r} would import {str(origin)!r} ({_where(origin)}, not installed code)",
        "importing it runs its code",
        "or install the module as a package",
    )


def _where(origin: Path) -> str:
    """Where a factory's code lies, in words: the current folder, or the folder it is in."""
    folder = origin.resolve().parent
    return "in the current folder" if folder == Path.cwd().resolve() else f"in {str(folder)!r}"
