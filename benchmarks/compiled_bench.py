"""The compiled ensemble graph against the pipeline, in one process, on the same images.

Both engines are opened from the ensemble file (`models/ensemble.json`: its members, weights,
class gains, TTA and min_area) and run the prediction loop's per-batch calls (`probabilities`, then
`labels` = decode + cleanup for the pipeline, cleanup of the graph's labels for the compiled
engine). Chunks of batches alternate between the two (the order swapped every chunk), so load from
other processes hits both alike. Prints img/s of each, their ratio, and the parity: pixels whose
labels differ before and after cleanup, and how many of the differing ones are exact float ties of
the pipeline's fused scores (equal top two candidates).

    .venv/bin/python benchmarks/compiled_bench.py                  # the first 1,024 demo test images
    .venv/bin/python benchmarks/compiled_bench.py --n-images 0     # all 10,022
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from jobs import ROOT, log, machine, read_test_images

from ensemble.compiled.compiler import compile_ensemble, describe
from ensemble.compiled.scorer import open_compiled
from ensemble.inference.fusion import decode
from ensemble.inference.options import PredictOptions, resolve_options
from ensemble.inference.pipeline import open_pipeline
from ensemble.inference.scorer import final_labels
from ensemble.members.ensemblefile import resolve_ensemble


def ties(scores: np.ndarray, differ: np.ndarray, first: int) -> int:
    """How many of the `differ` pixels have equal top-two candidate scores in the pipeline."""
    b, y, x = np.nonzero(differ)
    top2 = np.sort(scores[b, first:, y, x], axis=1)[:, -2:]
    return int((top2[:, 1] == top2[:, 0]).sum())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=ROOT / "data/mars_demo.npz")
    parser.add_argument("--models-dir", type=Path, default=ROOT / "models")
    parser.add_argument("--ensemble", type=Path, default=None, help="default: <models-dir>/ensemble.json")
    parser.add_argument("--n-images", type=int, default=1024, help="first N test images (0: all)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--chunk", type=int, default=4, help="batches per alternating chunk")
    parser.add_argument(
        "--threads", type=int, default=None, help="intra-op threads (default: physical cores)"
    )
    parser.add_argument("--out-dir", type=Path, default=ROOT / "benchmarks/results")
    args = parser.parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    facts = machine()

    members, spec, spec_path = resolve_ensemble(None, args.ensemble, args.models_dir)
    graph = args.out_dir / "compiled_bench.onnx"
    log(describe(compile_ensemble(spec_path, args.models_dir, graph)))
    base = PredictOptions(batch_size=args.batch_size, threads=args.threads, device="cpu")
    options = resolve_options(members, spec, base)
    engines = {
        "pipeline": open_pipeline(members, options),
        "compiled": open_compiled(members, options, graph),
    }
    images = read_test_images(args.data)
    if args.n_images:
        images = images[: args.n_images]
    starts = list(range(0, len(images), args.batch_size))
    chunks = [starts[i : i + args.chunk] for i in range(0, len(starts), args.chunk)]
    first = 0 if options.allow_background else 1
    seconds = {name: 0.0 for name in engines}
    ratios = []
    counts = {"pixels": int(images.size), "differ_before_cleanup": 0, "ties": 0, "differ_after_cleanup": 0}
    for index, chunk in enumerate(chunks):
        order = list(engines) if index % 2 == 0 else list(engines)[::-1]
        chunk_seconds, raw, final, scores = {}, {}, {}, []
        for name in order:
            engine, elapsed, raw[name], final[name] = engines[name], 0.0, [], []
            for start in chunk:
                batch = images[start : start + args.batch_size]
                ids = np.arange(start, start + len(batch))
                tic = time.perf_counter()
                out = engine.score(ids, batch, engine.timings)
                elapsed += time.perf_counter() - tic
                if name == "pipeline":  # untimed: the pipeline's labels before cleanup, and its scores
                    raw[name].append(decode(out.scores, options.allow_background))
                    scores.append(out.scores)
                else:
                    raw[name].append(out.labels.copy())
                tic = time.perf_counter()
                final[name].append(final_labels(engine.description, out, engine.timings))
                elapsed += time.perf_counter() - tic
            chunk_seconds[name] = elapsed
            seconds[name] += elapsed
        ratios.append(chunk_seconds["pipeline"] / chunk_seconds["compiled"])
        for k, pipe_scores in enumerate(scores):
            differ = raw["pipeline"][k] != raw["compiled"][k]
            counts["differ_before_cleanup"] += int(differ.sum())
            counts["ties"] += ties(pipe_scores, differ, first) if differ.any() else 0
            counts["differ_after_cleanup"] += int((final["pipeline"][k] != final["compiled"][k]).sum())
        done = min(chunk[-1] + args.batch_size, len(images))
        times = ", ".join(f"{name} {done / s:.1f} img/s" for name, s in seconds.items())
        log(f"{done}/{len(images)} images: {times}; pixels differing {counts['differ_before_cleanup']} "
            f"({counts['ties']} ties), {counts['differ_after_cleanup']} after cleanup")  # fmt: skip
    speed = {name: len(images) / s for name, s in seconds.items()}
    report = {
        "command": " ".join(["benchmarks/compiled_bench.py", *(argv if argv is not None else sys.argv[1:])]),
        "machine": facts,
        "n_images": len(images),
        "batch_size": args.batch_size,
        "tta": options.tta,
        "members": [m.name for m in members],
        "threads": engines["pipeline"].runners[0].report.threads,
        "images_per_second": {name: round(v, 1) for name, v in speed.items()},
        "compiled_over_pipeline": round(speed["compiled"] / speed["pipeline"], 3),
        "chunk_ratio_median": round(statistics.median(ratios), 3),
        "chunk_ratio_range": [round(min(ratios), 3), round(max(ratios), 3)],
        **counts,
    }
    (args.out_dir / "compiled_bench.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
