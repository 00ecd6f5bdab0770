"""The packages Kaggle's Python notebook image ships, which `ens bundle --skip-preinstalled` leaves out.

The list holds only packages present in every 2024-2025 release of Kaggle's Python image
(github.com/Kaggle/docker-python): pandas, matplotlib, numba and keras with what they depend on.
A notebook's pip keeps an installed version that meets ens's requirements, so leaving these out saves
space without changing what runs.
"""

from __future__ import annotations

KAGGLE_PREINSTALLED = (
    "contourpy",
    "cycler",
    "fonttools",
    "kiwisolver",
    "llvmlite",
    "markdown-it-py",
    "matplotlib",
    "mdurl",
    "numba",
    "numpy",
    "packaging",
    "pandas",
    "pillow",
    "pygments",
    "pyparsing",
    "python-dateutil",
    "pytz",
    "rich",
    "six",
    "typing-extensions",
    "tzdata",
)


def canonical(name: str) -> str:
    """A project name as pip compares it: lower case, runs of -_. as one dash.

    >>> canonical("Typing_Extensions")
    'typing-extensions'
    """
    out = name.lower()
    for sep in "_.":
        out = out.replace(sep, "-")
    while "--" in out:
        out = out.replace("--", "-")
    return out


def wheel_project(filename: str) -> str:
    """The canonical project name of a wheel file name.

    >>> wheel_project("python_dateutil-2.9.0.post0-py2.py3-none-any.whl")
    'python-dateutil'
    """
    return canonical(filename.split("-", 1)[0])
