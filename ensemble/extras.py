"""Optional packages (the pip extras): import one, or say in one line what needs it and how to install it."""

from __future__ import annotations

import importlib
from types import ModuleType

from ensemble.errors import EnsError


def optional_import(module: str, *, needed_by: str, extra: str, instead: str | None = None) -> ModuleType:
    """`module` imported, or an EnsError naming `needed_by`, the missing package, `pip install
    'ens[<extra>]'` and the `instead` alternative (an option that needs no extra)."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        missing = exc.name or module.split(".")[0]
        alternative = f", or {instead}" if instead else ""
        raise EnsError(
            f"{needed_by} needs {missing}, which is not installed; pip install 'ens[{extra}]'{alternative}"
        ) from None
