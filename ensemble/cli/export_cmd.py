"""`ens export`: turn a PyTorch or Keras model file into a verified member of the store."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from ensemble.cli.app import app
from ensemble.cli.common import (
    DEFAULT_DATA,
    DropOutliersOpt,
    MasksOpt,
    SplitSeedOpt,
    ValFractionOpt,
    ValIdsOpt,
    console,
    split_spec,
    user_errors,
)
from ensemble.cli.members_cmd import format_size
from ensemble.data.split import DEFAULT_SEED, DEFAULT_VAL_FRACTION
from ensemble.errors import EnsError
from ensemble.members.member import DEFAULT_STORE


class ChannelOrder(str, Enum):
    rgb = "rgb"
    bgr = "bgr"


class KerasBackend(str, Enum):
    auto = "auto"
    torch = "torch"
    tensorflow = "tensorflow"


def _exporters():
    """Import the exporters lazily: they are the only part of ens that needs torch or keras."""
    try:
        import exporters
    except ImportError as exc:
        raise EnsError(
            f"the exporters need {exc.name}, which is not installed; pip install 'ens[torch]'"
        ) from None
    return exporters


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


@app.command("export")
@user_errors
def export(
    source: SourceArg,
    name: NameOpt,
    factory: FactoryOpt = None,
    factory_kwargs: FactoryKwargsOpt = None,
    input_range: InputRangeOpt = None,
    mean: MeanOpt = None,
    std: StdOpt = None,
    custom_objects: CustomObjectsOpt = None,
    data: DataOpt = None,
    trust: TrustOpt = False,
    tolerance: ToleranceOpt = 1e-4,
    height: HeightOpt = None,
    width: WidthOpt = None,
    class_names: ClassNamesOpt = None,
    val_miou: ValMiouOpt = None,
    out_dir: OutDirOpt = DEFAULT_STORE,
    force: ForceOpt = False,
    split_seed: SplitSeedOpt = DEFAULT_SEED,
    val_fraction: ValFractionOpt = DEFAULT_VAL_FRACTION,
    val_ids: ValIdsOpt = None,
    drop_outliers: DropOutliersOpt = True,
    scale: ScaleOpt = None,
    channels: ChannelsOpt = None,
    channel_order: ChannelOrderOpt = ChannelOrder.rgb,
    masks: MasksOpt = None,
    size_multiple: SizeMultipleOpt = None,
    output: OutputOpt = None,
    gray_to_rgb: GrayToRgbExportOpt = False,
    keras_backend: KerasBackendOpt = KerasBackend.auto,
) -> None:
    """Export a model to models/NAME.onnx with the contract folded in, verified against the source."""
    ex = _exporters()
    from exporters.preprocessing import refuse_scale
    from exporters.request import parse_class_names, parse_factory_kwargs

    if scale is not None:
        raise refuse_scale(scale)
    request = ex.ExportRequest(
        source=source, name=name, factory=factory, factory_kwargs=parse_factory_kwargs(factory_kwargs),
        normalisation=ex.Normalisation.from_options(
            input_range, mean, std, channel_order.value, 3 if gray_to_rgb and channels is None else channels
        ),
        custom_objects=custom_objects,
        data=data, trust=trust, tolerance=tolerance, height=height, width=width,
        class_names=parse_class_names(class_names), val_miou=val_miou, out_dir=out_dir, force=force,
        split=split_spec(split_seed, val_fraction, val_ids, drop_outliers, data),
        channels=channels, masks=masks, size_multiple=size_multiple, output=output, gray_to_rgb=gray_to_rgb,
        keras_backend=keras_backend.value,
    )  # fmt: skip
    result = ex.export_member(request, default_data=DEFAULT_DATA)
    member, info = result.member, result.member.info
    size = "dynamic H, W" if result.dynamic_hw else f"{info.input_hw[0]}x{info.input_hw[1]} fixed"
    if result.dynamic_hw and info.size_multiple > 1:
        size += f", padded to multiples of {info.size_multiple}"
    size += ", RGB" if info.input_channels == 3 else ""
    size += ", gray copied to RGB inside" if request.gray_to_rgb else ""
    console.print(
        f"[green]wrote[/] {escape(str(member.path))} ({format_size(member.size_bytes)}, {size}) "
        f"in {result.seconds:.1f} s\n"
        f"  parity max abs error {info.parity_max_abs_err:.2e} | {info.n_classes} classes: "
        f"{escape(', '.join(info.class_names))} | preprocessing {escape(info.preprocessing)}\n"
        f"  {escape(result.quality_note)}\n"
        f"  {escape('; '.join(result.notes))}",
        highlight=False,
        soft_wrap=True,
    )
