"""What a pickle would import when unpickled: the names that make a file code, not data.

Used to explain a refusal, never to decide safety: `torch.load(weights_only=True)` decides, and
this reading says what the file holds instead of calling it damaged. Unpickling any of these
names can run code, so the file needs `--trust`.
"""

from __future__ import annotations

import io
import pickletools
import zipfile
from pathlib import Path

STRING_OPS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "STRING", "BINSTRING",
              "SHORT_BINSTRING"}  # fmt: skip
PUT_OPS = {"PUT", "BINPUT", "LONG_BINPUT"}
GET_OPS = {"GET", "BINGET", "LONG_BINGET"}
TENSOR_GLOBALS = ("torch._utils._rebuild", "collections.OrderedDict", "torch.serialization._get_layout")


def file_imports(path: Path) -> list[str]:
    """The imports of a torch.save file: its `data.pkl` in the zip format, else the whole file."""
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                pickles = [n for n in archive.namelist() if n.endswith("data.pkl")]
                return pickle_imports(archive.read(pickles[0])) if pickles else []
        except (zipfile.BadZipFile, OSError, KeyError):
            return []
    return pickle_imports(path.read_bytes())


def pickle_imports(data: bytes) -> list[str]:
    """'module.name' of every GLOBAL, STACK_GLOBAL and INST in the pickles at the start of `data`,
    first occurrence only; reading stops at the first byte that is not a pickle.

    >>> import pickle, collections
    >>> pickle_imports(pickle.dumps(collections.OrderedDict(a=1), protocol=4))
    ['collections.OrderedDict']
    """
    found: list[str] = []
    stream = io.BytesIO(data)
    while stream.tell() < len(data):
        start = stream.tell()
        strings: list[str] = []
        memo: dict = {}
        last: str | None = None
        try:
            for opcode, arg, _ in pickletools.genops(stream):
                name = opcode.name
                if name in ("GLOBAL", "INST"):
                    found.append(str(arg).replace(" ", "."))
                elif name == "STACK_GLOBAL":
                    found.append(".".join(strings[-2:]) if len(strings) >= 2 else "(a computed name)")
                if name in STRING_OPS:
                    last = arg if isinstance(arg, str) else arg.decode("latin-1")
                    strings.append(last)
                elif name in PUT_OPS or name == "MEMOIZE":
                    memo[arg if name in PUT_OPS else len(memo)] = last
                elif name in GET_OPS and memo.get(arg) is not None:
                    strings.append(memo[arg])
                else:
                    last = None
        except Exception:  # not (or no longer) a pickle: what was read so far is the answer
            break
        if stream.tell() == start:
            break
    return list(dict.fromkeys(name.replace("__builtin__.", "builtins.") for name in found))


def code_imports(names: list[str], shown: int = 3) -> str:
    """The imports worth naming in a message, code before tensor plumbing, e.g. 'posix.system'."""
    code = [n for n in names if not n.startswith(TENSOR_GLOBALS) and not n.endswith("Storage")]
    first = sorted(code, key=lambda n: n.startswith("torch."))
    text = ", ".join(first[:shown])
    return text + (f" (+{len(first) - shown} more)" if len(first) > shown else "")
