"""Keras models whose custom layers use tf.* ops, exported on the TensorFlow backend in a subprocess.

Keras fixes its backend when imported and this process runs it on torch, so a worker process
started with KERAS_BACKEND=tensorflow loads the model once, then runs it on the export's batches
and writes its ONNX graphs (Keras' TensorFlow exporter uses tf2onnx). The parent wraps and verifies
those graphs like any other source's. Requests and replies are JSON lines on the worker's stdin
and a private copy of its stdout; arrays and graphs travel as files in a temporary folder. All
the worker prints (TensorFlow's start-up logs included) goes to a log file, quoted on failure.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from ensemble.errors import EnsError, error_data, raised_error, shorten
from exporters.keras_model import (
    builtin_preprocessing,
    export_onnx,
    input_channels,
    input_hw,
    keras_error_line,
    load_custom_objects,
    load_model,
    output_index,
    output_names,
    run_model,
)
from exporters.request import ExportRequest
from exporters.source import LoadedSource, has_batchnorm

BACKEND = "tensorflow"
WHERE = "on Keras' TensorFlow backend (subprocess)"


def load_on_tensorflow(request: ExportRequest, why: str) -> LoadedSource:
    """A source whose loading, runs and exports happen in a TensorFlow-backend worker process;
    `why` (the torch backend's failure) opens every note and error about it."""
    worker = _Worker(request, why)
    facts = worker.facts
    dict_keys: list = []

    def run(batch: np.ndarray) -> Any:
        out, dict_keys[:] = worker.run(batch)
        return out

    def to_onnx(example: np.ndarray, dynamic_hw: bool, key: Any) -> tuple[onnx.ModelProto, int]:
        hw = None if dynamic_hw else example.shape[1:3]
        return worker.export(hw, example.shape[3]), output_index(key, dict_keys)

    fixed = facts["input_hw"]
    source = LoadedSource(
        framework="keras",
        kind=f"Keras {request.source.suffix} model",
        channels_last=True,
        run=run,
        to_onnx=to_onnx,
        versions=facts["versions"],
        builtin_preprocessing=facts["builtin"],
        fixed_hw=tuple(fixed) if fixed else None,
        channels=facts["channels"],
        output_names=tuple(facts["output_names"]),
        notes=[f"{why}: exported on the TensorFlow backend in a subprocess"],
        batchnorm=bool(facts.get("batchnorm")),
    )
    weakref.finalize(source, worker.close)
    return source


class _Worker:
    """The parent's handle on one worker process; it loads the model as soon as it starts."""

    def __init__(self, request: ExportRequest, why: str) -> None:
        self.why = why
        self.folder = tempfile.TemporaryDirectory(prefix="ens_keras_tf_")
        self.work = Path(self.folder.name)
        self.log = open(self.work / "worker.log", "w+b")  # noqa: SIM115 (closed in close())
        env = {**os.environ, "KERAS_BACKEND": BACKEND, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "exporters.keras_tf", str(self.work)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, env=env, text=True,
        )  # fmt: skip
        job = {
            "source": str(request.source.resolve()),
            "custom_objects": str(request.custom_objects.resolve()) if request.custom_objects else None,
            "trust": request.trust,
        }
        try:
            self.facts = self.ask("load", **job)
        except BaseException:
            self.close()
            raise

    def run(self, batch: np.ndarray) -> tuple[Any, list]:
        np.save(self.work / "batch.npy", batch)
        reply = self.ask("run")
        with np.load(self.work / "outputs.npz") as stored:
            arrays = [stored[f"item_{i}"] for i in range(len(stored.files))]
        keys = reply["keys"]
        if reply["structure"] == "dict":
            return dict(zip(keys, arrays, strict=True)), keys
        return (arrays if reply["structure"] == "list" else arrays[0]), []

    def export(self, hw: tuple[int, int] | None, channels: int = 1) -> onnx.ModelProto:
        self.ask("export", hw=list(hw) if hw else None, channels=int(channels))
        return onnx.load(str(self.work / "raw.onnx"))

    def ask(self, op: str, **args: Any) -> dict:
        """Send one request and wait for its reply; a dead worker is reported with its last log line."""
        try:
            self.process.stdin.write(json.dumps({"op": op, **args}) + "\n")
            self.process.stdin.flush()
            line = self.process.stdout.readline()
        except OSError:  # BrokenPipeError: the worker is gone
            line = ""
        if not line:
            code = self.process.wait()
            raise EnsError(
                f"{self.why}, and the export worker {WHERE} stopped (exit code {code}: "
                f"{self._last_log_line()})"
            )
        reply = json.loads(line)
        if "error" in reply:
            raise EnsError(f"{self.why}, and {WHERE}: {raised_error(reply['error'], op)}")
        return reply

    def _last_log_line(self) -> str:
        self.log.flush()
        self.log.seek(0)
        lines = [ln.strip() for ln in self.log.read().decode("utf-8", "replace").splitlines() if ln.strip()]
        return shorten(lines[-1]) if lines else "no output"

    def close(self) -> None:
        """Stop the worker (it exits when its stdin closes) and delete its folder."""
        with contextlib.suppress(OSError):
            self.process.stdin.close()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process.stdout.close()
        self.log.close()
        self.folder.cleanup()


class _Model:
    """Worker side: the model loaded on the TensorFlow backend, serving run and export requests."""

    def __init__(self, work: Path) -> None:
        self.work = work

    def load(self, source: str, custom_objects: str | None, trust: bool) -> dict:
        import keras

        self.keras = keras
        self.source = Path(source)
        custom = load_custom_objects(Path(custom_objects) if custom_objects else None)
        self.model = load_model(keras, self.source, custom, trust)
        versions = {"keras": keras.__version__, "keras_backend": keras.backend.backend()}
        for name in ("tensorflow", "tf2onnx"):
            versions[name] = _version(name)
        return {
            "input_hw": input_hw(self.model, self.source),
            "channels": input_channels(self.model),
            "versions": versions,
            "builtin": builtin_preprocessing(self.model),
            "output_names": list(output_names(self.model)),
            "batchnorm": has_batchnorm(self.model),
        }

    def run(self) -> dict:
        out, keys = run_model(self.keras, self.model, np.load(self.work / "batch.npy"))
        if isinstance(out, dict):
            structure, arrays = "dict", [out[key] for key in keys]
        elif isinstance(out, (list, tuple)):
            structure, arrays = "list", list(out)
        else:
            structure, arrays = "tensor", [out]
        np.savez(self.work / "outputs.npz", **{f"item_{i}": np.asarray(a) for i, a in enumerate(arrays)})
        return {"structure": structure, "keys": keys}

    def export(self, hw: list[int] | None, channels: int = 1) -> dict:
        export_onnx(self.keras, self.model, self.work / "raw.onnx", tuple(hw) if hw else None, channels)
        return {}


def _version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    for distribution in (name, f"{name}-cpu"):
        with contextlib.suppress(PackageNotFoundError):
            return version(distribution)
    return "unknown"


def _serve(work: Path) -> None:
    """Worker main loop: one JSON request per stdin line, one JSON reply per line on the channel."""
    channel = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # anything printed by TensorFlow, Keras or tf2onnx goes to the log
    sys.stdout = sys.stderr
    model = _Model(work)
    for line in sys.stdin:
        request = json.loads(line)
        op = request.pop("op")
        try:
            reply = getattr(model, op)(**request)
        except Exception as exc:  # any failure of the user's model or of the exporter, as data
            error = error_data(exc)
            if not isinstance(exc, EnsError):
                error["message"] = keras_error_line(exc)  # past Keras' 'Exception encountered' header
            reply = {"error": error}
        channel.write(json.dumps(reply) + "\n")
        channel.flush()


if __name__ == "__main__":
    _serve(Path(sys.argv[1]))
