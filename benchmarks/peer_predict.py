"""The ensemble job done the usual course way, as the baseline `predict_bench.py` compares against.

Each member runs eagerly in its own framework: torch state_dicts in their zoo factory wrapped
with `ttach.SegmentationTTAWrapper` (hflip, mean of softmax), Keras with `model.predict` on
NHWC input plus a manual flip. Member probabilities are averaged, the argmax runs over classes
1..C-1, and pandas `to_csv` writes the course's flat CSV. Stage seconds go to a JSON file.

    python benchmarks/peer_predict.py --data data/mars_demo.npz --out peer.csv --timings peer.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

SOURCE_SUFFIXES = (".pt", ".pth", ".keras")


def find_source(sources: Path, name: str) -> tuple[Path, dict]:
    """The checkpoint of member `name` in `sources` and its JSON sidecar (`<checkpoint>.json`)."""
    for suffix in SOURCE_SUFFIXES:
        path = sources / f"{name}{suffix}"
        sidecar = path.with_name(path.name + ".json")
        if path.is_file() and sidecar.is_file():
            return path, json.loads(sidecar.read_text())
    raise SystemExit(f"no checkpoint with a sidecar for member {name!r} in {sources} ({SOURCE_SUFFIXES})")


def preprocess(pixels: np.ndarray, preprocessing: dict) -> np.ndarray:
    """The sidecar's declared net input (input range, then mean/std) in float32."""
    from exporters.preprocessing import Normalisation

    return Normalisation.from_record(preprocessing).apply(pixels)


class TorchMember:
    """A state_dict in its factory, softmax appended, under ttach's hflip wrapper."""

    def __init__(self, path: Path, sidecar: dict) -> None:
        import torch
        import ttach

        from zoo.registry import resolve_factory

        net = resolve_factory(sidecar["factory"])(**sidecar["factory_kwargs"])
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        head = [torch.nn.Softmax(dim=1)] if sidecar["output"]["kind"] == "logits" else []
        model = torch.nn.Sequential(net, *head).eval()
        self.model = ttach.SegmentationTTAWrapper(model, ttach.aliases.hflip_transform(), merge_mode="mean")
        self.preprocessing = sidecar["input"]["preprocessing"]
        self.torch = torch

    def probs(self, images: np.ndarray, batch_size: int) -> np.ndarray:
        """(N, C, H, W) float32 probabilities of uint8 (N, H, W) images."""
        x = self.torch.from_numpy(preprocess(images[:, None], self.preprocessing))
        with self.torch.inference_mode():
            return self.torch.cat([self.model(part) for part in x.split(batch_size)]).numpy()


class KerasMember:
    """A .keras model called with model.predict on NHWC input and on its mirror image."""

    def __init__(self, path: Path, sidecar: dict) -> None:
        import keras

        self.model = keras.saving.load_model(path, compile=False)
        self.preprocessing = sidecar["input"]["preprocessing"]
        self.logits = sidecar["output"]["kind"] == "logits"

    def probs(self, images: np.ndarray, batch_size: int) -> np.ndarray:
        x = preprocess(images[..., None], self.preprocessing)
        plain = self.model.predict(x, batch_size=batch_size, verbose=0)
        mirrored = self.model.predict(x[:, :, ::-1], batch_size=batch_size, verbose=0)[:, :, ::-1]
        probs = (np.asarray(plain) + np.asarray(mirrored)) / 2
        if self.logits:
            probs = np.exp(probs - probs.max(-1, keepdims=True))
            probs /= probs.sum(-1, keepdims=True)
        return probs.transpose(0, 3, 1, 2)


def load_member(sources: Path, name: str) -> TorchMember | KerasMember:
    path, sidecar = find_source(sources, name)
    return (TorchMember if sidecar["framework"] == "torch" else KerasMember)(path, sidecar)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=Path("data/mars_demo.npz"))
    parser.add_argument("--sources", type=Path, default=Path("models/sources"))
    parser.add_argument("--members", default="unet,se_unet,keras_unet")
    parser.add_argument("--out", type=Path, required=True, help="flat CSV to write")
    parser.add_argument("--timings", type=Path, required=True, help="JSON file for the stage seconds")
    parser.add_argument("--batch-size", type=int, default=64, help="images per forward pass")
    parser.add_argument("--chunk", type=int, default=512, help="images per model.predict / fusion step")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    images = np.load(args.data)["test_set"].astype(np.uint8)
    members = [load_member(args.sources, name) for name in args.members.split(",")]
    seconds["load"] = time.perf_counter() - start

    run_start = time.perf_counter()
    labels = np.empty((len(images), images.shape[1] * images.shape[2]), np.uint8)
    seconds["members"] = seconds["decode"] = 0.0
    for first in range(0, len(images), args.chunk):
        chunk = images[first : first + args.chunk]
        tick = time.perf_counter()
        mean = sum(member.probs(chunk, args.batch_size) for member in members) / len(members)
        seconds["members"] += time.perf_counter() - tick
        tick = time.perf_counter()
        labels[first : first + len(chunk)] = (np.argmax(mean[:, 1:], axis=1) + 1).reshape(len(chunk), -1)
        seconds["decode"] += time.perf_counter() - tick
        print(f"peer: {first + len(chunk)}/{len(images)} images", file=sys.stderr, flush=True)

    tick = time.perf_counter()
    frame = pd.DataFrame(labels, columns=[str(i) for i in range(labels.shape[1])])
    frame.insert(0, "id", np.arange(len(images)))
    frame.to_csv(args.out, index=False)
    seconds["csv"] = time.perf_counter() - tick
    seconds["run"] = time.perf_counter() - run_start
    args.timings.write_text(json.dumps({"n_images": len(images), "seconds": seconds}, indent=2) + "\n")


if __name__ == "__main__":
    main()
