"""Keras models whose custom layers use tf.* ops, exported on the TensorFlow backend in a subprocess.

Keras fixes its backend when imported and this process runs it on torch, so a child process
started with KERAS_BACKEND=tensorflow loads the model, runs it on the export samples and writes
the ONNX graph (Keras' TensorFlow exporter uses tf2onnx). The parent wraps and verifies that
graph like any other source. Run as `python -m exporters.keras_tf WORKDIR` (a job.json inside).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from ensemble.errors import EnsError
from exporters.request import ExportRequest
from exporters.source import LoadedSource


def load_on_tensorflow(request: ExportRequest, backend: str = "tensorflow") -> LoadedSource:
    """A source whose every run/export happens in a child process on `backend`."""
    if backend == "tensorflow":
        from exporters.keras_export import tensorflow_missing_hint

        if importlib.util.find_spec("tensorflow") is None:
            raise tensorflow_missing_hint(f"--custom-objects {str(request.custom_objects)!r}")
        if importlib.util.find_spec("tf2onnx") is None:
            raise EnsError("exporting on Keras' TensorFlow backend needs tf2onnx; pip install tf2onnx")
    facts = _call(request, backend, None)[0]
    results: dict[bytes, tuple[Any, onnx.ModelProto]] = {}

    def _result(batch: np.ndarray) -> tuple[Any, onnx.ModelProto]:
        key = batch.tobytes() + str(batch.shape).encode()
        if key not in results:
            results[key] = _call(request, backend, batch)[1:]
        return results[key]

    def to_onnx(example: np.ndarray, dynamic_hw: bool, key: Any) -> tuple[onnx.ModelProto, int]:
        from exporters.keras_export import output_index

        outputs, model = _result(example)
        return model, output_index(key, list(outputs) if isinstance(outputs, dict) else [])

    fixed = facts["input_shape"][1:3]
    return LoadedSource(
        framework="keras",
        kind=f"Keras {request.source.suffix} model ({backend} backend, subprocess)",
        channels_last=True,
        run=lambda batch: _result(batch)[0],
        to_onnx=to_onnx,
        versions=facts["versions"],
        builtin_preprocessing=facts["builtin"],
        fixed_hw=tuple(fixed) if None not in fixed else None,
        notes=[f"exported on the Keras {backend} backend in a subprocess"],
    )


def _call(request: ExportRequest, backend: str, batch: np.ndarray | None) -> tuple[dict, Any, Any]:
    with tempfile.TemporaryDirectory(prefix="ens_keras_") as tmp:
        work = Path(tmp)
        job = {
            "source": str(request.source.resolve()),
            "custom_objects": str(request.custom_objects.resolve()) if request.custom_objects else None,
            "trust": request.trust,
            "batch": batch is not None,
        }
        (work / "job.json").write_text(json.dumps(job))
        if batch is not None:
            np.save(work / "batch.npy", batch)
        env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
        done = subprocess.run(
            [sys.executable, "-m", "exporters.keras_tf", str(work)], env=env, capture_output=True, text=True
        )
        result_file = work / "result.json"
        if not result_file.is_file():
            tail = (done.stderr.strip().splitlines() or ["no output"])[-1][:200]
            raise EnsError(f"the Keras {backend} export subprocess failed ({tail})")
        facts = json.loads(result_file.read_text())
        if facts.get("error"):
            raise EnsError(facts["error"])
        if batch is None:
            return facts, None, None
        with np.load(work / "outputs.npz") as stored:
            arrays = {name: stored[name] for name in stored.files}
        outputs: Any = arrays["tensor"] if facts["structure"] == "tensor" else None
        if facts["structure"] == "dict":
            outputs = {key: arrays[f"item_{i}"] for i, key in enumerate(facts["keys"])}
        elif facts["structure"] == "list":
            outputs = [arrays[f"item_{i}"] for i in range(len(facts["keys"]))]
        return facts, outputs, onnx.load(str(work / "raw.onnx"))


def _work(work: Path) -> dict:
    """Child side: load the model, report its facts, run it and export it when a batch is given."""
    import keras

    from exporters.keras_export import (
        OPSET,
        _builtin_preprocessing,
        _input_hw,
        _load_model,
        load_custom_objects,
    )

    job = json.loads((work / "job.json").read_text())
    source = Path(job["source"])
    custom = load_custom_objects(Path(job["custom_objects"]) if job["custom_objects"] else None)
    model = _load_model(keras, source, custom, job["trust"])
    versions = {"keras": keras.__version__, "keras_backend": keras.backend.backend()}
    if keras.backend.backend() == "tensorflow":
        import tensorflow

        versions["tensorflow"] = tensorflow.__version__
    facts = {"input_shape": [None, *(_input_hw(model, source) or (None, None)), 1], "versions": versions,
             "builtin": _builtin_preprocessing(model)}  # fmt: skip
    if not job["batch"]:
        return facts
    batch = np.load(work / "batch.npy")
    out = model(batch, training=False)
    convert = keras.ops.convert_to_numpy
    if isinstance(out, dict):
        facts.update(structure="dict", keys=list(out))
        arrays = {f"item_{i}": convert(v) for i, v in enumerate(out.values())}
    elif isinstance(out, (list, tuple)):
        facts.update(structure="list", keys=list(range(len(out))))
        arrays = {f"item_{i}": convert(v) for i, v in enumerate(out)}
    else:
        facts.update(structure="tensor", keys=[])
        arrays = {"tensor": convert(out)}
    np.savez(work / "outputs.npz", **arrays)
    spec = keras.InputSpec(shape=(None, *batch.shape[1:3], 1))
    model.export(
        str(work / "raw.onnx"), format="onnx", input_signature=[spec], verbose=False, opset_version=OPSET
    )
    return facts


def main(work: Path) -> None:
    try:
        facts = _work(work)
    except EnsError as exc:
        facts = {"error": str(exc)}
    except Exception as exc:  # report any failure of the child in one line
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        facts = {"error": f"the Keras export subprocess raised {type(exc).__name__}: {first}"}
    (work / "result.json").write_text(json.dumps(facts))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
