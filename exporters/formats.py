"""What a source file is, decided by its bytes, not its name.

A file's suffix says what its author meant; its content says what loading it will do. A zip
named `.pt` that holds a torch.export program is loaded like a `.pt2`, and so needs `--trust`
like one. The suffix is only used to word the error for content no loader recognises. A folder is a
TensorFlow SavedModel (saved_model.pb) or a Hugging Face `save_pretrained` folder (config.json).
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from ensemble.errors import EnsError

KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")
TORCH_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")
TORCH_EXPORT_SUFFIX = ".pt2"
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
PICKLE_PROTO = b"\x80"

FORMATS = {
    "torch.export": "torch.export archive",
    "torchscript": "TorchScript archive",
    "torch": "PyTorch checkpoint (torch.save)",
    "keras": "Keras .keras archive",
    "keras.h5": "Keras HDF5 file",
    "savedmodel": "TensorFlow SavedModel folder",
    "safetensors": "safetensors state_dict",
    "transformers": "Hugging Face transformers folder",
}
"""Format -> how messages name it."""

ALLOWED = (
    f"a .keras/.h5 (Keras) or {'/'.join(TORCH_SUFFIXES)}/{TORCH_EXPORT_SUFFIX}/.safetensors (PyTorch) file"
)
FOLDERS = "a save_pretrained folder (config.json + model.safetensors) or a SavedModel folder"


def detect_format(path: Path) -> str:
    """One of FORMATS, from the file's content (a zip's member names, magic bytes)."""
    if path.is_dir():
        if (path / "saved_model.pb").is_file():
            return "savedmodel"
        if (path / "config.json").is_file():
            return "transformers"
        raise EnsError(
            f"source {str(path)!r} is a folder but not a model folder; pass {ALLOWED}, or {FOLDERS}"
        )
    if not path.is_file():
        raise EnsError(f"source file {str(path)!r} does not exist; pass {ALLOWED}")
    found = _by_content(path)
    if found:
        return found
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        raise EnsError(
            f"{str(path)!r} is already ONNX; export from the framework file (.pt/.pth/.pt2/.keras/.h5) "
            "so the member contract and parity can be checked, or list it with `ens members`"
        )
    if suffix in (".keras", TORCH_EXPORT_SUFFIX):  # their loaders explain what is wrong with the file
        return "keras" if suffix == ".keras" else "torch.export"
    if suffix == ".safetensors":
        return "safetensors"  # its reader says what is wrong with the file
    if suffix in TORCH_SUFFIXES:
        return "torch"  # torch.load(weights_only=True) reads it, or says why not
    if suffix in KERAS_SUFFIXES:
        return "keras.h5"
    raise EnsError(
        f"cannot tell what {str(path)!r} holds: it is not a zip, HDF5 or pickle file and its suffix "
        f"{suffix or '(none)'!r} names no framework; pass {ALLOWED}"
    )


def _by_content(path: Path) -> str | None:
    with open(path, "rb") as handle:
        head = handle.read(9)
    if _is_safetensors(path, head):
        return "safetensors"
    if head.startswith(HDF5_MAGIC):
        return "keras.h5"
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError):
            return None
        return _zip_format(names)
    if head.startswith(PICKLE_PROTO):
        return "torch"
    return None


def _is_safetensors(path: Path, head: bytes) -> bool:
    """A safetensors file: an 8-byte little-endian header length, then that many bytes of JSON."""
    if len(head) < 9 or head[8:9] != b"{":
        return False
    length = int.from_bytes(head[:8], "little")
    if not 2 <= length <= min(path.stat().st_size - 8, 100_000_000):
        return False
    with open(path, "rb") as handle:
        handle.seek(8)
        try:
            return isinstance(json.loads(handle.read(length)), dict)
        except (ValueError, UnicodeDecodeError):
            return False


def _zip_format(names: list[str]) -> str | None:
    """torch.export before TorchScript before a plain checkpoint: each later layout is a subset."""
    if any(n == "models/model.json" or n.endswith("/models/model.json") for n in names):
        return "torch.export"
    if any(n.endswith("/constants.pkl") or "/code/" in n for n in names):
        return "torchscript"
    if any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
        return "torch"
    if "config.json" in names and ("metadata.json" in names or "model.weights.h5" in names):
        return "keras"
    return None
