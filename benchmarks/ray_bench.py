"""`ens predict --engine ray` with 1 and 2 workers against the local engine, on the same images,
in the same run, plus the driver's own cost per image (encoding rows, writing and assembling shards).

Each prediction is its own subprocess (its own local Ray cluster); every CSV must be byte-identical
to the local engine's. Workers get `--threads` ONNX Runtime threads each (1 by default, so two
workers fill the two cores of this machine, as the local engine does with 2 threads).

    .venv/bin/python benchmarks/ray_bench.py                      # 2,000 demo images, member unet
    .venv/bin/python benchmarks/ray_bench.py --n-images 500

Progress goes to stderr, the summary (markdown) to stdout and ray_bench.json in --out-dir.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from jobs import ROOT, demo_file, ens_command, log, machine, run_job, slice_file


def predict(data: Path, csv: Path, args: argparse.Namespace, engine: str, workers: int, threads: int) -> dict:
    command = ens_command(
        "predict", "--members", args.members, "--models-dir", str(args.models_dir), "--data", str(data),
        "--tta", args.tta, "--format", args.format, "--batch-size", str(args.batch_size), "--device", "cpu",
        "--threads", str(threads), "--shard-size", str(args.shard_size), "--engine", engine,
        "--workers", str(workers), "--fresh", "--out", str(csv),
    )  # fmt: skip
    job = run_job(command)
    manifest = json.loads(csv.with_name(csv.stem + ".manifest.json").read_text())
    stages = manifest["timings"]["stages"]
    total = manifest["timings"]["total_seconds"]
    compute = total - stages.get("ray_connect", 0.0)
    n = manifest["data"]["n_images"]
    return {
        "engine": engine,
        "workers": workers,
        "threads_per_worker": threads,
        "wall_seconds": round(job.seconds, 2),
        "connect_seconds": stages.get("ray_connect", 0.0),
        "compute_seconds": round(compute, 2),
        "images_per_second": round(n / compute, 1),
        "max_rss_mb_driver": round(job.max_rss_mb, 1),
    }


def driver_cost(labels: np.ndarray, fmt: str, shard_size: int) -> dict:
    """Seconds per image the driver spends on what only it does: encoding the predicted `labels`
    into shard rows (written to disk) and assembling the CSV from them."""
    from ensemble.data.datafile import DataFile
    from ensemble.data.sources import ImageSource
    from ensemble.runs.assemble import assemble
    from ensemble.runs.plan import ShardPlan
    from ensemble.runs.resumable import encoder
    from ensemble.runs.shards import RunShards, ShardWriter

    ids = np.arange(len(labels))
    shape = labels.shape[1:]
    data = DataFile(Path("unused.npz"), 0, len(labels), *shape, True, False)
    source = ImageSource("test", len(labels), shape, data)
    plan = ShardPlan(len(labels), shard_size)
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        start = time.perf_counter()
        with ShardWriter(folder, plan, range(plan.n_shards), ids, encoder(source, fmt, 5, _rle())) as writer:
            for begin in range(0, len(ids), 64):
                writer.write(ids[begin : begin + 64], labels[begin : begin + 64])
        shards = time.perf_counter() - start
        start = time.perf_counter()
        header = encoder(source, fmt, 5, _rle()).header()
        assemble(folder / "out.csv", header, folder, RunShards(plan, ids))
        assembly = time.perf_counter() - start
        size = (folder / "out.csv").stat().st_size
    return {
        "format": fmt,
        "encode_and_write_shards_us_per_image": round(1e6 * shards / len(ids), 1),
        "assemble_us_per_image": round(1e6 * assembly / len(ids), 1),
        "csv_bytes_per_image": round(size / len(ids)),
    }


def _rle():
    from ensemble.submission.convention import DEFAULT_RLE

    return DEFAULT_RLE


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n-images", type=int, default=2000)
    parser.add_argument("--members", default="unet")
    parser.add_argument("--models-dir", type=Path, default=ROOT / "models")
    parser.add_argument("--tta", default="none")
    parser.add_argument("--format", default="flat")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--shard-size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads per Ray worker")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)

    source = demo_file(args.n_images, args.out_dir)
    from ensemble.data.datafile import open_data

    images = open_data(source).load_test_images()[: args.n_images]
    npz = slice_file(source, images, args.out_dir / f"ray_bench_n{len(images)}.npz")
    log(f"{len(images)} images of {images.shape[1]}x{images.shape[2]} in {npz}")
    csv = {name: args.out_dir / f"ray_bench_{name}.csv" for name in ("local", "ray1", "ray2")}
    runs = [
        predict(npz, csv["local"], args, "local", 1, 2),
        predict(npz, csv["ray1"], args, "ray", 1, args.threads),
        predict(npz, csv["ray2"], args, "ray", 2, args.threads),
    ]
    identical = all(filecmp.cmp(csv["local"], csv[name], shallow=False) for name in ("ray1", "ray2"))
    from ensemble.submission.io import read_submission

    _, labels, _ = read_submission(csv["local"], images.shape[1:], 5)
    driver = [driver_cost(labels, fmt, args.shard_size) for fmt in ("flat", "rle")]
    result = {
        "machine": machine(),
        "members": args.members,
        "tta": args.tta,
        "n_images": len(images),
        "shard_size": args.shard_size,
        "runs": runs,
        "two_over_one_workers": round(runs[2]["images_per_second"] / runs[1]["images_per_second"], 2),
        "csvs_identical": identical,
        "driver": driver,
    }
    (args.out_dir / "ray_bench.json").write_text(json.dumps(result, indent=2) + "\n")
    print("| engine | workers | threads/worker | wall s | Ray start s | compute s | img/s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for run in runs:
        print(
            f"| {run['engine']} | {run['workers']} | {run['threads_per_worker']} | {run['wall_seconds']} | "
            f"{run['connect_seconds']} | {run['compute_seconds']} | {run['images_per_second']} |"
        )
    print(f"\n2 workers / 1 worker: {result['two_over_one_workers']}x; CSVs byte-identical: {identical}")
    for cost in driver:
        print(
            f"driver, {cost['format']}: {cost['encode_and_write_shards_us_per_image']} us/image to encode "
            f"and write shards, {cost['assemble_us_per_image']} us/image to assemble "
            f"({cost['csv_bytes_per_image']} B/image)"
        )


if __name__ == "__main__":
    main()
