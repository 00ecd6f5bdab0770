"""`ens check` and `ens convert`: validate and convert submission CSVs."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import typer

from ensemble.cli.app import app
from ensemble.cli.choices import FormatName
from ensemble.cli.common import console, user_errors
from ensemble.cli.rleoptions import (
    LAYOUT,
    ORDER,
    START,
    RleHeaderOpt,
    RleLayoutOpt,
    RleOrderOpt,
    RleStartOpt,
    SourceRleHeaderOpt,
    SourceRleLayoutOpt,
    SourceRleOrderOpt,
    SourceRleStartOpt,
    ToRleHeaderOpt,
    ToRleLayoutOpt,
    ToRleOrderOpt,
    ToRleStartOpt,
    rle_convention,
)
from ensemble.course import N_CLASSES, SHAPE_TEXT
from ensemble.errors import EnsError
from ensemble.scoring.csvmanifest import csv_class_count, csv_image_shape
from ensemble.submission.check import parse_submission
from ensemble.submission.convention import DEFAULT_RLE, RleConvention
from ensemble.submission.io import convert_submission
from ensemble.submission.textids import folder_index


def parse_shape(text: str) -> tuple[int, int]:
    """'64x128' -> (64, 128).

    >>> parse_shape("64x128")
    (64, 128)
    """
    match = re.fullmatch(r"\s*([0-9]{1,9})\s*[xX×]\s*([0-9]{1,9})\s*", text)
    if not match or int(match[1]) < 1 or int(match[2]) < 1:
        raise EnsError(f"--shape {text!r} is not HxW; give height and width like 64x128")
    return int(match[1]), int(match[2])


CsvArg = Annotated[
    Path,
    typer.Argument(help="Submission CSV (flat, or rle under the --rle-* options; detected from the header)."),
]
ShapeOpt = Annotated[str, typer.Option("--shape", help="Image size HxW, e.g. 64x128.")]
NClassesOpt = Annotated[
    int | None,
    typer.Option(
        "--n-classes",
        min=2,
        max=256,
        help="Class count (0..C-1). Default: the manifest beside the CSV, else the classes an rle "
        f"file's rows name, else {N_CLASSES}.",
    ),
]


def class_count(csv: Path, n_classes: int | None, rle: RleConvention) -> int:
    """--n-classes, or the count the CSV's manifest or rows give."""
    return n_classes if n_classes is not None else csv_class_count(csv, rle)


@app.command("check")
@user_errors
def check(
    csv: CsvArg,
    n_images: Annotated[
        int | None, typer.Option("--n-images", min=0, help="Expected image count, e.g. 10022.")
    ] = None,
    shape: ShapeOpt = SHAPE_TEXT,
    n_classes: NClassesOpt = None,
    rle_order: RleOrderOpt = ORDER,
    rle_start: RleStartOpt = START,
    rle_layout: RleLayoutOpt = LAYOUT,
    rle_header: RleHeaderOpt = None,
    data: Annotated[
        Path | None,
        typer.Option(
            "--data",
            file_okay=False,
            help="The image folder the CSV describes: its stems are the ids (each needs its rows) and "
            "its images give each one's size (instead of --shape).",
        ),
    ] = None,
) -> None:
    """Validate a submission CSV before upload; exit 1 listing the first problems.

    An rle file is checked against the --rle-* options (the course's convention by default).
    """
    rle = rle_convention(rle_order, rle_start, rle_layout, rle_header)
    images = folder_index(data) if data is not None else None
    n_classes = class_count(csv, n_classes, rle)
    parsed = parse_submission(csv, parse_shape(shape), n_classes, n_images, rle=rle, images=images)
    for problem in parsed.problems:
        console.print(str(problem), markup=False, highlight=False, soft_wrap=True)
    if parsed.problems:
        more = f" ({parsed.n_hidden} more not shown)" if parsed.n_hidden else ""
        raise EnsError(f"{str(csv)!r} is not a valid submission{more}")
    height, width = parse_shape(shape)
    sizes = f"{height}x{width}" if images is None else images.describe()
    console.print(
        f"OK: {_named(parsed.format, rle)}, {len(parsed.ids)} images, {sizes}",
        markup=False,
        highlight=False,
    )


@app.command("convert")
@user_errors
def convert(
    source: CsvArg,
    target: Annotated[Path, typer.Argument(help="CSV to write (atomically).", dir_okay=False)],
    to: Annotated[FormatName, typer.Option("--to", help="Format to write.")],
    shape: Annotated[
        str | None,
        typer.Option(
            "--shape",
            help="Image size HxW of every image, e.g. 64x128. Default: the size in the manifest beside "
            f"SOURCE; else, where no pixel is renumbered, {SHAPE_TEXT}. Writing flat from rle, or "
            "another --rle-order or --rle-start, needs a size (this, the manifest's or --data).",
        ),
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option(
            "--data",
            file_okay=False,
            help="The image folder the CSV describes: its stems are the ids and its images give each "
            "one's size (instead of --shape).",
        ),
    ] = None,
    n_classes: NClassesOpt = None,
    rle_order: SourceRleOrderOpt = ORDER,
    rle_start: SourceRleStartOpt = START,
    rle_layout: SourceRleLayoutOpt = LAYOUT,
    rle_header: SourceRleHeaderOpt = None,
    to_rle_order: ToRleOrderOpt = ORDER,
    to_rle_start: ToRleStartOpt = START,
    to_rle_layout: ToRleLayoutOpt = LAYOUT,
    to_rle_header: ToRleHeaderOpt = None,
) -> None:
    """Validate a submission and write it in another format (flat <-> rle) or RLE convention.

    --rle-* describe an rle SOURCE, --to-rle-* the rle TARGET (both the course's by default).
    """
    rle = rle_convention(rle_order, rle_start, rle_layout, rle_header)
    to_rle = rle_convention(to_rle_order, to_rle_start, to_rle_layout, to_rle_header)
    if to.value != "rle" and to_rle != DEFAULT_RLE:
        raise EnsError(
            f"--to-rle-* options describe an rle TARGET, not --to {to.value}; drop them or pass --to rle"
        )
    source_format, n_images = convert_submission(
        source,
        target,
        to.value,
        parse_shape(shape) if shape is not None else None if data is not None else csv_image_shape(source),
        class_count(source, n_classes, rle),
        rle=rle,
        to_rle=to_rle,
        data=data,
    )
    console.print(
        f"wrote {target}: {n_images} images, {_named(source_format, rle)} -> {_named(to.value, to_rle)}",
        markup=False,
        highlight=False,
    )


def _named(fmt: str, rle: RleConvention) -> str:
    """A format's name, with its RLE convention in words when that is not the default."""
    return f"{fmt} ({rle.describe()})" if fmt == "rle" and rle != DEFAULT_RLE else fmt
