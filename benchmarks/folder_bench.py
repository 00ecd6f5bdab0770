"""Peak RSS of `ens predict` on a folder of N images against the npz holding the same images.

The test images of an `ens data demo` file are written as PNGs named 0.png .. N-1.png, so both runs
predict the same pixels with the same members and options; both write the flat CSV, which must come
out byte-identical (the folder's integer stems are the npz's indices). Each run is its own
subprocess with its own peak RSS (`os.wait4`).

    .venv/bin/python benchmarks/folder_bench.py                       # 10,000 images, member unet
    .venv/bin/python benchmarks/folder_bench.py --n-images 500 --members unet,keras_unet

Progress goes to stderr, the summary (markdown) to stdout and folder_bench.json in --out-dir.
"""

from __future__ import annotations

import argparse
import filecmp
import json
from pathlib import Path

import numpy as np
from jobs import ROOT, demo_file, ens_command, log, machine, run_job, slice_file
from PIL import Image


def write_folder(images: np.ndarray, folder: Path) -> Path:
    """Each image as `<index>.png` (kept for reruns when complete)."""
    folder.mkdir(parents=True, exist_ok=True)
    if len(list(folder.glob("*.png"))) != len(images):
        for index, image in enumerate(images):
            Image.fromarray(image).save(folder / f"{index}.png", compress_level=1)
    return folder


def predict(data: Path, csv: Path, args: argparse.Namespace) -> dict:
    command = ens_command(
        "predict", "--members", args.members, "--models-dir", str(args.models_dir), "--data", str(data),
        "--tta", args.tta, "--format", "flat", "--batch-size", str(args.batch_size), "--device", "cpu",
        "--out", str(csv),
    )  # fmt: skip
    job = run_job(command)
    manifest = json.loads(csv.with_name(csv.stem + ".manifest.json").read_text())
    return {
        "data": str(data),
        "n_images": manifest["data"]["n_images"],
        "wall_seconds": round(job.seconds, 2),
        "run_seconds": manifest["timings"]["total_seconds"],
        "load_seconds": round(manifest["timings"]["stages"].get("load", 0.0), 2),
        "max_rss_mb": round(job.max_rss_mb, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n-images", type=int, default=10_000)
    parser.add_argument("--members", default="unet")
    parser.add_argument("--models-dir", type=Path, default=ROOT / "models")
    parser.add_argument("--tta", default="none")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--out-dir", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)

    source = demo_file(args.n_images, args.out_dir)
    from ensemble.data.datafile import open_data

    images = open_data(source).load_test_images()[: args.n_images]
    npz = slice_file(source, images, args.out_dir / f"folder_bench_n{len(images)}.npz")
    folder = write_folder(images, args.out_dir / f"folder_bench_n{len(images)}")
    log(f"{len(images)} images of {images.shape[1]}x{images.shape[2]}: {npz} and {folder}/")
    runs = {
        "npz": predict(npz, args.out_dir / "folder_bench_npz.csv", args),
        "folder": predict(folder, args.out_dir / "folder_bench_folder.csv", args),
    }
    identical = filecmp.cmp(
        args.out_dir / "folder_bench_npz.csv", args.out_dir / "folder_bench_folder.csv", shallow=False
    )
    result = {"machine": machine(), "members": args.members, "tta": args.tta, "runs": runs,
              "csv_identical": identical}  # fmt: skip
    (args.out_dir / "folder_bench.json").write_text(json.dumps(result, indent=2) + "\n")
    print("| data | images | peak RSS | wall s | pipeline s | of which reading |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, run in runs.items():
        print(
            f"| {name} | {run['n_images']} | {run['max_rss_mb']:.0f} MB | {run['wall_seconds']:.1f} | "
            f"{run['run_seconds']:.1f} | {run['load_seconds']:.1f} |"
        )
    print(f"\nflat CSVs byte-identical: {identical}")


if __name__ == "__main__":
    main()
