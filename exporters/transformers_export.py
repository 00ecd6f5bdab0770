"""Hugging Face transformers `save_pretrained` folders: config.json + model.safetensors, read as data.

The model class is one of transformers' own (the one config.json's `architectures` names, else
AutoModelForSemanticSegmentation), the weights come from safetensors, and nothing is fetched or
imported from the folder (local_files_only, trust_remote_code=False). A config that asks for its own
code (`auto_map`) is refused whatever the flags: custom model code is out of scope, so no --trust.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import transformers

from ensemble.capture import quiet
from ensemble.errors import EnsError, first_line
from exporters.request import ExportRequest
from exporters.source import LoadedSource
from exporters.torch_export import module_source
from exporters.torch_weights import few_keys

CONFIG = "config.json"
WEIGHTS = ("model.safetensors", "model.safetensors.index.json")
SAVE_HINT = "save it with model.save_pretrained(folder), which writes config.json and model.safetensors"


def load_transformers(request: ExportRequest, source_format: str) -> LoadedSource:
    """Load a save_pretrained folder with transformers' own classes and describe how to run it."""
    folder = request.source
    if request.factory:
        raise EnsError(
            f"{str(folder)!r} is a transformers folder whose config.json names its model class; drop "
            "--factory (it is for a state_dict file)"
        )
    settings = _read_config(folder)
    if not any((folder / name).is_file() for name in WEIGHTS):
        present = sorted(p.name for p in folder.iterdir())[:6]
        raise EnsError(
            f"{str(folder)!r} has config.json but no model.safetensors (it holds {present}); {SAVE_HINT} "
            "(ens reads transformers weights from safetensors only)"
        )
    model_class = _model_class(settings, folder)
    model = _from_pretrained(model_class, folder)
    versions = {"transformers": transformers.__version__}
    return module_source(model.float(), f"transformers {type(model).__name__} folder", versions)


def _read_config(folder: Path) -> dict:
    """config.json as a dict; one that declares its own model code is refused."""
    path = folder / CONFIG
    try:
        settings = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise EnsError(f"cannot read {str(path)!r} as JSON ({first_line(exc, 120)}); {SAVE_HINT}") from exc
    if not isinstance(settings, dict) or "model_type" not in settings:
        raise EnsError(f"{str(path)!r} is not a transformers config (no model_type); {SAVE_HINT}")
    if "auto_map" in settings:
        raise EnsError(
            f"{str(path)!r} declares custom model code (auto_map {sorted(settings['auto_map'])[:3]}); ens "
            "loads only transformers' own model classes and runs no code from a model folder; save a "
            "state_dict and export it with --factory pointing at installed code"
        )
    return settings


def _model_class(settings: dict, folder: Path) -> Any:
    """The transformers class config.json's `architectures` names, else the semantic-segmentation
    Auto class; a name transformers does not define is refused."""
    names = settings.get("architectures") or []
    if not names:
        return transformers.AutoModelForSemanticSegmentation
    name = names[0]
    found = getattr(transformers, name, None) if isinstance(name, str) and name.isidentifier() else None
    if not (isinstance(found, type) and issubclass(found, transformers.PreTrainedModel)):
        raise EnsError(
            f"{str(folder / CONFIG)!r} names architecture {str(name)[:60]!r}, which transformers "
            f"{transformers.__version__} does not define; ens loads only transformers' own model classes "
            "(upgrade transformers, or export a state_dict with --factory)"
        )
    return found


def _from_pretrained(model_class: Any, folder: Path) -> torch.nn.Module:
    """from_pretrained from local files only, safetensors only; weights that do not fit are refused."""
    try:
        with quiet():
            config = transformers.AutoConfig.from_pretrained(
                str(folder), local_files_only=True, trust_remote_code=False
            )
            extra = {"trust_remote_code": False} if model_class.__name__.startswith("Auto") else {}
            model, report = model_class.from_pretrained(
                str(folder), config=config, local_files_only=True, use_safetensors=True,
                output_loading_info=True, **extra,
            )  # fmt: skip
    except EnsError:
        raise
    except Exception as exc:  # transformers raises OSError, ValueError, KeyError... for a bad folder
        raise EnsError(
            f"transformers cannot load {str(folder)!r} with {model_class.__name__} ({type(exc).__name__}: "
            f"{first_line(exc, 160)}); {SAVE_HINT}"
        ) from exc
    problems = [
        f"{label} {few_keys([str(k) for k in report.get(key) or []])}"
        for key, label in (
            ("missing_keys", "missing keys"),
            ("unexpected_keys", "unexpected keys"),
            ("mismatched_keys", "shape mismatch"),
        )
        if report.get(key)
    ]
    if problems:
        raise EnsError(
            f"the weights in {str(folder)!r} do not fit {type(model).__name__} built from its config.json: "
            f"{'; '.join(problems)}; {SAVE_HINT} from the trained model"
        )
    return model
