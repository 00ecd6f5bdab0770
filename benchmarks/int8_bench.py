"""int8 against float32 on a wide member: a U-Net with a resnet18 encoder (channels 64-512), exported
by ens, quantized by `ens quantize`'s library function (ONNX Runtime static QDQ, calibrated on
training images), both timed in the pipeline (default `ens predict` options, each on its fastest
runtime, passes alternated) and scored on the validation split.

The net is segmentation_models_pytorch's `Unet("resnet18", encoder_weights=None)` when smp imports,
else `WideUnet` below: resnet18's stem and BasicBlock stages (64, 128, 256, 512 channels, /32) with
smp's decoder widths (256, 128, 64, 32, 16). It is trained for `--steps` Adam steps (0: random).

    .venv/bin/python benchmarks/int8_bench.py --data data/mars_demo.npz --steps 150 --json int8.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

HERE = Path(__file__).resolve()


def basic_block(cin: int, cout: int, stride: int) -> nn.Module:
    return _Block(cin, cout, stride)


class _Block(nn.Module):
    """resnet18's BasicBlock: two 3x3 conv + BN, a 1x1 projection when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout),
        )  # fmt: skip
        self.skip = (
            nn.Identity()
            if stride == 1 and cin == cout
            else nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        )

    def forward(self, x):
        return torch.relu(self.body(x) + self.skip(x))


def conv_bn(cin: int, cout: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class WideUnet(nn.Module):
    """resnet18 encoder (stem /4, stages 64-512 to /32) and a U-Net decoder of smp's widths."""

    def __init__(self, in_channels: int = 1, classes: int = 5) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True)
        )
        self.pool = nn.MaxPool2d(3, 2, 1)
        widths = (64, 128, 256, 512)
        self.stages = nn.ModuleList(
            nn.Sequential(basic_block(cin, cout, 1 if i == 0 else 2), basic_block(cout, cout, 1))
            for i, (cin, cout) in enumerate(zip((64, *widths[:-1]), widths, strict=True))
        )
        skips, decoder = (256, 128, 64, 64, 0), (256, 128, 64, 32, 16)
        cins = (512, *decoder[:-1])
        self.decoder = nn.ModuleList(
            nn.Sequential(conv_bn(cin + skip, cout), conv_bn(cout, cout))
            for cin, skip, cout in zip(cins, skips, decoder, strict=True)
        )
        self.head = nn.Conv2d(16, classes, 3, 1, 1)

    def forward(self, x):
        features = [self.stem(x)]  # /2
        x = self.pool(features[0])
        for stage in self.stages:
            x = stage(x)
            features.append(x)  # /4, /8, /16, /32
        skips = [features[3], features[2], features[1], features[0], None]
        x = features[4]
        for block, skip in zip(self.decoder, skips, strict=True):
            x = nn.functional.interpolate(x, scale_factor=2.0, mode="nearest")
            x = block(x if skip is None else torch.cat([x, skip], 1))
        return self.head(x)


def build(kind: str = "smp") -> nn.Module:
    """The net of this benchmark (the --factory of its export): smp's Unet, or WideUnet."""
    if kind == "smp":
        import segmentation_models_pytorch as smp

        return smp.Unet("resnet18", encoder_weights=None, in_channels=1, classes=5)
    return WideUnet()


def smp_available() -> bool:
    try:
        import segmentation_models_pytorch  # noqa: F401
    except ImportError:
        return False
    return True


def train(net: nn.Module, data: Path, steps: int, seed: int = 0) -> float:
    """`steps` Adam steps of cross-entropy on the training split (x/255 input); seconds taken."""
    from ensemble.data.datafile import open_data
    from ensemble.data.sources import validation_split
    from ensemble.data.split import SplitSpec

    handle = open_data(data)
    images, masks = handle.load_train()
    train_ids = validation_split(handle, SplitSpec()).train
    rng = np.random.default_rng(seed)
    optimiser = torch.optim.Adam(net.parameters(), 1e-3)
    start = time.perf_counter()
    net.train()
    for _ in range(steps):
        pick = rng.choice(train_ids, 16, replace=False)
        x = torch.from_numpy(images[pick, None].astype(np.float32) / 255.0)
        y = torch.from_numpy(masks[pick].astype(np.int64))
        loss = nn.functional.cross_entropy(net(x), y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    net.eval()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=Path("data/mars_demo.npz"))
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--net", choices=("auto", "smp", "wide"), default="auto")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    sys.path.insert(0, str(HERE.parents[1]))
    from ensemble.data.datasets import open_dataset
    from ensemble.demo.synthetic import ensure_demo_data
    from ensemble.inference.memberbench import bench_member
    from ensemble.members.member import load_member
    from ensemble.scoring.int8gate import TIMED_IMAGES, quantize_and_judge
    from exporters import ExportRequest, Normalisation, export_member

    ensure_demo_data(args.data)
    kind = args.net if args.net != "auto" else ("smp" if smp_available() else "wide")
    torch.manual_seed(0)
    net = build(kind)
    trained = train(net, args.data, args.steps)
    with tempfile.TemporaryDirectory(prefix="int8_bench_") as tmp:
        weights = Path(tmp) / "net.pt"
        torch.save(net.state_dict(), weights)
        request = ExportRequest(
            source=weights, name="wide", factory=f"{HERE}:build", factory_kwargs={"kind": kind},
            normalisation=Normalisation.from_options("0-1", None, None, "rgb", 1), data=args.data,
            trust=True, force=True, out_dir=Path(tmp) / "models", size_multiple=32,
        )  # fmt: skip
        member = export_member(request).member
        dataset = open_dataset(args.data)
        fp32_choice = bench_member(member, dataset)
        outcome = quantize_and_judge(member, dataset, force=True)
        int8_choice = bench_member(load_member(outcome.path), dataset)
    n = min(TIMED_IMAGES, open_dataset(args.data).n_test)
    report = {
        "net": "smp Unet('resnet18', encoder_weights=None)" if kind == "smp" else "WideUnet (resnet18-like)",
        "train_steps": args.steps, "train_seconds": round(trained, 1),
        "fp32": {"img_per_s": round(n / outcome.fp32_seconds, 1), "val_miou": round(outcome.fp32_miou, 4),
                 "runtime": fp32_choice.kind, "round_seconds": fp32_choice.seconds},
        "int8": {"img_per_s": round(n / outcome.int8_seconds, 1), "val_miou": round(outcome.int8_miou, 4),
                 "runtime": int8_choice.kind, "round_seconds": int8_choice.seconds},
        "speedup": round(outcome.speedup, 2), "max_prob_error": round(outcome.max_prob_error, 4),
        "gates_failed": list(outcome.failures),
    }  # fmt: skip
    print(json.dumps(report, indent=1))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
