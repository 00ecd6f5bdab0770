"""The export's checker: runs the source for reference probabilities on the parity images, then builds
each candidate member (exported, wrapped to the contract) and verifies it against them."""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx

from ensemble.errors import EnsError, first_line
from ensemble.members.contract import MemberInfo
from ensemble.members.member import load_member
from ensemble.members.session import build_session
from exporters.contract import attach_metadata, is_probabilities, opset_of, softmax, wrap_to_contract
from exporters.inputs import channel_mismatch
from exporters.outputs import choose_output, take_output
from exporters.request import ExportRequest
from exporters.samples import Samples
from exporters.source import LoadedSource, check_source_output
from exporters.upsample import upsample_bilinear
from exporters.verify import check_graph, parity_error, probe_size


class Checker:
    """Runs the source for reference probabilities and builds + verifies candidate members."""

    def __init__(self, request: ExportRequest, source: LoadedSource, samples: Samples) -> None:
        self.request, self.source, self.samples = request, source, samples
        self.pixels = samples.pixels()
        try:
            raw = self.run(self.pixels)
        except EnsError as exc:
            raise channel_mismatch(self) or exc from exc
        self.choice = choose_output(
            raw, channels_last=source.channels_last, n=len(self.pixels), hw=self.pixels.shape[2:],
            requested=request.output, names=source.output_names,
        )  # fmt: skip
        self.key, self.output_note = self.choice.key, self.choice.note
        self.factor = 0  # how many times the output is smaller than the input, set by the first run
        scores = self.scores(self.pixels, raw)
        self.logits = not is_probabilities(scores)
        self.reference = softmax(scores) if self.logits else scores

    def run(self, pixels: np.ndarray):
        """The source's raw output (tensor, list or dict) for raw pixels."""
        batch = self.net_batch(pixels)
        try:
            return self.source.run(np.ascontiguousarray(batch))
        except EnsError:
            raise
        except Exception as exc:  # any framework error while running the user's model
            raise EnsError(
                f"running the {self.source.framework} model on {len(batch)} images of shape "
                f"{batch.shape[1:]} failed ({type(exc).__name__}: {first_line(exc)})"
            ) from exc

    def net_batch(self, pixels: np.ndarray) -> np.ndarray:
        """What the net is fed for raw member pixels: gray copied to R, G, B with --gray-to-rgb, then
        normalised, in the net's layout."""
        if self.request.gray_to_rgb:
            pixels = np.repeat(pixels, 3, axis=1)
        return layout(self.source, self.request.normalisation.apply(pixels))

    def scores(self, pixels: np.ndarray, raw=None) -> np.ndarray:
        """The source's chosen output as (N, C, H, W) for raw pixels (or for their raw output),
        resized bilinearly to the input size when it is smaller, as the member will resize it."""
        out = take_output(self.run(pixels) if raw is None else raw, self.key)
        choice = self.choice
        nchw = check_source_output(
            out, self.source.channels_last, len(pixels), pixels.shape[2:], choice.what, choice.count
        )
        factor = pixels.shape[2] // nchw.shape[2]
        if self.factor and factor != self.factor:
            raise EnsError(
                f"{choice.what} is 1/{factor} of the input size at {pixels.shape[2]}x{pixels.shape[3]} "
                f"but 1/{self.factor} at {self.pixels.shape[2]}x{self.pixels.shape[3]}"
            )
        self.factor = factor
        return upsample_bilinear(nchw, factor)

    def resize_note(self) -> str:
        """The export note for an output smaller than the input, empty when it is at the input size."""
        if self.factor == 1:
            return ""
        return (
            f"the source's output is 1/{self.factor} of the input size: a bilinear resize x{self.factor} "
            f"(align_corners=False) is folded in{' before the softmax' if self.logits else ''}"
        )

    def net_inputs(self) -> str:
        """What the net saw in the parity run: value range and the formula that made it."""
        seen = self.net_batch(self.pixels)
        return (
            f"the net saw inputs in [{seen.min():.4g}, {seen.max():.4g}], made by "
            f"{self.request.normalisation.formula()} from raw pixels x"
        )

    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        scores = self.scores(pixels)
        return softmax(scores) if self.logits else scores

    def build(self, dynamic_hw: bool, info: MemberInfo) -> tuple[onnx.ModelProto, float, str | None, object]:
        """Export, wrap, check and verify one candidate; return it, its parity error, why H/W are not
        dynamic when they were asked so, and its ONNX Runtime session."""
        example = np.ascontiguousarray(self.net_batch(self.pixels[:2]))
        raw, index = self.source.to_onnx(example, dynamic_hw, self.key)
        model = wrap_to_contract(
            raw, channels_last=self.source.channels_last, normalisation=self.request.normalisation,
            add_softmax=self.logits, output_key=index, n_classes=self.reference.shape[1],
            hw=self.samples.hw, dynamic_hw=dynamic_hw, channels=self.samples.channels, upsample=self.factor,
            gray_to_rgb=self.request.gray_to_rgb,
        )  # fmt: skip
        check_graph(model)
        attach_metadata(model, replace(info, opset=opset_of(model)), {})
        tolerance = self.request.tolerance
        with tempfile.TemporaryDirectory(prefix="ens_export_") as tmp:
            path = Path(tmp) / f"{self.request.name}.onnx"
            onnx.save(model, str(path))
            session = build_session(load_member(path, self.request.name), "cpu")
            error = parity_error(
                session, self.pixels, self.reference, tolerance, self.source.framework, self.net_inputs()
            )
            reason = probe_size(session, self.pixels, self.probabilities, tolerance) if dynamic_hw else None
        return model, error, reason, session


def layout(source: LoadedSource, batch: np.ndarray) -> np.ndarray:
    """`batch` (N, C, H, W) in the source's layout: channels last for Keras, as is for torch."""
    return batch.transpose(0, 2, 3, 1) if source.channels_last else batch
