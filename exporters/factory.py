"""`--factory module:callable`: import the function or class that builds a network from a state_dict.

The module is imported as Python would from the current directory (so a local `mynets.py` works,
with --trust); a path to a .py file is accepted too (with --trust). A Hugging Face model class
(`transformers:SegformerForSemanticSegmentation`) takes a config object, so its --factory-kwargs build
its config class first. Every failure names the spec and says what to fix.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ensemble.errors import EnsError, first_line
from exporters.modulesource import cwd_importable, levels, untrusted_origin
from exporters.trust import refuse_factory

HINT = "give it as module:callable, e.g. monai.networks.nets:UNet or mynets:build_unet"


def import_factory(spec: str, trust: bool = False) -> Callable[..., Any]:
    """Resolve 'package.module:attr.path' (or 'file.py:attr') to a callable; without `trust`, only
    installed code is imported (see exporters/trust.py)."""
    module_name, sep, attr_path = spec.partition(":")
    if not sep or not module_name or not attr_path:
        raise EnsError(f"--factory {spec!r} is not module:callable; {HINT}")
    module = _import(module_name, spec, trust)
    target: Any = module
    for part in attr_path.split("."):
        if not hasattr(target, part):
            public = sorted(n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n)))
            shown = ", ".join(public[:8]) + (", …" if len(public) > 8 else "")
            raise EnsError(
                f"--factory {spec!r}: module {module_name!r} has no attribute {attr_path!r}; "
                f"callables it defines: {shown or 'none'}"
            )
        target = getattr(target, part)
    if not callable(target):
        raise EnsError(f"--factory {spec!r} is a {type(target).__name__}, not a callable; {HINT}")
    return target


def build_network(spec: str, kwargs: dict, trust: bool = False) -> Any:
    """Call the factory with the keyword arguments (or with the config they make, for a transformers
    model class) and return what it builds."""
    factory = import_factory(spec, trust)
    config_class = _config_class(factory)
    try:
        return factory(_config(config_class, kwargs, spec)) if config_class else factory(**kwargs)
    except EnsError:
        raise
    except Exception as exc:  # arbitrary user code: report the first line
        shown = ", ".join(sorted(kwargs))[:120]
        raise EnsError(
            f"--factory {spec!r} with --factory-kwargs keys [{shown}] raised "
            f"{type(exc).__name__}: {first_line(exc)}; check the keyword arguments"
        ) from exc


def _config_class(factory: Any) -> type | None:
    """The config class of a transformers model class (a PreTrainedModel has `config_class` and
    `from_pretrained`), else None."""
    config_class = getattr(factory, "config_class", None)
    if isinstance(factory, type) and hasattr(factory, "from_pretrained") and isinstance(config_class, type):
        return config_class if hasattr(config_class, "to_dict") else None
    return None


def _config(config_class: type, kwargs: dict, spec: str) -> Any:
    """The config the kwargs describe; a key the config class does not know is refused (transformers
    configs would keep it silently)."""
    defaults = config_class()
    unknown = [key for key in kwargs if not hasattr(defaults, key)]
    if unknown:
        known = ", ".join(_own_fields(config_class, defaults)[:12])
        raise EnsError(
            f"--factory {spec!r} builds its model from a {config_class.__name__}, which has no field "
            f"{', '.join(map(repr, unknown[:4]))}; --factory-kwargs are its fields (e.g. num_labels, "
            f"num_channels; it has {known}, …)"
        )
    return config_class(**kwargs)


def _own_fields(config_class: type, defaults: Any) -> list[str]:
    """The fields a config class adds to its base (the base's are common to every model)."""
    fields = set(defaults.to_dict())
    with contextlib.suppress(Exception):  # a base that needs arguments: list every field
        fields -= set(config_class.__base__().to_dict())
    return sorted(field for field in fields if not field.startswith("_"))


def _import(module_name: str, spec: str, trust: bool):
    if module_name.endswith(".py"):
        path = Path(module_name)
        if not trust:
            raise refuse_factory(spec, path.absolute())
        if not path.is_file():
            raise EnsError(f"--factory {spec!r}: file {module_name!r} does not exist; {HINT}")
        module_spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules.setdefault(path.stem, module)
        _run(lambda: module_spec.loader.exec_module(module), spec)
        return module
    with cwd_importable():
        for level in levels(module_name):  # each package's __init__ may add folders to its __path__:
            origin = None if trust else untrusted_origin(level)  # judge each level once its parent ran
            if origin is not None:
                raise refuse_factory(spec, origin)
            module = _run(lambda name=level: importlib.import_module(name), spec)
    return module


def _run(load: Callable[[], Any], spec: str) -> Any:
    try:
        return load()
    except ModuleNotFoundError as exc:
        raise EnsError(
            f"--factory {spec!r}: cannot import module {exc.name!r} ({exc}); install it, or run from "
            "the folder that holds it with --trust"
        ) from exc
    except Exception as exc:  # the module's own import-time code failed
        raise EnsError(
            f"--factory {spec!r}: importing it raised {type(exc).__name__}: {str(exc)[:200]}"
        ) from exc
