"""K batch-parallel workers on single-thread sessions against one pipeline on K-thread sessions,
interleaved chunk by chunk in one process (so a load swing hits both), ONNX Runtime only: the
measurement behind the default worker count. Also checks the fused scores are bitwise equal.

    .venv/bin/python benchmarks/workers_bench.py --n-images 512 --chunk 128
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from ensemble.data.datafile import open_data
from ensemble.inference.loop import label_batches
from ensemble.inference.options import PredictOptions, resolve_options
from ensemble.inference.pipeline import open_pipeline
from ensemble.machine import physical_cores
from ensemble.members.ensemblefile import resolve_ensemble


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=Path("data/mars_demo.npz"))
    parser.add_argument("--ensemble", type=Path, default=Path("models/ensemble.json"))
    parser.add_argument("--n-images", type=int, default=512)
    parser.add_argument("--chunk", type=int, default=128, help="images per turn of each side")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    images = open_data(args.data).load_test_images()[: args.n_images]
    members, spec, _ = resolve_ensemble(None, args.ensemble, args.ensemble.parent)
    cores = physical_cores()
    sides = {
        f"{cores} workers x 1 thread": PredictOptions(
            batch_size=args.batch_size, device="cpu", workers=cores
        ),
        f"1 pipeline x {cores} threads": PredictOptions(
            batch_size=args.batch_size, device="cpu", threads=cores
        ),
    }
    ensembles = {name: open_pipeline(members, resolve_options(members, spec, o)) for name, o in sides.items()}
    seconds = dict.fromkeys(sides, 0.0)
    equal = True
    for turn, start in enumerate(range(0, len(images), args.chunk)):
        chunk = images[start : start + args.chunk]
        names = list(sides) if turn % 2 == 0 else list(sides)[::-1]
        outputs = {}
        for name in names:
            ensemble = ensembles[name]
            step = ensemble.worker_batch
            batches = (
                (np.arange(i, min(i + step, len(chunk))), chunk[i : i + step])
                for i in range(0, len(chunk), step)
            )
            begin = time.perf_counter()
            outputs[name] = []
            label_batches(
                ensemble, batches, lambda _ids, labels, _probs, out=outputs[name]: out.append(labels)
            )
            seconds[name] += time.perf_counter() - begin
        first, second = (np.concatenate(outputs[n]) for n in sides)
        equal &= bool(np.array_equal(first, second))
        print(f"turn {turn}: " + ", ".join(f"{n} {seconds[n]:.1f} s" for n in sides), flush=True)
    rates = {name: round(len(images) / s, 3) for name, s in seconds.items()}
    names = list(sides)
    result = {
        "n_images": len(images),
        "img_per_s": rates,
        "ratio": round(rates[names[0]] / rates[names[1]], 3),
    }
    result["labels_equal"] = equal
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
