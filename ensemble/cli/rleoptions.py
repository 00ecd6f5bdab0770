"""The `--rle-*` options: the RLE convention of the CSV a command writes (`ens predict`) or reads
(`ens check`, `ens score`, the SOURCE of `ens convert`; `--to-rle-*` for its TARGET), spelt alike."""

from __future__ import annotations

from typing import Annotated

import typer

from ensemble.cli.choices import RleLayout, RleOrder, RleStart
from ensemble.submission.convention import DEFAULT_HEADERS, DEFAULT_RLE, RleConvention


def _options(prefix: str, panel: str):
    """The four options under `--<prefix>rle-`, shown together in the help panel `panel`."""
    headers = ", ".join(f"{','.join(names)} ({layout})" for layout, names in DEFAULT_HEADERS.items())
    return (
        Annotated[
            RleOrder,
            typer.Option(
                f"--{prefix}rle-order",
                help="Pixel numbering of the runs: column (top to bottom, then left to right) "
                "or row (left to right, then top to bottom).",
                rich_help_panel=panel,
            ),
        ],
        Annotated[
            RleStart,
            typer.Option(f"--{prefix}rle-start", help="Number of the first pixel.", rich_help_panel=panel),
        ],
        Annotated[
            RleLayout,
            typer.Option(
                f"--{prefix}rle-layout",
                help="per-class: one row <id>_<class>,<runs> per image and class; class-column: "
                "rows <id>,<class>,<runs>.",
                rich_help_panel=panel,
            ),
        ],
        Annotated[
            str | None,
            typer.Option(
                f"--{prefix}rle-header",
                help=f"Comma-separated column names, checked exactly. Default: {headers}.",
                rich_help_panel=panel,
            ),
        ],
    )


RleOrderOpt, RleStartOpt, RleLayoutOpt, RleHeaderOpt = _options("", "RLE convention (rle files)")
SourceRleOrderOpt, SourceRleStartOpt, SourceRleLayoutOpt, SourceRleHeaderOpt = _options(
    "", "RLE convention of SOURCE (rle files)"
)
ToRleOrderOpt, ToRleStartOpt, ToRleLayoutOpt, ToRleHeaderOpt = _options(
    "to-", "RLE convention of TARGET (--to rle)"
)

ORDER = RleOrder(DEFAULT_RLE.order)
START = RleStart(str(DEFAULT_RLE.start))
LAYOUT = RleLayout(DEFAULT_RLE.layout)


def rle_convention(order: RleOrder, start: RleStart, layout: RleLayout, header: str | None) -> RleConvention:
    """The convention the four options give."""
    return RleConvention(order.value, int(start.value), layout.value, header)
