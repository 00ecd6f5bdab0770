"""Plain PyTorch U-Nets: `unet` and `se_unet` (squeeze-and-excitation) from one `UNet` class.

Both return logits (N, C, H, W) and expect preprocessed input (N, in_channels, H, W): `unet` wants
x/255, `se_unet` wants (x/255 - mean)/std (see zoo.registry); the scaling is not in the model.
H and W must be divisible by 2**depth.
"""

from __future__ import annotations

import torch
from torch import nn

from ensemble.course import N_CLASSES
from ensemble.errors import EnsError

UP_MODES = ("transpose", "bilinear")


class DoubleConv(nn.Sequential):
    """Two 3x3 conv + BatchNorm + ReLU layers."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )


class SqueezeExcite(nn.Module):
    """Channel gating: global average pool, bottleneck MLP, sigmoid, rescale the channels."""

    def __init__(self, channels: int, reduction: int = 8) -> None:
        super().__init__()
        hidden = max(channels // reduction, 4)
        self.reduce = nn.Conv2d(channels, hidden, 1)
        self.expand = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.expand(torch.relu(self.reduce(x.mean((2, 3), keepdim=True))))
        return x * torch.sigmoid(gate)


class UpBlock(nn.Module):
    """Upsample by 2, concatenate the skip connection, double conv, optional SE gate."""

    def __init__(self, cin: int, cout: int, up: str, se_reduction: int | None) -> None:
        super().__init__()
        if up == "transpose":
            self.up = nn.ConvTranspose2d(cin, cout, 2, stride=2)
        else:
            self.up = nn.Sequential(
                nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                nn.Conv2d(cin, cout, 1),
            )
        self.conv = DoubleConv(2 * cout, cout)
        self.se = nn.Identity() if se_reduction is None else SqueezeExcite(cout, se_reduction)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.se(self.conv(torch.cat([self.up(x), skip], dim=1)))


class UNet(nn.Module):
    """U-Net with `depth` poolings and `width * 2**level` channels per level; returns logits."""

    def __init__(
        self,
        n_classes: int = N_CLASSES,
        width: int = 16,
        depth: int = 3,
        in_channels: int = 1,
        up: str = "transpose",
        se_bottleneck: bool = False,
        se_decoder: bool = False,
        se_reduction: int = 8,
    ) -> None:
        super().__init__()
        if up not in UP_MODES:
            raise EnsError(f"up={up!r} is not an upsampling mode; choose one of {', '.join(UP_MODES)}")
        for name, value in (("n_classes", n_classes), ("width", width), ("depth", depth)):
            if value < 1:
                raise EnsError(f"{name}={value} must be at least 1")
        channels = [width * 2**level for level in range(depth + 1)]
        self.down = nn.ModuleList(
            DoubleConv(cin, cout)
            for cin, cout in zip([in_channels, *channels[:-2]], channels[:-1], strict=True)
        )
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = DoubleConv(channels[-2], channels[-1])
        self.bottleneck_se = SqueezeExcite(channels[-1], se_reduction) if se_bottleneck else nn.Identity()
        decoder_se = se_reduction if se_decoder else None
        self.up = nn.ModuleList(
            UpBlock(channels[level + 1], channels[level], up, decoder_se) for level in reversed(range(depth))
        )
        self.head = nn.Conv2d(channels[0], n_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck_se(self.bottleneck(x))
        for block, skip in zip(self.up, reversed(skips), strict=True):
            x = block(x, skip)
        return self.head(x)


def unet(n_classes: int = N_CLASSES, width: int = 16, depth: int = 3, in_channels: int = 1) -> UNet:
    """Plain U-Net with transposed-conv upsampling; input x/255, output logits."""
    return UNet(n_classes, width, depth, in_channels, up="transpose")


def se_unet(
    n_classes: int = N_CLASSES, width: int = 16, depth: int = 3, in_channels: int = 1, se_decoder: bool = True
) -> UNet:
    """U-Net with SE gates in the bottleneck (and decoder), bilinear upsampling; input
    (x/255 - mean)/std, output logits."""
    return UNet(
        n_classes, width, depth, in_channels, up="bilinear", se_bottleneck=True, se_decoder=se_decoder
    )
