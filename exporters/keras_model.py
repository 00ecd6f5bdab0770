"""A Keras 3 model file on whichever backend this process runs: load it with its custom objects,
describe its input and built-in preprocessing, and export it to ONNX.

Shared by the torch-backend loader (`exporters.keras_export`) and the TensorFlow-backend worker
(`exporters.keras_tf`); it never chooses a backend and imports keras only through its callers.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import re
import zipfile
from pathlib import Path
from typing import Any

import onnx

from ensemble.capture import quiet
from ensemble.errors import EnsError, first_line
from exporters.formats import KERAS_SUFFIXES
from exporters.keras_onnx import replace_erfc, static_layer_norm
from exporters.trust import untrusted

OPSET = 18
PREPROCESSING_LAYERS = ("Rescaling", "Normalization")
TENSORFLOW_PACKAGES = ("tensorflow", "tf2onnx")
KERAS_CALL_HEADER = "Exception encountered when calling"


def missing_tensorflow() -> list[str]:
    """Which of TensorFlow and tf2onnx (Keras' TensorFlow ONNX exporter) cannot be imported."""
    missing = []
    for name in TENSORFLOW_PACKAGES:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):  # a broken or blocked install counts as absent
            found = False
        if not found:
            missing.append(name)
    return missing


def tensorflow_missing_hint(what: str, missing: list[str] | None = None) -> EnsError:
    names = " and ".join(missing or ["tensorflow"])
    return EnsError(
        f"{what}; layers that use TensorFlow ops (tf.*) run only on Keras' TensorFlow backend, and "
        f"{names} {'are' if ' and ' in names else 'is'} not installed; pip install 'ens[tensorflow]' "
        "(tensorflow-cpu, tf2onnx) to export them on that backend in a subprocess, or rewrite the "
        "layers with keras.ops"
    )


def load_custom_objects(path: Path | None) -> dict:
    """Execute the file (its @register_keras_serializable classes register themselves) and
    return its `custom_objects` dict, if any. Nothing is executed without --custom-objects."""
    if path is None:
        return {}
    if not path.is_file():
        raise EnsError(
            f"--custom-objects {str(path)!r} does not exist; pass the .py file defining the layers"
        )
    spec = importlib.util.spec_from_file_location(f"ens_custom_objects_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        with quiet():
            spec.loader.exec_module(module)
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] == "tensorflow":
            raise tensorflow_missing_hint(f"--custom-objects {str(path)!r} imports tensorflow") from exc
        raise EnsError(
            f"--custom-objects {str(path)!r} imports {exc.name!r}, which is not installed"
        ) from exc
    except Exception as exc:  # user code
        raise EnsError(
            f"--custom-objects {str(path)!r} raised {type(exc).__name__}: {str(exc)[:200]}"
        ) from exc
    objects = getattr(module, "custom_objects", {}) or {}
    if not isinstance(objects, dict):
        raise EnsError(
            f"--custom-objects {str(path)!r} defines custom_objects as a {type(objects).__name__}; "
            "make it a dict of name -> class"
        )
    return dict(objects)


def load_model(keras, path: Path, custom: dict, trust: bool):
    """keras.saving.load_model without compiling; Lambda code only runs with --trust."""
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
        first = keras_error_line(exc)
        if "safe_mode" in text or "arbitrary code" in text:
            raise untrusted(
                f"{str(path)!r} holds Python code (e.g. a Lambda layer)",
                "it runs when the model is loaded",
                "or replace it with a registered layer",
            ) from exc
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


def keras_error_line(exc: BaseException) -> str:
    """`first_line` of a Keras error, past its 'Exception encountered when calling X.call().' header."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].startswith(KERAS_CALL_HEADER):
        return first_line(ValueError("\n".join(lines[1:])))
    return first_line(exc)


def input_hw(model, path: Path) -> tuple[int, int] | None:
    """The (H, W) the model declares, None when dynamic; one grayscale or RGB NHWC input is required."""
    shape = model.input_shape
    if isinstance(shape, list) or (shape and isinstance(shape[0], (tuple, list))):
        raise EnsError(f"{str(path)!r} has {len(shape)} inputs; a member takes one image batch")
    if len(shape) != 4 or shape[-1] not in (1, 3):
        raise EnsError(
            f"{str(path)!r} takes input {tuple(shape)}; a member takes grayscale (N, H, W, 1) or RGB "
            "(N, H, W, 3) images in Keras"
        )
    height, width = shape[1], shape[2]
    return (int(height), int(width)) if height is not None and width is not None else None


def input_channels(model) -> int:
    """The channel count of the model's (checked) NHWC input: 1 or 3."""
    return int(model.input_shape[-1])


def output_names(model) -> tuple[str, ...]:
    """The names Keras gives the model's outputs: its output layers' names (`--output` takes them)."""
    try:
        names = model.output_names
    except (AttributeError, TypeError, ValueError):  # e.g. a subclassed model that was never built
        return ()
    return tuple(str(name) for name in names or ())


def builtin_preprocessing(model) -> str:
    """Describe Rescaling/Normalization layers inside the model (they already handle raw pixels);
    quietly, as reading a layer may import TensorFlow, whose start-up logs would reach the terminal."""
    with quiet():
        return _preprocessing_layers(model)


def _preprocessing_layers(model) -> str:
    found = []
    layers, stack = [], list(getattr(model, "layers", []))
    while stack:
        layer = stack.pop(0)
        layers.append(layer)
        stack[:0] = list(getattr(layer, "layers", []))
    for layer in layers:
        kind = type(layer).__name__
        if kind == "Rescaling":  # its attributes, not get_config(), which imports TensorFlow when installed
            with contextlib.suppress(TypeError, ValueError, AttributeError):
                found.append(f"Rescaling(x*{float(layer.scale):.6g}+{float(layer.offset):g})")
                continue
            found.append("Rescaling")
        elif kind in PREPROCESSING_LAYERS:
            found.append(f"{kind} layer {layer.name!r}")
    return ", ".join(found)


def run_model(keras, model, batch) -> tuple[Any, list]:
    """The model's output on a NHWC batch as numpy (tensor, list or dict) and its dict keys, if any."""
    with quiet():
        out = model(batch, training=False)
    keys = list(out) if isinstance(out, dict) else []
    return keras.tree.map_structure(lambda t: keras.ops.convert_to_numpy(t), out), keys


def export_onnx(keras, model, target: Path, hw: tuple[int, int] | None, channels: int = 1) -> None:
    """model.export to ONNX for a float32 (N, H, W, channels) input; hw None leaves H and W dynamic.
    The backend's known conversion gaps are repaired (`exporters.keras_onnx`)."""
    spec = keras.InputSpec(shape=(None, *(hw or (None, None)), channels), dtype="float32")
    on_torch = keras.backend.backend() == "torch"
    with static_layer_norm() if on_torch else contextlib.nullcontext():
        model.export(str(target), format="onnx", input_signature=[spec], verbose=False, opset_version=OPSET)
    if not on_torch:
        graph = onnx.load(str(target))
        if replace_erfc(graph):
            onnx.save(graph, str(target))


def output_index(key: Any, dict_keys: list) -> int:
    """Index of the chosen output among the exported graph's outputs (keras flattens dicts by
    sorted key); the parity check confirms the choice."""
    if isinstance(key, str):
        return sorted(dict_keys).index(key)
    return key or 0
