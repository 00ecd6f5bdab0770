"""One export: load the source, fold the contract in, verify, record provenance, write the member.

Order matters for the user: cheap checks (name, overwrite, file kind) come before loading
frameworks; the store's class names are checked before the file is written; the file is written
atomically only after the checker, the contract checks and the parity check have passed.
"""

from __future__ import annotations

import importlib
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import onnx

from ensemble.errors import EnsError
from ensemble.files.atomic import write_bytes
from ensemble.files.hashing import path_sha256
from ensemble.files.outputs import refuse_overwrite
from ensemble.members.contract import CONTRACT_VERSION, MemberInfo
from ensemble.members.member import Member, load_member
from ensemble.members.session import build_session
from ensemble.members.store import list_member_files
from exporters.checker import Checker
from exporters.contract import attach_metadata, opset_of
from exporters.formats import FORMATS, detect_format
from exporters.inputs import net_channels, padding_multiple
from exporters.quality import CLAIM_TOLERANCE, Quality, likely_causes, measure_quality
from exporters.request import ExportRequest, class_names_for
from exporters.samples import FALLBACK_HW, Samples, data_hw, load_samples
from exporters.source import LoadedSource
from exporters.trust import check_trust

LOADERS = {
    "torch": ("exporters.torch_export", "load_torch", "torch"),
    "torchscript": ("exporters.torch_export", "load_torch", "torch"),
    "torch.export": ("exporters.torch_export", "load_torch", "torch"),
    "keras": ("exporters.keras_export", "load_keras", "keras,torch"),
    "keras.h5": ("exporters.keras_export", "load_keras", "keras,torch"),
    "savedmodel": ("exporters.keras_export", "load_keras", "keras,torch"),
    "safetensors": ("exporters.torch_export", "load_torch", "torch,transformers"),
    "transformers": ("exporters.transformers_export", "load_transformers", "torch,transformers"),
}


@dataclass(frozen=True)
class ExportResult:
    """The written member and what the export found out."""

    member: Member
    seconds: float
    dynamic_hw: bool
    notes: tuple[str, ...]
    quality: Quality | None = None
    quality_note: str = ""


def export_member(request: ExportRequest, default_data: Path | None = None) -> ExportResult:
    """Convert `request.source` into a verified member file; raise EnsError on any user-fixable problem.

    Without request.data, images come from `default_data`, or a seeded random batch when it is absent.
    """
    started = time.perf_counter()
    source_format = detect_format(request.source)
    data = request.data or default_data
    refuse_overwrite({"--out-dir/--name": request.target}, _inputs(request, data))
    check_trust(request, source_format)
    sha256 = path_sha256(request.source)
    replacing = _check_target(request, sha256)
    source = _load(source_format, request)
    takes = net_channels(request, source)
    request.normalisation.check_channels(takes)
    channels = 1 if request.gray_to_rgb else takes
    samples = load_samples(data, request.data is None, _export_hw(request, source, data), channels)
    if source.builtin_preprocessing and not request.normalisation.is_identity:
        raise EnsError(
            f"the model already normalises raw pixels ({source.builtin_preprocessing}), so its input range "
            f"is 0-255; drop --input-range/--mean/--std (they would apply {request.normalisation.formula()} "
            "on top)"
        )
    check = Checker(request, source, samples)
    class_names = class_names_for(check.reference.shape[1], request.class_names)
    _check_store(request, class_names)
    info_args = (request, source, class_names, sha256, samples, check.factor)
    fixed_reason = "the model declares its input size" if source.fixed_hw else None
    multiple, size_note = request.size_multiple or 1, ""
    if fixed_reason is None:
        model, error, fixed_reason, session = check.build(True, _info(*info_args, dynamic_hw=True))
    dynamic_hw = fixed_reason is None
    if dynamic_hw:
        multiple, size_note = padding_multiple(check, session, request.size_multiple)
        measured = _info(*info_args, dynamic_hw=True, opset=opset_of(model), size_multiple=multiple)
        attach_metadata(model, measured, {})
    else:
        model, error, _, _ = check.build(False, _info(*info_args, dynamic_hw=False))
    quality, quality_note = _judge(
        model, request, data, class_names, source.builtin_preprocessing, channels, source.batchnorm
    )
    notes = [
        source.kind,
        check.output_note,
        "softmax appended (the source emits logits)" if check.logits else "the source emits probabilities",
        check.resize_note(),
        *source.notes,
        f"H, W fixed: {fixed_reason}" if fixed_reason else f"H, W dynamic{size_note}",
        replacing,
    ]
    notes = [note for note in notes if note]
    val_miou = quality.val_miou if quality else request.val_miou
    info = _info(
        *info_args, dynamic_hw=dynamic_hw, error=error, opset=opset_of(model), val_miou=val_miou,
        size_multiple=multiple,
    )  # fmt: skip
    extra = {
        "parity_inputs": samples.origin,
        "export_notes": "; ".join(notes),
        "val_miou_from": quality_note,
        "source_output": f"{check.choice.label} of {check.choice.count}" if check.choice.count > 1 else "",
    }
    if quality is None and request.val_miou is not None:
        extra["val_miou_from"] = "--val-miou, given at export; " + quality_note
    attach_metadata(model, info, extra)
    write_bytes(request.target, model.SerializeToString())
    member = load_member(request.target, request.name)
    return ExportResult(
        member, time.perf_counter() - started, dynamic_hw, tuple(notes), quality, quality_note
    )


def _inputs(request: ExportRequest, data: Path | None) -> dict:
    """Every file and folder an export reads, by the option that names it."""
    factory_file = request.factory.partition(":")[0] if request.factory else ""
    return {
        "the source model": request.source,
        "--data": data,
        "--masks": request.masks,
        "--custom-objects": request.custom_objects,
        "--factory": factory_file if factory_file.endswith(".py") else None,
    }


def _check_target(request: ExportRequest, sha256: str) -> str:
    """May the member file be (re)written? Yes when it is absent, holds a member of this same source
    file, or --force is given; return the note to record when one is replaced."""
    target = request.target
    if not target.exists():
        return ""
    try:
        existing = load_member(target, request.name)
    except EnsError:
        existing = None
    if existing is not None and existing.info.source_sha256 == sha256:
        return f"replaced {target.name}, a member of the same source file"
    if request.force:
        return f"replaced {target.name} (--force)"
    if existing is None:
        raise EnsError(
            f"{str(target)!r} already exists and is not an ens member; choose another --name or --out-dir, "
            "or pass --force to replace it"
        )
    raise EnsError(
        f"member {str(target)!r} already exists, exported from {existing.info.source_file!r} (sha256 "
        f"{existing.info.source_sha256[:12]}), a different file than {request.source.name!r} (sha256 "
        f"{sha256[:12]}); choose another --name, or pass --force to replace it"
    )


def _judge(
    model: onnx.ModelProto,
    request: ExportRequest,
    data: Path | None,
    class_names: tuple[str, ...],
    builtin_preprocessing: str,
    channels: int = 1,
    batchnorm: bool = False,
) -> tuple[Quality | None, str]:
    """Score the verified graph on the labelled validation images; refuse a degenerate member, one
    whose input range looks misread, or one that scores far from its --val-miou, unless --force."""
    declared = None if builtin_preprocessing else request.normalisation
    with tempfile.TemporaryDirectory(prefix="ens_export_") as tmp:
        path = Path(tmp) / f"{request.name}.onnx"
        onnx.save(model, str(path))
        session = build_session(load_member(path, request.name), "cpu")
        quality, note = measure_quality(
            session, data, request.split, len(class_names), declared, request.masks, channels
        )
    if quality is None:
        return quality, note
    problem = quality.problem(class_names, request.normalisation, batchnorm)
    if problem:
        problem = f"refusing this member: {problem}"
    claimed = request.val_miou
    if not problem and claimed is not None and abs(claimed - quality.val_miou) > CLAIM_TOLERANCE:
        problem = (
            f"--val-miou {claimed:.4f} differs from the {quality.val_miou:.4f} this member scores on "
            f"{quality.scored_on}; "
            + likely_causes(
                f"net input = {request.normalisation.formula()}; check --input-range/--mean/--std", batchnorm
            )
            + "; else another split (pass the --split-seed, --val-fraction or --val-ids used in training)"
        )
    if problem and not request.force:
        raise EnsError(f"{problem}; --force writes it anyway, recording the measured val mIoU")
    return quality, f"{note}; written with --force despite: {problem}" if problem else note


def _load(source_format: str, request: ExportRequest) -> LoadedSource:
    module_name, function, extra = LOADERS[source_format]
    if request.keras_backend != "auto" and function != "load_keras":
        raise EnsError(
            f"--keras-backend {request.keras_backend} applies to Keras models, and "
            f"{request.source.name!r} is a {FORMATS[source_format]}; drop --keras-backend"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise EnsError(
            f"exporting a {FORMATS[source_format]} needs {exc.name or extra}, which is not installed; "
            f"pip install 'ens[{extra}]'"
        ) from exc
    return getattr(module, function)(request, source_format)


def _export_hw(request: ExportRequest, source: LoadedSource, data: Path) -> tuple[int, int]:
    """--height/--width, else the size the model declares, else the data file's, else 64x128."""
    given = (request.height, request.width) if request.height is not None else None
    if given and source.fixed_hw and given != source.fixed_hw:
        raise EnsError(
            f"--height/--width {given[0]}x{given[1]} differ from the model's input size "
            f"{source.fixed_hw[0]}x{source.fixed_hw[1]}; drop them or pass the model's size"
        )
    return given or source.fixed_hw or data_hw(data) or FALLBACK_HW


def _check_store(request: ExportRequest, class_names: tuple[str, ...]) -> None:
    """Members of one store are fused together, so they must predict the same classes."""
    if request.force:
        return
    for name, path in list_member_files(request.out_dir).items():
        if name == request.name:
            continue
        try:
            other = load_member(path, name)
        except EnsError:
            continue  # not a member: `ens members` reports it
        if other.info.class_names != class_names:
            raise EnsError(
                f"this model predicts {len(class_names)} classes {list(class_names)} but member {name!r} "
                f"in {str(request.out_dir)!r} predicts {other.n_classes} {list(other.info.class_names)}; "
                "pass matching --class-names, another --out-dir, or --force"
            )


def _info(
    request, source, class_names, sha256, samples: Samples, factor: int = 1, *, dynamic_hw, **measured
) -> MemberInfo:
    import onnxruntime

    versions = {**source.versions, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}
    preprocessing = request.normalisation.describe()
    if request.gray_to_rgb:
        preprocessing = f"gray copied to R, G, B; {preprocessing}"
    if source.builtin_preprocessing:
        preprocessing += f", then inside the model: {source.builtin_preprocessing}"
    return MemberInfo(
        contract_version=CONTRACT_VERSION,
        class_names=class_names,
        source_framework=source.framework,
        source_file=request.source.name,
        source_sha256=sha256,
        exporter_versions=tuple(sorted(versions.items())),
        parity_max_abs_err=float(measured.get("error", 0.0)),
        opset=measured.get("opset", 0),
        preprocessing=preprocessing,
        input_hw=(None, None) if dynamic_hw else samples.hw,
        val_miou=measured.get("val_miou"),
        input_channels=samples.channels,
        # an output 1/factor of the input is resized back to H, W only at multiples of the factor
        size_multiple=math.lcm(measured.get("size_multiple") or request.size_multiple or 1, factor),
        upsample_factor=factor,
    )
