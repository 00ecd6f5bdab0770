"""`ens export`: turn a PyTorch or Keras model file into a verified member of the store."""

from __future__ import annotations

from pathlib import Path

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
from ensemble.cli.exportoptions import (
    BenchOpt,
    ChannelOrder,
    ChannelOrderOpt,
    ChannelsOpt,
    ClassNamesOpt,
    CustomObjectsOpt,
    DataOpt,
    FactoryKwargsOpt,
    FactoryOpt,
    ForceOpt,
    GrayToRgbExportOpt,
    HeightOpt,
    InputRangeOpt,
    KerasBackend,
    KerasBackendOpt,
    MeanOpt,
    NameOpt,
    OutDirOpt,
    OutputOpt,
    QuantizeOpt,
    ScaleOpt,
    SizeMultipleOpt,
    SourceArg,
    StdOpt,
    ToleranceOpt,
    TrustOpt,
    ValMiouOpt,
    WidthOpt,
)
from ensemble.cli.members_cmd import bench_members, format_size
from ensemble.cli.quantize_cmd import check_quantize, quantize_and_report
from ensemble.data.split import DEFAULT_SEED, DEFAULT_VAL_FRACTION
from ensemble.errors import EnsError
from ensemble.extras import optional_import
from ensemble.members.member import DEFAULT_STORE


def _exporters():
    """Import the exporters lazily: they are the only part of ens that needs torch or keras."""
    return optional_import("exporters", needed_by="ens export", extra="torch")


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
    bench: BenchOpt = True,
    quantize: QuantizeOpt = None,
) -> None:
    """Export a model to models/NAME.onnx with the contract folded in, verified against the source."""
    ex = _exporters()
    from exporters.preprocessing import refuse_scale
    from exporters.request import parse_class_names, parse_factory_kwargs

    if scale is not None:
        raise refuse_scale(scale)
    check_quantize(quantize)
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
    _report(result, request.gray_to_rgb)
    _after_export(result.member, data or DEFAULT_DATA, masks, request.split, bench, quantize)


def _report(result, gray_to_rgb: bool) -> None:
    """The lines about a written member: file, size, input, parity, classes, quality and notes."""
    member, info = result.member, result.member.info
    size = "dynamic H, W" if result.dynamic_hw else f"{info.input_hw[0]}x{info.input_hw[1]} fixed"
    if result.dynamic_hw and info.size_multiple > 1:
        size += f", padded to multiples of {info.size_multiple}"
    size += ", RGB" if info.input_channels == 3 else ""
    size += ", gray copied to RGB inside" if gray_to_rgb else ""
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


def _after_export(
    member, data_path: Path, masks: Path | None, split, bench: bool, quantize: str | None
) -> None:
    """--bench and --quantize on the written member, when the data they run on is there."""
    if (bench or quantize) and not data_path.exists():
        what = "runtime not timed" + (", no int8 copy written" if quantize else "")
        console.print(f"{what}: the data {str(data_path)!r} is absent", markup=False, highlight=False)
        return
    if bench:
        try:
            bench_members([member], data_path, masks)
        except EnsError as exc:  # the member is written: a runtime not chosen now is chosen by predict
            console.print(f"runtime not timed: {exc}", markup=False, highlight=False, soft_wrap=True)
    if quantize:
        quantize_and_report(member, data_path, masks, split)
