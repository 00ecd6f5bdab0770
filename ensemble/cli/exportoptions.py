"""The options of `ens export`: how a model file becomes a member, declared once for its command."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from ensemble.cli.common import DEFAULT_DATA


class ChannelOrder(str, Enum):
    rgb = "rgb"
    bgr = "bgr"


class KerasBackend(str, Enum):
    auto = "auto"
    torch = "torch"
    tensorflow = "tensorflow"


SourceArg = Annotated[
    Path,
    typer.Argument(
        help="Model file, recognised by its content: a state_dict (.pt/.pth/.ckpt/.bin/.safetensors, with "
        "--factory), a Hugging Face save_pretrained folder (config.json + model.safetensors), a .keras/.h5 "
        "Keras 3 model, or, with --trust, a TorchScript file, a torch.export .pt2 archive or a pickled model."
    ),
]
NameOpt = Annotated[str, typer.Option("--name", help="Member name in the store (letters, digits, _ or -).")]
FactoryOpt = Annotated[
    str | None,
    typer.Option(
        "--factory",
        help="module:callable that builds the net of a state_dict, e.g. monai.networks.nets:UNet; a "
        "transformers model class (transformers:SegformerForSemanticSegmentation) gets its config built "
        "from --factory-kwargs.",
    ),
]
FactoryKwargsOpt = Annotated[
    str | None, typer.Option("--factory-kwargs", help="JSON object of keyword arguments for --factory.")
]
InputRangeOpt = Annotated[
    str | None,
    typer.Option(
        "--input-range",
        help="Value range the net was trained on: 0-255 (raw pixels, the default), 0-1 (x/255, what "
        "Keras Rescaling(1/255) gives) or -1-1 (x/127.5-1). Raw 0..255 pixels are mapped onto it.",
    ),
]
MeanOpt = Annotated[
    str | None,
    typer.Option(
        "--mean",
        help="Then subtract M, in --input-range units (needs --std), e.g. --input-range 0-1 --mean 0.449; "
        "one value per channel for an RGB net, in its channel order: --mean 0.485,0.456,0.406.",
    ),
]
StdOpt = Annotated[
    str | None,
    typer.Option(
        "--std",
        help="Then divide by S, in --input-range units, e.g. --std 0.226, or 0.229,0.224,0.225 per channel.",
    ),
]
ChannelsOpt = Annotated[
    int | None,
    typer.Option(
        "--channels",
        help="Input channels of the net: 1 (grayscale, the default) or 3 (RGB). Keras models declare theirs.",
    ),
]
ChannelOrderOpt = Annotated[
    ChannelOrder,
    typer.Option(
        "--channel-order",
        help="Channel order the RGB net was trained on; bgr (OpenCV) reverses the member's RGB input.",
    ),
]
SizeMultipleOpt = Annotated[
    int | None,
    typer.Option(
        "--size-multiple",
        min=1,
        help="H and W must be multiples of this (e.g. 32 for five 2x poolings); other images are "
        "reflect-padded to the next multiple and the output cropped back. Default: measured on the "
        "exported member (the smallest power of two it runs at).",
    ),
]
GrayToRgbExportOpt = Annotated[
    bool,
    typer.Option(
        "--gray-to-rgb",
        help="The net is RGB (--channels 3) but the member takes grayscale images: the gray channel is "
        "copied into R, G and B inside the member, so it joins grayscale members.",
    ),
]
OutputOpt = Annotated[
    str | None,
    typer.Option(
        "--output",
        help="Which output of a multi-output model (deep supervision, aux heads) the member keeps: a dict "
        "key or Keras output layer name, or an index into a tuple (default: the one score map at the "
        "input size).",
    ),
]
KerasBackendOpt = Annotated[
    KerasBackend,
    typer.Option(
        "--keras-backend",
        help="Keras backend that runs and converts a Keras model: torch, tensorflow (a subprocess; needs "
        "ens[tensorflow]) or auto (torch, moving to tensorflow when a custom layer or torch's ONNX "
        "conversion fails).",
    ),
]
ScaleOpt = Annotated[float | None, typer.Option("--scale", hidden=True, help="Refused: use --input-range.")]
CustomObjectsOpt = Annotated[
    Path | None,
    typer.Option(
        "--custom-objects",
        dir_okay=False,
        help="Python file registering custom Keras layers (importing it runs it: needs --trust).",
    ),
]
DataOpt = Annotated[
    Path | None,
    typer.Option(
        "--data",
        help=f"Course-format npz or image folder: its images are used for the parity check and its "
        f"labelled validation split (a folder's with --masks) to score the member (default {DEFAULT_DATA}; "
        "seeded random images when that is absent).",
    ),
]
TrustOpt = Annotated[
    bool,
    typer.Option(
        "--trust",
        help="Allow inputs that run code: pickled models, TorchScript and torch.export archives, Keras "
        "Lambda layers, --custom-objects files and a --factory module that is not installed (a .py path, "
        "or found outside the standard library and site-packages, e.g. in the current folder).",
    ),
]
ToleranceOpt = Annotated[
    float, typer.Option("--tolerance", help="Largest allowed abs difference of probabilities, ORT vs source.")
]
HeightOpt = Annotated[
    int | None, typer.Option("--height", min=1, help="Export height (default: the model's, else the data's).")
]
WidthOpt = Annotated[int | None, typer.Option("--width", min=1, help="Export width (with --height).")]
ClassNamesOpt = Annotated[
    str | None,
    typer.Option(
        "--class-names", help="Comma-separated class names (default: the AN2DL names for 5 classes)."
    ),
]
ValMiouOpt = Annotated[
    float | None,
    typer.Option(
        "--val-miou",
        help="Validation mIoU (0..1) measured in training: checked against the member's own score when "
        "--data has labels, recorded as given otherwise.",
    ),
]
OutDirOpt = Annotated[Path, typer.Option("--out-dir", file_okay=False, help="Member store folder.")]
ForceOpt = Annotated[
    bool,
    typer.Option(
        "--force",
        help="Replace a member exported from another file; skip the store's class check; write a member "
        "that is degenerate on the validation split, scores better under another --input-range, or "
        "scores away from --val-miou.",
    ),
]
BenchOpt = Annotated[
    bool,
    typer.Option(
        "--bench/--no-bench",
        help="Choose the member's runtime for `ens predict` now: a few seconds of timing on this machine "
        "on the images of --data, cached, so the first prediction of any size runs it on its fastest "
        "runtime.",
    ),
]
QuantizeOpt = Annotated[
    str | None,
    typer.Option(
        "--quantize",
        help="int8: also write NAME_int8, statically quantized with calibration on training images of "
        "--data, kept only when its val mIoU is within 0.002 of this member's and it runs >= 1.3x faster "
        "(see `ens quantize`).",
    ),
]
