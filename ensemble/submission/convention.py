"""The RLE convention of a competition: pixel order, first pixel number, row layout, header names.

The default is the course's (column-major, 1-indexed, one `<id>_<class>` row per image and class,
header `ImageId_ClassId,EncodedPixels`); other competitions number pixels row-major, from 0, or keep
the class in a column of its own. A header cannot say how pixels are numbered, so order and start
are always the user's to give.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ensemble.data.folder import FORMULA_STARTS
from ensemble.errors import EnsError

ORDERS = ("column", "row")
STARTS = (1, 0)
LAYOUTS = ("per-class", "class-column")
DEFAULT_HEADERS = {
    "per-class": ("ImageId_ClassId", "EncodedPixels"),
    "class-column": ("ImageId", "ClassId", "EncodedPixels"),
}
LAYOUT_ROWS = {"per-class": "<id>_<class>,<runs>", "class-column": "<id>,<class>,<runs>"}
_NAME = re.compile(r"[!#-+\--~](?:[ !#-+\--~]*[!#-+\--~])?")  # printable ASCII, no comma or quote


@dataclass(frozen=True)
class RleConvention:
    """How run-length CSV rows number pixels and name their columns.

    `order`: "column" (top-to-bottom, then left-to-right) or "row" (left-to-right, then down);
    `start`: the number of the first pixel, 1 or 0; `layout`: "per-class" (`<id>_<class>,<runs>`,
    one row per image and class) or "class-column" (`<id>,<class>,<runs>`); `header`: the column
    names, a tuple or one comma-separated string, None for the layout's default.

    >>> RleConvention(layout="class-column").header
    ('ImageId', 'ClassId', 'EncodedPixels')
    >>> RleConvention("row", 0, header="id,predicted").options()
    ['--rle-order row', '--rle-start 0', "--rle-header 'id,predicted'"]
    """

    order: str = "column"
    start: int = 1
    layout: str = "per-class"
    header: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        _choose("pixel order", self.order, ORDERS)
        if isinstance(self.start, bool) or self.start not in STARTS:
            raise EnsError(f"RLE start {self.start!r} is not one of 1, 0 (the number of the first pixel)")
        _choose("layout", self.layout, LAYOUTS)
        header = DEFAULT_HEADERS[self.layout] if self.header is None else self.header
        if isinstance(header, str):
            header = tuple(header.split(","))
        object.__setattr__(self, "header", _check_header(tuple(header), self.layout))

    @property
    def header_line(self) -> bytes:
        """The header line as written, without its newline."""
        return ",".join(self.header).encode()

    @property
    def n_fields(self) -> int:
        return len(self.header)

    def options(self) -> list[str]:
        """The `--rle-*` options that select this convention; none for the default."""
        chosen = [
            f"--rle-order {self.order}" if self.order != DEFAULT_RLE.order else "",
            f"--rle-start {self.start}" if self.start != DEFAULT_RLE.start else "",
            f"--rle-layout {self.layout}" if self.layout != DEFAULT_RLE.layout else "",
            f"--rle-header '{','.join(self.header)}'" if self.header != DEFAULT_HEADERS[self.layout] else "",
        ]
        return [option for option in chosen if option]

    def describe(self) -> str:
        """In words, e.g. 'row-major 0-indexed class-column RLE (ImageId,ClassId,EncodedPixels)'."""
        return f"{self.order}-major {self.start}-indexed {self.layout} RLE ({','.join(self.header)})"

    def to_json(self) -> dict:
        return {"order": self.order, "start": self.start, "layout": self.layout, "header": list(self.header)}


def header_hint(header_line: bytes, rle: RleConvention) -> str:
    """For a header that could be another RLE convention's, the options that read it; else ''."""
    try:
        names = tuple(header_line.decode("ascii").split(","))
        layout = {2: "per-class", 3: "class-column"}[len(names)]
        other = RleConvention(rle.order, rle.start, layout, names)
    except (UnicodeDecodeError, KeyError, EnsError):
        return ""
    known = "looks like" if names == DEFAULT_HEADERS[layout] else "if it is"
    options = " ".join(other.options()) or "no --rle-* options"
    return (
        f"; {known} {layout} RLE, read it with {options} (pixel order and start are not in a header: "
        "see --rle-order, --rle-start)"
    )


def _choose(what: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise EnsError(f"RLE {what} {value!r} is not one of {', '.join(allowed)}")


def _check_header(names: tuple[str, ...], layout: str) -> tuple[str, ...]:
    """Names of printable ASCII without commas or quotes, distinct, as many as the layout's fields."""
    expected = len(DEFAULT_HEADERS[layout])
    text = ",".join(map(str, names))
    example = ",".join(DEFAULT_HEADERS[layout])
    if len(names) != expected:
        raise EnsError(
            f"RLE header {text!r} has {len(names)} names; the {layout} layout has {expected} columns, "
            f"{LAYOUT_ROWS[layout]}, e.g. {example!r}"
        )
    bad = next((n for n in names if not isinstance(n, str) or not _NAME.fullmatch(n)), None)
    if bad is not None:
        raise EnsError(
            f"RLE header name {bad!r} is not allowed; names are printable ASCII without commas, quotes or "
            f"surrounding spaces, e.g. {example!r}"
        )
    formula = next((n for n in names if n[:1] in FORMULA_STARTS), None)
    if formula is not None:
        raise EnsError(
            f"RLE header name {formula!r} starts with {formula[0]!r}, which spreadsheets run as a formula; "
            f"start names with a letter, e.g. {example!r}"
        )
    if len(set(names)) != len(names):
        raise EnsError(f"RLE header {text!r} repeats a name; every column needs its own")
    return names


DEFAULT_RLE = RleConvention()


def check_convention(rle) -> RleConvention:
    """An RleConvention (as `RleConvention(order=..., start=..., layout=..., header=...)` builds)."""
    if not isinstance(rle, RleConvention):
        raise EnsError(
            f"rle {type(rle).__name__} is not an RleConvention; e.g. RleConvention(layout='class-column')"
        )
    return rle
