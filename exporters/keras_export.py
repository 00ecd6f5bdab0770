"""Keras sources: `.keras` and `.h5` files saved by Keras 3, exported on the torch backend.

Keras picks its backend at import, so the torch backend is selected here before keras is
imported. The model is loaded and run on a sample batch; when that fails inside a custom layer
(layers written with `tf.*` ops run only on the TensorFlow backend), the export moves to
`exporters.keras_tf`, a subprocess on the TensorFlow backend; when torch's ONNX exporter fails, the
graph comes from that subprocess, verified against the torch backend's outputs. `--keras-backend`
forces one backend (no move). Files written by Keras 2 (tf.keras)
are refused with a rebuild hint: Keras 3 may load them differently, and parity against such a
reload would not prove the member matches the model that was trained.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
import traceback
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from ensemble.capture import quiet
from ensemble.errors import EnsError, first_line
from exporters.keras_model import (
    KERAS_CALL_HEADER,
    builtin_preprocessing,
    export_onnx,
    input_channels,
    input_hw,
    keras_error_line,
    load_custom_objects,
    load_model,
    missing_tensorflow,
    output_index,
    output_names,
    run_model,
    tensorflow_missing_hint,
)
from exporters.request import ExportRequest
from exporters.samples import FALLBACK_HW, data_hw, load_samples
from exporters.source import LoadedSource, has_batchnorm

FORCED_TENSORFLOW = "--keras-backend tensorflow"


def load_keras(request: ExportRequest, source_format: str) -> LoadedSource:
    """Load a Keras 3 model (with --custom-objects) on the torch backend and run a sample batch;
    when that fails inside a custom layer, export on the TensorFlow backend in a subprocess, and when
    torch's ONNX exporter fails, convert there (unless --keras-backend chose one backend)."""
    path = request.source
    refuse_keras2(path)
    if request.keras_backend == "tensorflow":
        return _on_tensorflow(request, f"Keras' torch backend was skipped ({FORCED_TENSORFLOW})")
    keras = import_keras()
    custom = load_custom_objects(request.custom_objects)
    try:
        model = load_model(keras, path, custom, request.trust)
    except EnsError as exc:
        retried = _retry_on_tensorflow(keras, request, custom, exc)
        if retried is None:
            raise
        return retried
    fixed_hw = input_hw(model, path)
    channels = input_channels(model)
    try:
        run_model(keras, model, _probe_batch(request, fixed_hw, channels))
    except Exception as exc:  # the pipeline reports other failures on the real images
        retried = _retry_on_tensorflow(keras, request, custom, exc)
        if retried is not None:
            return retried

    dict_keys: list = []

    def run(batch: np.ndarray) -> Any:
        out, dict_keys[:] = run_model(keras, model, batch)
        return out

    converter: list[LoadedSource] = []  # the TensorFlow-backend worker, once torch's exporter failed

    def to_onnx(example: np.ndarray, dynamic_hw: bool, key: Any) -> tuple[onnx.ModelProto, int]:
        if converter:
            return converter[0].to_onnx(example, dynamic_hw, None)[0], output_index(key, dict_keys)
        failure = None
        with tempfile.TemporaryDirectory() as tmp, quiet() as log:
            target = Path(tmp) / "raw.onnx"
            try:
                export_onnx(keras, model, target, example.shape[1:3], example.shape[3])
                raw = onnx.load(str(target))
            except Exception as exc:  # keras/torch exporter failure: reported below in one line
                failure = exc
        if failure is not None:
            reason = first_line(failure, 160) if str(failure).strip() else log.last_line()
            what = f"keras could not export {path.name!r} to ONNX ({type(failure).__name__}: {reason})"
            converter.append(_convert_on_tensorflow(request, what, failure))
            # the pipeline reads the notes and versions after its builds, so they tell what happened
            source.notes[:] = [
                f"torch's ONNX exporter failed ({type(failure).__name__}): graph exported on the TensorFlow "
                "backend in a subprocess, checked against the torch backend's outputs"
            ]
            source.versions.update(converter[0].versions)
            return to_onnx(example, dynamic_hw, key)
        return raw, output_index(key, dict_keys)

    versions = {"keras": keras.__version__, "keras_backend": keras.backend.backend()}
    if keras.backend.backend() == "torch":
        import torch

        versions["torch"] = torch.__version__.split("+")[0]
    forced = " (--keras-backend torch)" if request.keras_backend == "torch" else ""
    source = LoadedSource(
        framework="keras",
        kind=f"Keras {path.suffix} model",
        channels_last=True,
        run=run,
        to_onnx=to_onnx,
        versions=versions,
        builtin_preprocessing=builtin_preprocessing(model),
        fixed_hw=fixed_hw,
        channels=channels,
        output_names=output_names(model),
        notes=[f"exported on Keras' torch backend{forced}"],
        batchnorm=has_batchnorm(model),
    )
    return source


def _probe_batch(request: ExportRequest, fixed_hw: tuple[int, int] | None, channels: int) -> np.ndarray:
    """Two seeded images at the export size (as far as it is known before the data is read)."""
    given = (request.height, request.width) if request.height is not None else None
    hw = given or fixed_hw or data_hw(request.data) or FALLBACK_HW
    return load_samples(None, True, hw, channels).pixels()[:2].transpose(0, 2, 3, 1).copy()


def _retry_on_tensorflow(keras, request: ExportRequest, custom: dict, exc: Exception) -> LoadedSource | None:
    """The model on the TensorFlow backend (in a subprocess) when `exc` happened inside a custom
    layer, a hint to install TensorFlow when it is absent, and None for any other failure."""
    if request.keras_backend == "torch":
        return None
    failure = exc.__cause__ if isinstance(exc, EnsError) and exc.__cause__ is not None else exc
    names = {key.split(">")[-1] for key in keras.saving.get_custom_objects()}
    names |= {getattr(value, "__name__", key) for key, value in custom.items()}
    layer = failing_custom_layer(failure, request.custom_objects, names)
    if layer is None:
        return None
    missing = missing_tensorflow()
    if missing:
        raise tensorflow_missing_hint(
            f"custom layer {layer} failed on Keras' torch backend ({type(failure).__name__}: "
            f"{keras_error_line(failure)})",
            missing,
        ) from exc
    from exporters.keras_tf import load_on_tensorflow

    return load_on_tensorflow(
        request, f"custom layer {layer} failed on the torch backend ({type(failure).__name__})"
    )


def _on_tensorflow(request: ExportRequest, why: str) -> LoadedSource:
    """The model on Keras' TensorFlow backend as asked by --keras-backend, or why that cannot be."""
    missing = missing_tensorflow()
    if missing:
        raise EnsError(
            f"{FORCED_TENSORFLOW} needs {' and '.join(missing)}, which {'are' if len(missing) > 1 else 'is'} "
            "not installed; pip install 'ens[tensorflow]' (tensorflow-cpu, tf2onnx), or drop --keras-backend "
            "to export on torch"
        )
    from exporters.keras_tf import load_on_tensorflow

    return load_on_tensorflow(request, why)


def _convert_on_tensorflow(request: ExportRequest, what: str, failure: Exception) -> LoadedSource:
    """The TensorFlow-backend worker that converts the model torch's exporter could not (`what`), or
    `what` with the way out when --keras-backend torch was given or TensorFlow is absent."""
    if request.keras_backend == "torch":
        raise EnsError(
            f"{what}; --keras-backend tensorflow converts it on TensorFlow's backend instead"
        ) from failure
    missing = missing_tensorflow()
    if missing:
        raise EnsError(
            f"{what}; pip install 'ens[tensorflow]' ({' and '.join(missing)}) to convert it on Keras' "
            "TensorFlow backend in a subprocess"
        ) from failure
    from exporters.keras_tf import load_on_tensorflow

    return load_on_tensorflow(request, what)


def failing_custom_layer(exc: BaseException, custom_file: Path | None, names: set[str]) -> str | None:
    """The name of the custom layer an exception came from: a frame of the --custom-objects file
    on its traceback (its `self`), or a registered custom class named by Keras' call context."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if custom_file is not None:
            for frame, _ in traceback.walk_tb(current.__traceback__):
                if _same_file(frame.f_code.co_filename, custom_file):
                    owner = frame.f_locals.get("self")
                    return repr(type(owner).__name__ if owner is not None else frame.f_code.co_name)
        called = re.search(KERAS_CALL_HEADER + r" (\w+)", str(current))
        if called and called.group(1) in names:
            return repr(called.group(1))
        current = current.__cause__ or current.__context__
    return None


def _same_file(name: str, path: Path) -> bool:
    try:
        return Path(name).resolve() == path.resolve()
    except OSError:
        return False


def import_keras():
    """Import keras on the torch backend (unless this process already imported it)."""
    if "keras" not in sys.modules:
        os.environ["KERAS_BACKEND"] = "torch"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # a custom-objects file may import TensorFlow
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
