"""Keras sources: `.keras` and `.h5` files saved by Keras 3, exported on the torch backend.

Keras picks its backend at import, so the torch backend is selected here before keras is
imported. Custom layers written with `tf.*` ops only run on the TensorFlow backend: those models
are exported by `exporters.keras_tf` in a subprocess. Files written by Keras 2 (tf.keras) are
refused with a rebuild hint: Keras 3 may load them differently, and parity against such a
reload would not prove the member matches the model that was trained.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from ensemble.errors import EnsError
from exporters.formats import KERAS_SUFFIXES
from exporters.quiet import quiet
from exporters.request import ExportRequest
from exporters.source import LoadedSource
from exporters.trust import untrusted

OPSET = 18
PREPROCESSING_LAYERS = ("Rescaling", "Normalization")
TF_IMPORT = re.compile(r"^\s*(import tensorflow|from tensorflow)\b", re.MULTILINE)


def load_keras(request: ExportRequest, source_format: str) -> LoadedSource:
    """Load a Keras 3 model (with --custom-objects) and describe how to run and convert it."""
    path = request.source
    refuse_keras2(path)
    if uses_tensorflow(request.custom_objects):
        from exporters.keras_tf import load_on_tensorflow

        return load_on_tensorflow(request)
    keras = import_keras()
    custom = load_custom_objects(request.custom_objects)
    model = _load_model(keras, path, custom, request.trust)
    fixed_hw = _input_hw(model, path)

    dict_keys: list = []

    def run(batch: np.ndarray) -> Any:
        with quiet():
            out = model(batch, training=False)
        if isinstance(out, dict):
            dict_keys[:] = list(out)
        return keras.tree.map_structure(lambda t: np.asarray(keras.ops.convert_to_numpy(t)), out)

    def to_onnx(example: np.ndarray, dynamic_hw: bool, key: Any) -> tuple[onnx.ModelProto, int]:
        spec = keras.InputSpec(shape=(None, *example.shape[1:3], 1))
        failure = None
        with tempfile.TemporaryDirectory() as tmp, quiet() as log:
            target = Path(tmp) / "raw.onnx"
            try:
                model.export(
                    str(target), format="onnx", input_signature=[spec], verbose=False, opset_version=OPSET
                )
                raw = onnx.load(str(target))
            except Exception as exc:  # keras/torch exporter failure: reported below in one line
                failure = exc
        if failure is not None:
            text = str(failure).strip()
            raise EnsError(
                f"keras could not export {path.name!r} to ONNX ({type(failure).__name__}: "
                f"{text.splitlines()[0][:160] if text else log.last_line()})"
            )
        return raw, output_index(key, dict_keys)

    versions = {"keras": keras.__version__, "keras_backend": keras.backend.backend()}
    if keras.backend.backend() == "torch":
        import torch

        versions["torch"] = torch.__version__.split("+")[0]
    return LoadedSource(
        framework="keras",
        kind=f"Keras {path.suffix} model",
        channels_last=True,
        run=run,
        to_onnx=to_onnx,
        versions=versions,
        builtin_preprocessing=_builtin_preprocessing(model),
        fixed_hw=fixed_hw,
    )


def import_keras():
    """Import keras on the torch backend (unless this process already imported it)."""
    if "keras" not in sys.modules:
        os.environ["KERAS_BACKEND"] = "torch"
    try:
        with quiet():
            import keras
    except ImportError as exc:
        raise EnsError(
            f"exporting a Keras model needs keras 3 and torch ({exc}); pip install 'ens[keras,torch]'"
        ) from None
    return keras


def refuse_keras2(path: Path) -> None:
    """Fail with a rebuild hint for files written by Keras 2 (tf.keras) or TensorFlow SavedModels."""
    hint = (
        "rebuild the architecture in Keras 3, call model.load_weights() with the trained weights "
        "and save it with model.save('model.keras')"
    )
    if path.is_dir():
        raise EnsError(
            f"{str(path)!r} is a TensorFlow SavedModel folder (Keras 2), which Keras 3 cannot load; {hint}"
        )
    version = _saved_version(path)
    if version and not version.startswith("3"):
        raise EnsError(
            f"{str(path)!r} was saved by Keras {version} (Keras 2 / tf.keras), which Keras 3 cannot "
            f"load faithfully; {hint}"
        )


def _saved_version(path: Path) -> str:
    if path.suffix.lower() == ".keras":
        if not zipfile.is_zipfile(path):
            raise EnsError(
                f"{str(path)!r} is not a .keras archive (not a zip file); save it with model.save()"
            )
        with zipfile.ZipFile(path) as archive:
            if "metadata.json" not in archive.namelist():
                return ""
            return str(json.loads(archive.read("metadata.json")).get("keras_version", ""))
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            version = handle.attrs.get("keras_version", b"")
            has_config = "model_config" in handle.attrs
    except OSError as exc:
        raise EnsError(
            f"{str(path)!r} is not an HDF5 file ({exc}); pass a .h5 saved by model.save()"
        ) from None
    version = version.decode() if isinstance(version, bytes) else str(version)
    if not has_config:
        raise EnsError(
            f"{str(path)!r} holds weights only (no model_config); build the model in Keras 3, "
            "load_weights() this file and save the whole model with model.save('model.keras')"
        )
    return version


def uses_tensorflow(custom_objects: Path | None) -> bool:
    """True when the custom-objects file imports TensorFlow (its layers need that backend)."""
    if custom_objects is None:
        return False
    if not custom_objects.is_file():
        raise EnsError(
            f"--custom-objects {str(custom_objects)!r} does not exist; pass the .py file defining the layers"
        )
    return bool(TF_IMPORT.search(custom_objects.read_text(errors="replace")))


def tensorflow_missing_hint(what: str) -> EnsError:
    return EnsError(
        f"{what} uses TensorFlow ops (tf.*), which run only on Keras' TensorFlow backend, and "
        "TensorFlow is not installed; pip install tensorflow tf2onnx (the export then runs on that "
        "backend in a subprocess), or rewrite the layers with keras.ops"
    )


def load_custom_objects(path: Path | None) -> dict:
    """Execute the file (its @register_keras_serializable classes register themselves) and
    return its `custom_objects` dict, if any."""
    if path is None:
        return {}
    spec = importlib.util.spec_from_file_location(f"ens_custom_objects_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        with quiet():
            spec.loader.exec_module(module)
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] == "tensorflow":
            raise tensorflow_missing_hint(f"--custom-objects {str(path)!r}") from None
        raise EnsError(
            f"--custom-objects {str(path)!r} imports {exc.name!r}, which is not installed"
        ) from None
    except Exception as exc:  # user code
        raise EnsError(
            f"--custom-objects {str(path)!r} raised {type(exc).__name__}: {str(exc)[:200]}"
        ) from None
    objects = getattr(module, "custom_objects", {}) or {}
    if not isinstance(objects, dict):
        raise EnsError(
            f"--custom-objects {str(path)!r} defines custom_objects as a {type(objects).__name__}; "
            "make it a dict of name -> class"
        )
    return dict(objects)


def output_index(key: Any, dict_keys: list) -> int:
    """Index of the chosen output among the exported graph's outputs (keras flattens dicts by
    sorted key); the parity check confirms the choice."""
    if isinstance(key, str):
        return sorted(dict_keys).index(key)
    return key or 0


def _load_model(keras, path: Path, custom: dict, trust: bool):
    lambdas = lambda_layers(path)
    if lambdas and not trust:
        raise untrusted(
            f"{str(path)!r} holds {_few(lambdas)}",
            "a Lambda layer is Python code that runs when the model is built and called",
            "or replace the Lambda with a layer registered by @keras.saving.register_keras_serializable()",
        )
    if path.suffix.lower() not in KERAS_SUFFIXES:
        raise EnsError(
            f"{str(path)!r} holds a Keras model but is named {path.suffix or '(no suffix)'!r}, and Keras "
            "loads by suffix; rename it to .keras (a zip archive) or .h5 (HDF5)"
        )
    try:
        with quiet():
            return keras.saving.load_model(path, custom_objects=custom, compile=False, safe_mode=not trust)
    except Exception as exc:  # keras raises ValueError/TypeError with long messages
        text = str(exc).strip()
        first = (text.splitlines()[0] if text else type(exc).__name__)[:200]
        if "safe_mode" in text or "arbitrary code" in text:
            raise untrusted(
                f"{str(path)!r} holds Python code (e.g. a Lambda layer)",
                "it runs when the model is loaded",
                "or replace it with a registered layer",
            ) from exc
        if "tensorflow" in text.lower():
            raise tensorflow_missing_hint(f"{str(path)!r}") from exc
        named = [layer for layer in lambdas if "(function " in layer]
        if named and re.search(r"Could not locate function|could not be deserialized", text):
            raise EnsError(
                f"{str(path)!r} holds {_few(named)}, whose Python function the file does not contain "
                "(only its name); pass --custom-objects FILE.py that defines it, with --trust"
            ) from exc
        if re.search(r"Could not locate|Unknown (layer|object)|custom_objects", text):
            raise EnsError(
                f"{str(path)!r} uses a custom class Keras does not know ({first}); pass --custom-objects "
                "FILE.py defining it with @keras.saving.register_keras_serializable() (with --trust)"
            ) from exc
        raise EnsError(f"cannot load {str(path)!r} with Keras ({type(exc).__name__}: {first})") from exc


def lambda_layers(path: Path) -> list[str]:
    """The Lambda layers of a saved model's config, read as JSON (nothing is built), described like
    "Lambda layer 'scale_in' (function 'scale')" or "... (a lambda)"."""
    found: list[str] = []
    stack = [_saved_config(path)]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(reversed(node))
        elif isinstance(node, dict):
            if node.get("class_name") == "Lambda" and isinstance(node.get("config"), dict):
                config = node["config"]
                function = config.get("function")
                named = isinstance(function, dict) and function.get("class_name") == "function"
                what = f"function {function.get('config')!r}" if named else "a lambda"
                found.append(f"Lambda layer {config.get('name', '?')!r} ({what})")
            stack.extend(reversed(list(node.values())))
    return found


def _saved_config(path: Path):
    """The model config JSON of a .keras archive or an .h5 file; None when it cannot be read."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                return json.loads(archive.read("config.json"))
        import h5py

        with h5py.File(path, "r") as handle:
            config = handle.attrs.get("model_config")
        return json.loads(config.decode() if isinstance(config, bytes) else config) if config else None
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None


def _few(items: list[str], shown: int = 2) -> str:
    return ", ".join(items[:shown]) + (f" (+{len(items) - shown} more)" if len(items) > shown else "")


def _input_hw(model, path: Path) -> tuple[int, int] | None:
    shape = model.input_shape
    if isinstance(shape, list) or (shape and isinstance(shape[0], (tuple, list))):
        raise EnsError(f"{str(path)!r} has {len(shape)} inputs; a member takes one image batch")
    if len(shape) != 4 or shape[-1] != 1:
        raise EnsError(
            f"{str(path)!r} takes input {tuple(shape)}; a member takes grayscale (N, H, W, 1) in Keras"
        )
    height, width = shape[1], shape[2]
    return (int(height), int(width)) if height is not None and width is not None else None


def _builtin_preprocessing(model) -> str:
    """Describe Rescaling/Normalization layers inside the model (they already handle raw pixels)."""
    found = []
    layers, stack = [], list(getattr(model, "layers", []))
    while stack:
        layer = stack.pop(0)
        layers.append(layer)
        stack[:0] = list(getattr(layer, "layers", []))
    for layer in layers:
        kind = type(layer).__name__
        if kind == "Rescaling":
            config = layer.get_config()
            with contextlib.suppress(TypeError, ValueError):
                found.append(f"Rescaling(x*{float(config['scale']):.6g}+{float(config['offset']):g})")
                continue
            found.append("Rescaling")
        elif kind in PREPROCESSING_LAYERS:
            found.append(f"{kind} layer {layer.name!r}")
    return ", ".join(found)
