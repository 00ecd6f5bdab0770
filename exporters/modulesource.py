"""Where importing a module would load its code from, found without importing anything, and whether
that place is installed code.

Installed code is what lies in the standard library or site-packages (including a package pip
installed in editable mode); a module ens has already imported runs no code when imported again.
Anything else (the current folder, PYTHONPATH, a folder extending an installed namespace package,
whatever the file's type: a `.py`, a lone `.pyc`, a compiled extension) is code that came from
somewhere else, so the `--factory` check refuses it without `--trust`.
"""

from __future__ import annotations

import importlib
import os
import site
import sys
import sysconfig
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.machinery import ModuleSpec
from pathlib import Path


@contextmanager
def cwd_importable() -> Iterator[None]:
    """sys.path with the current folder first, as `--factory` imports: both the check and the import
    look modules up through it, so they find the same files."""
    cwd = str(Path.cwd())
    added = cwd not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        yield
    finally:
        if added:
            sys.path.remove(cwd)


def untrusted_origin(module_name: str) -> Path | None:
    """The first file or folder that importing `module_name` (and each package above it) would load and
    that is not installed code; None when all of it is installed or the module does not exist."""
    importlib.invalidate_caches()
    roots = installed_roots()
    installed = installed_folders(roots)
    trusted, search = installed, None
    for level in levels(module_name):
        loaded = sys.modules.get(level)
        spec = getattr(loaded, "__spec__", None) if loaded is not None else _find(level, search)
        if spec is None and loaded is not None and hasattr(loaded, "__path__"):
            trusted, search = set(), list(loaded.__path__)  # a package made at run time: no folder of its own
            continue
        if spec is None:
            return None  # nothing to load: the import itself reports the missing module
        namespace = spec.submodule_search_locations is not None and not spec.has_location
        if loaded is None or namespace:  # a namespace package takes new folders at every import
            outside = _outside(spec, trusted, roots)
            if outside is not None and not (search is None and _installed_as(spec, installed)):
                return outside
        if spec.submodule_search_locations is None:
            return None  # a module, not a package: a deeper name cannot be imported
        trusted = {_resolve(place) for place in _places(spec)}
        search = list(loaded.__path__) if loaded is not None else list(spec.submodule_search_locations)
    return None


def _outside(spec: ModuleSpec, trusted: set[Path | None], roots: set[Path]) -> Path | None:
    """The first file or package folder of `spec` that is neither in one of the `trusted` folders nor
    anywhere inside the installed `roots`."""
    for place in _places(spec):
        resolved = _resolve(place)
        if _resolve(place.parent) not in trusted and (resolved is None or not _inside(resolved, roots)):
            return place
    return None


def _inside(path: Path, roots: set[Path]) -> bool:
    return any(path.is_relative_to(root) for root in roots)


def _places(spec: ModuleSpec) -> list[Path]:
    """What a spec loads: a module's file, a package's folder, a namespace package's folders; nothing
    for a built-in or frozen module."""
    if spec.has_location and spec.origin:
        origin = Path(spec.origin)
        return [origin.parent if spec.submodule_search_locations is not None else origin]
    return [Path(p) for p in spec.submodule_search_locations or ()]


def installed_roots() -> set[Path]:
    """The folders installed code lies in: the standard library and site-packages."""
    names = ("stdlib", "platstdlib", "purelib", "platlib")
    roots = {sysconfig.get_path(name) for name in names} | set(site.getsitepackages())
    if site.ENABLE_USER_SITE:
        roots.add(site.getusersitepackages())
    resolved = {_resolve(Path(root)) for root in roots if root}
    return {root for root in resolved if root is not None}


def installed_folders(roots: set[Path]) -> set[Path | None]:
    """The sys.path folders of installed code: those inside `roots`, and the folders that `.pth` files
    in site-packages add (older editable installs)."""
    folders: set[Path | None] = set(roots)
    for entry in sys.path:
        path = _resolve(Path(entry)) if entry else None
        if path is not None and _inside(path, roots):
            folders.add(path)
    for root in roots:
        folders |= _pth_folders(root)
    return folders


def _pth_folders(site_dir: Path) -> set[Path]:
    """The folders the `.pth` files of a site-packages folder put on sys.path (not their import lines)."""
    folders: set[Path] = set()
    for pth in sorted(site_dir.glob("*.pth")):
        try:
            lines = pth.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError):
            continue
        for line in lines:
            if line.strip() and not line.startswith(("#", "import ", "import\t")):
                folder = _resolve(site_dir / line.rstrip())
                if folder is not None and folder.is_dir():
                    folders.add(folder)
    return folders


def _installed_as(spec: ModuleSpec, installed: set[Path | None]) -> bool:
    """Whether a top-level module is the one found with only installed folders on sys.path: the
    import hooks of editable installs still answer, a folder of the user's does not."""
    saved = sys.path[:]
    try:
        sys.path[:] = [entry for entry in saved if entry and _resolve(Path(entry)) in installed]
        other = _find(spec.name, None)
        installed_places = None if other is None else [_resolve(p) for p in _places(other)]
    finally:  # a namespace package's folders are recomputed from sys.path when read: read them here
        sys.path[:] = saved
    return installed_places == [_resolve(p) for p in _places(spec)]


def _find(name: str, search: list[str] | None) -> ModuleSpec | None:
    """What the import system would load for `name`, asking each finder as `import` does, without
    importing the parent packages (importlib.util.find_spec would)."""
    for finder in sys.meta_path:
        find_spec = getattr(finder, "find_spec", None)
        if find_spec is None:
            continue
        try:
            spec = find_spec(name, search, None)
        except (ImportError, ValueError, OSError):
            spec = None
        if spec is not None:
            return spec
    return None


def levels(module_name: str) -> list[str]:
    """'a.b.c' -> ['a', 'a.b', 'a.b.c']: every package an import of it runs first."""
    parts = module_name.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def _resolve(path: Path) -> Path | None:
    try:
        return Path(os.path.abspath(path)).resolve()
    except (OSError, RuntimeError, ValueError):
        return None
