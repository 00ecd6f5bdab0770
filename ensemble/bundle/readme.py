"""The bundle's README.md: how to use it in a Kaggle notebook, with run.py as a notebook cell."""

from __future__ import annotations

from pathlib import Path

from ensemble.bundle import runscript
from ensemble.bundle.target import Target

MAIN_BLOCK = 'if __name__ == "__main__":'
CELL_CALL = """BUNDLE = Path("/kaggle/input/DATASET")  # the folder of this README
DATA = "/kaggle/input/COMPETITION/test"  # a folder of images or a course-format .npz
if main([DATA], BUNDLE) != 0:
    raise RuntimeError("the bundle did not run; see the lines above")
"""


def run_script() -> str:
    """run.py: the source of `ensemble.bundle.runscript`, verbatim."""
    return Path(runscript.__file__).read_text(encoding="utf-8")


def notebook_cell() -> str:
    """run.py as a notebook cell: the same code, called with the dataset's paths instead of argv."""
    source = run_script()
    return source[: source.index(MAIN_BLOCK)] + CELL_CALL


def readme(target: Target, members: list[str], command: str, version: str) -> str:
    """README.md of a bundle."""
    return f"""# ens bundle: {", ".join(members)}

Made with ens {version} by `{command}` for {target.describe()}.

- `wheels/`: ens and every package it needs, installed with `pip install --no-index` (no internet).
- `models/`: the members and the ensemble file (`ensemble.json`), checked by sha256 before they run.
- `run.py`: verifies every file against `bundle.json`, installs from `wheels/`, then runs `ens predict`
  on a folder of images or an .npz and writes `submission.csv` in the current folder.
- `bundle.json`: the target, the versions, every file's sha256 and size, the command that made it.

## In a Kaggle notebook without internet

Upload this folder (or its .zip) as a Kaggle dataset and add it to the notebook. Then in a cell:

```
!python /kaggle/input/DATASET/run.py /kaggle/input/COMPETITION/test
```

More `ens predict` options go after `--`, e.g. `run.py DATA -- --format flat`.
The same as one notebook cell (set `BUNDLE` and `DATA` at its end):

```python
{notebook_cell()}```
"""
