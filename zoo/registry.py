"""The architectures `ens train` can build, keyed by (framework, arch), with the input and output
conventions each one follows, so the sidecar tells an exporter exactly what to fold into the graph.

The models differ on purpose, like real course models: the torch U-Net wants inputs in 0-1 (x/255)
and returns logits, the SE U-Net wants (x/255 - mean)/std and returns logits, and the Keras U-Net
takes raw 0-255 pixels channels-last (Rescaling inside) and returns softmax probabilities.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from ensemble.errors import EnsError
from exporters.preprocessing import Normalisation

# The model input as a function of raw 0..255 pixels, declared as `ens export --input-range --mean --std`.
RAW = Normalisation("0-255")
UNIT = Normalisation("0-1")
GRAY_IMAGENET = Normalisation("0-1", mean=0.449, std=0.226)
"""Grey-level ImageNet statistics (the mean of the RGB means and stds), a common course choice."""


@dataclass(frozen=True)
class Arch:
    """One architecture: its factory ("module:callable"), input layout and scaling, output kind."""

    framework: str
    name: str
    factory: str
    layout: str
    preprocessing: Normalisation
    output: str
    description: str

    def build(self, **kwargs):
        """Import the factory's module (and so its framework) and call it with `kwargs`."""
        return resolve_factory(self.factory)(**kwargs)


ARCHS: dict[tuple[str, str], Arch] = {
    ("torch", "unet"): Arch(
        framework="torch",
        name="unet",
        factory="zoo.torch_unet:unet",
        layout="NCHW",
        preprocessing=UNIT,
        output="logits",
        description="U-Net, BatchNorm+ReLU double convs, transposed-conv up; input x/255, logits out",
    ),
    ("torch", "se_unet"): Arch(
        framework="torch",
        name="se_unet",
        factory="zoo.torch_unet:se_unet",
        layout="NCHW",
        preprocessing=GRAY_IMAGENET,
        output="logits",
        description="U-Net with squeeze-and-excitation in bottleneck and decoder, bilinear up; "
        "input (x/255 - 0.449)/0.226, logits out",
    ),
    ("keras", "unet"): Arch(
        framework="keras",
        name="unet",
        factory="zoo.keras_unet:unet",
        layout="NHWC",
        preprocessing=RAW,
        output="probabilities",
        description="Keras functional U-Net, channels-last, Rescaling(1/255) inside, softmax out",
    ),
}

FRAMEWORKS: dict[str, tuple[str, str]] = {
    "torch": ("zoo.train_torch", "pip install 'ens[torch]'"),
    "keras": ("zoo.train_keras", "pip install 'ens[keras]'"),
}
"""Framework -> (trainer module, install hint)."""


def get_arch(framework: str, name: str) -> Arch:
    """Look an architecture up; an unknown pair lists the valid ones."""
    try:
        return ARCHS[(framework, name)]
    except KeyError:
        raise EnsError(
            f"unknown architecture {name!r} for framework {framework!r}; choose one of "
            f"{', '.join(list_archs())} (framework/arch)"
        ) from None


def list_archs(framework: str | None = None) -> list[str]:
    """Valid 'framework/arch' names, optionally of one framework."""
    return sorted(f"{fw}/{name}" for fw, name in ARCHS if framework in (None, fw))


def resolve_factory(spec: str) -> Callable:
    """'package.module:callable' -> the callable; a missing framework gives an install hint."""
    module_name, _, attr = spec.partition(":")
    module = import_framework_module(module_name)
    try:
        return getattr(module, attr)
    except AttributeError:
        raise EnsError(f"factory {spec!r}: module {module_name!r} has no {attr!r}") from None


def import_framework_module(module_name: str):
    """Import a zoo module that needs torch or keras, turning a missing framework into a hint."""
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").split(".")[0]
        if missing not in FRAMEWORKS:
            raise
        raise EnsError(
            f"{module_name} needs {missing}, which is not installed; {FRAMEWORKS[missing][1]}"
        ) from None
