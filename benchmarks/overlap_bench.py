"""Does post-processing batch k in a second thread while batch k+1 runs through the members pay?

Runs the prediction loop two ways over the same images, alternating rounds so that load from
other processes hits both alike: `serial` (members -> decode -> cleanup -> write, batch after
batch, as `ens predict` does) and `overlap` (decode, cleanup and CSV writing of batch k in a
worker thread while the main thread runs the members on batch k+1; ONNX Runtime and the Numba
cleanup release the GIL). Prints seconds per round, the median ratio, and the share of serial
wall time spent in the stages that can overlap at all (the most overlap could save).

    .venv/bin/python benchmarks/overlap_bench.py --n-images 384 --rounds 3 --min-area 20
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ensemble.data.datafile import open_data
from ensemble.inference.cleanup import parse_min_area
from ensemble.inference.options import PredictOptions
from ensemble.inference.pipeline import PipelineScorer, open_pipeline
from ensemble.inference.scorer import Scored, final_labels
from ensemble.members.store import resolve_members
from ensemble.submission.io import SubmissionWriter
from ensemble.timing import Timings

OVERLAPPABLE = ("decode", "cleanup", "write")


def batches(data, n_images: int, batch_size: int):
    """(ids, images) batches of the first `n_images` test images, read once up front."""
    images = np.concatenate(list(data.iter_test_images(256)))[:n_images]
    return [
        (np.arange(start, start + len(part)), part)
        for start, part in ((s, images[s : s + batch_size]) for s in range(0, len(images), batch_size))
    ]


def post(ensemble: PipelineScorer, writer: SubmissionWriter, ids: np.ndarray, scored: Scored) -> None:
    labels = final_labels(ensemble.description, scored, ensemble.timings)
    with ensemble.timings("write"):
        writer.write(ids, labels)


def run(ensemble: PipelineScorer, work, csv: Path, overlap: bool) -> float:
    """Seconds to predict and write all batches, serially or with post-processing overlapped."""
    start = time.perf_counter()
    with SubmissionWriter(csv, "rle", work[0][1].shape[1:], ensemble.n_classes) as writer:
        if not overlap:
            for ids, images in work:
                post(ensemble, writer, ids, ensemble.score(ids, images, ensemble.timings))
        else:
            with ThreadPoolExecutor(max_workers=1) as pool:
                pending: Future | None = None
                for ids, images in work:
                    probs = ensemble.score(ids, images, ensemble.timings)
                    if pending is not None:
                        pending.result()  # keeps CSV rows in order and at most one batch waiting
                    pending = pool.submit(post, ensemble, writer, ids, probs)
                if pending is not None:
                    pending.result()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=Path("data/mars_demo.npz"))
    parser.add_argument("--models-dir", type=Path, default=Path("models"))
    parser.add_argument("--members", default="unet,se_unet,keras_unet")
    parser.add_argument("--n-images", type=int, default=384)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--min-area", default="20", help="cleanup areas, as `ens predict --min-area`")
    args = parser.parse_args(argv)

    members = resolve_members(args.members, args.models_dir)
    min_area = parse_min_area(args.min_area, members[0].n_classes)
    options = PredictOptions(tta="flip", min_area=min_area, batch_size=args.batch_size)
    ensemble = open_pipeline(members, options)
    work = batches(open_data(args.data), args.n_images, args.batch_size)
    seconds: dict[str, list[float]] = {"serial": [], "overlap": []}
    with tempfile.TemporaryDirectory() as tmp:
        run(ensemble, work[:1], Path(tmp) / "warmup.csv", overlap=False)
        for round_ in range(args.rounds):
            for mode in ("serial", "overlap") if round_ % 2 == 0 else ("overlap", "serial"):
                ensemble.timings = Timings()
                seconds[mode].append(run(ensemble, work, Path(tmp) / f"{mode}.csv", mode == "overlap"))
                stages = ensemble.timings.as_dict()
                if mode == "serial":
                    share = sum(stages.get(s, 0.0) for s in OVERLAPPABLE) / seconds[mode][-1]
                print(f"round {round_ + 1} {mode}: {seconds[mode][-1]:.2f} s {stages}", file=sys.stderr)
            if (Path(tmp) / "serial.csv").read_bytes() != (Path(tmp) / "overlap.csv").read_bytes():
                raise SystemExit("the overlapped run wrote a different CSV than the serial one")
    serial, overlap = statistics.median(seconds["serial"]), statistics.median(seconds["overlap"])
    print(
        f"{len(work)} batches of {args.batch_size}, flip TTA, min_area {args.min_area}, {args.rounds} rounds"
    )
    print(f"serial  s: {[round(s, 2) for s in seconds['serial']]} median {serial:.2f}")
    print(f"overlap s: {[round(s, 2) for s in seconds['overlap']]} median {overlap:.2f}")
    print(f"serial/overlap: {serial / overlap:.3f}; decode+cleanup+write share of serial wall: {share:.2%}")


if __name__ == "__main__":
    main()
