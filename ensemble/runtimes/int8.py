"""An int8 copy of a member: ONNX Runtime's static QDQ quantization (`onnxruntime.quantization`),
calibrated on training images.

Convolutions and matrix products get QuantizeLinear/DequantizeLinear pairs (uint8 activations, int8
weights per output channel, MinMax ranges over the calibration images); the input normalisation and the
final softmax stay float32, so the copy keeps the member contract (raw 0..255 float32 pixels in, float32
probabilities out). OpenVINO's NNCF would be the other choice; it is not a dependency of ens.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from google.protobuf.message import DecodeError

from ensemble.errors import EnsError, first_line
from ensemble.files.atomic import write_bytes
from ensemble.members.contract import INPUT_NAME, PREFIX
from ensemble.members.member import Member
from ensemble.members.padding import pad, padded_size

QUANTIZED_OPS = ("Conv", "MatMul", "Gemm")
# Two runtimes' int8 kernels round differently, so `auto` accepts another runtime for an int8 copy
# within this of ONNX Runtime (its val mIoU is measured on the runtime chosen for it).
INT8_PARITY_TOLERANCE = 0.1
CALIBRATION_IMAGES = 64
QUANTIZATION_KEY = PREFIX + "quantization"  # metadata: how the copy was made, and from which member
INT8_SUFFIX = "_int8"


class _Calibration:
    """A `CalibrationDataReader`: one padded float32 batch of raw pixels per call, then None."""

    def __init__(self, batches: Iterator[np.ndarray]) -> None:
        self.batches = batches

    def get_next(self) -> dict | None:
        batch = next(self.batches, None)
        return None if batch is None else {INPUT_NAME: batch}


def calibration_batches(member: Member, pixels: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
    """Float32 (B, C_in, H, W) pixel batches padded to the sizes `member` runs on in the pipeline."""
    for batch in pixels:
        yield pad(np.ascontiguousarray(batch, np.float32), padded_size(member, batch.shape[2:]))


def quantize_member(member: Member, pixels: Iterable[np.ndarray], target: Path, described: str) -> None:
    """Write the int8 copy of `member` to `target`, calibrated on `pixels` (float32 (B, C_in, H, W)
    batches of raw training pixels); its metadata is the member's plus `ens.quantization`."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    reader = _Calibration(calibration_batches(member, pixels))
    with tempfile.TemporaryDirectory(prefix="ens_int8_") as tmp:
        out = Path(tmp) / "int8.onnx"
        try:
            with _quiet_root_logger():
                quantize_static(
                    str(member.path), str(out), reader, quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                    op_types_to_quantize=list(QUANTIZED_OPS), calibrate_method=CalibrationMethod.MinMax,
                )  # fmt: skip
        except (
            ValueError,
            RuntimeError,
            onnx.checker.ValidationError,
            ort.capi.onnxruntime_pybind11_state.Fail,
        ) as exc:
            raise EnsError(
                f"ONNX Runtime could not quantize member {member.name!r} ({type(exc).__name__}: "
                f"{first_line(exc, 160)}); keep the float32 member"
            ) from exc
        model = onnx.load(str(out))
    source = onnx.load(str(member.path), load_external_data=False)
    del model.metadata_props[:]
    for prop in source.metadata_props:
        model.metadata_props.add(key=prop.key, value=prop.value)
    note = (
        f"int8 static QDQ by onnxruntime {ort.__version__} quantize_static ({', '.join(QUANTIZED_OPS)}; "
        f"uint8 activations, int8 per-channel weights, MinMax) from member {member.name!r} (sha256 "
        f"{member.sha256[:12]}), calibrated on {described}"
    )
    model.metadata_props.add(key=QUANTIZATION_KEY, value=note)
    write_bytes(target, model.SerializeToString())


@contextlib.contextmanager
def _quiet_root_logger():
    """onnxruntime.quantization advises pre-processing through the root logger: keep it off the output."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def with_val_miou(path: Path, val_miou: float, scored_on: str) -> bytes:
    """The int8 copy at `path` with its own val mIoU in its metadata (it held the float32 member's)."""
    model = onnx.load(str(path))
    values = {PREFIX + "val_miou": repr(float(val_miou)), PREFIX + "val_miou_from": scored_on}
    for prop in model.metadata_props:
        if prop.key in values:
            prop.value = values.pop(prop.key)
    for key, value in values.items():
        model.metadata_props.add(key=key, value=value)
    return model.SerializeToString()


def quantization_note(path: Path) -> str | None:
    """The `ens.quantization` note of a member file, or None for one that is not an int8 copy (or not
    an ONNX file at all)."""
    try:
        model = onnx.load(str(path), load_external_data=False)
    except (OSError, DecodeError):
        return None
    return next((p.value for p in model.metadata_props if p.key == QUANTIZATION_KEY), None)
