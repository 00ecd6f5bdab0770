"""Benchmark `ens predict` against the same job done the peer way, and its memory against N.

Every job runs in its own subprocess, so peak RSS and CPU time are per job:
1. `ens predict --tta flip --min-area 0 --format flat` on the whole test set in one run:
   images/s, the share of wall time outside member inference (manifest stage timings), peak RSS;
2. ens against `peer_predict.py` (torch eager + ttach, keras model.predict, pandas to_csv) on the
   same images, split into --parts slices run alternately (ens first, then peer first, ...) so a
   change in the load from other processes hits both alike: the speed ratio ens/peer and the pixel
   agreement of their CSVs;
3. `ens predict` on `ens data demo` files of other test-set sizes: peak RSS against N.

    .venv/bin/python benchmarks/predict_bench.py                  # full test set (about 30 min here)
    .venv/bin/python benchmarks/predict_bench.py --n-images 256 --parts 2 --rss-sizes 128,512

Progress goes to stderr, the summary (markdown) to stdout and predict_bench.json in --out-dir.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
from jobs import (
    ROOT,
    demo_file,
    ens_command,
    log,
    machine,
    physical_cores,
    read_test_images,
    run_job,
    slice_file,
)

PEER = Path(__file__).with_name("peer_predict.py")


def run_ens(data: Path, args: argparse.Namespace, csv: Path) -> dict:
    """`ens predict` on the test set of `data`: the job, the manifest timings and N."""
    command = ens_command(
        "predict", "--members", args.members, "--models-dir", str(args.models_dir), "--data", str(data),
        "--tta", "flip", "--min-area", "0", "--format", "flat", "--batch-size", str(args.batch_size),
        "--device", "cpu", "--out", str(csv),
    )  # fmt: skip
    if args.threads:
        command += ["--threads", str(args.threads)]
    job = run_job(command)
    manifest = json.loads(csv.with_name(csv.stem + ".manifest.json").read_text())
    timings = manifest["timings"]
    return {
        "data": str(data),
        "n_images": manifest["data"]["n_images"],
        "wall_seconds": round(job.seconds, 2),
        "cpu_seconds": round(job.cpu_seconds, 2),
        "max_rss_mb": round(job.max_rss_mb, 1),
        "run_seconds": timings["total_seconds"],
        "images_per_second": round(manifest["data"]["n_images"] / timings["total_seconds"], 2),
        "outside_inference_share": timings["outside_inference_share"],
        "stages": timings["stages"],
        "threads": manifest["runtime"]["threads"],
    }


def run_peer(data: Path, args: argparse.Namespace, csv: Path) -> dict:
    """`peer_predict.py` on the test set of `data`: the job and its own stage seconds."""
    timings = csv.with_suffix(".timings.json")
    command = [
        sys.executable, str(PEER), "--data", str(data), "--sources", str(args.sources),
        "--members", args.members, "--out", str(csv), "--timings", str(timings),
        "--batch-size", str(args.batch_size), "--threads", str(args.threads or physical_cores()),
    ]  # fmt: skip
    # idle OpenMP threads sleep, as ORT's do in ens: spinning slows torch badly on a shared machine
    job = run_job(command, env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
    report = json.loads(timings.read_text())
    return {
        "n_images": report["n_images"],
        "wall_seconds": round(job.seconds, 2),
        "cpu_seconds": round(job.cpu_seconds, 2),
        "max_rss_mb": round(job.max_rss_mb, 1),
        "run_seconds": round(report["seconds"]["run"], 2),
        "stages": {k: round(v, 3) for k, v in report["seconds"].items()},
    }


def agreement(ens_csv: Path, peer_csv: Path, image_shape: tuple[int, int], n_classes: int) -> dict:
    """Pixels and images on which two flat CSVs agree, and whether the files are byte-identical."""
    from ensemble.submission.io import read_submission

    ens_ids, ens_labels, _ = read_submission(ens_csv, image_shape, n_classes)
    peer_ids, peer_labels, _ = read_submission(peer_csv, image_shape, n_classes)
    if not np.array_equal(ens_ids, peer_ids):
        raise SystemExit(f"{ens_csv} and {peer_csv} hold different image ids")
    same = ens_labels == peer_labels
    return {
        "pixels": int(same.size),
        "pixels_differing": int((~same).sum()),
        "images": len(same),
        "images_identical": int(same.all(axis=(1, 2)).sum()),
        "csv_byte_identical": ens_csv.read_bytes() == peer_csv.read_bytes(),
    }


def compare(data: Path, args: argparse.Namespace) -> dict:
    """ens and peer on the same --parts slices of the test set, alternating which runs first."""
    from ensemble.members.store import resolve_members

    images = read_test_images(data)
    n_classes = resolve_members(args.members, args.models_dir)[0].n_classes
    parts = []
    for index, chunk in enumerate(np.array_split(images, args.parts)):
        path = slice_file(data, chunk, args.out_dir / f"part{index}.npz")
        ens_csv, peer_csv = args.out_dir / f"part{index}_ens.csv", args.out_dir / f"part{index}_peer.csv"
        part = {}
        for side in ("ens", "peer") if index % 2 == 0 else ("peer", "ens"):
            log(f"part {index + 1}/{args.parts} ({len(chunk)} images): {side}")
            part[side] = (run_ens if side == "ens" else run_peer)(
                path, args, ens_csv if side == "ens" else peer_csv
            )
        part["agreement"] = agreement(ens_csv, peer_csv, images.shape[1:], n_classes)
        parts.append(part)

    def total(side: str, key: str) -> float:
        return round(sum(part[side][key] for part in parts), 2)

    agree = {key: sum(part["agreement"][key] for part in parts) for key in parts[0]["agreement"]}
    return {
        "n_images": len(images),
        "parts": parts,
        "ens": {key: total("ens", key) for key in ("run_seconds", "wall_seconds", "cpu_seconds")},
        "peer": {key: total("peer", key) for key in ("run_seconds", "wall_seconds", "cpu_seconds")},
        "ens_max_rss_mb": max(part["ens"]["max_rss_mb"] for part in parts),
        "peer_max_rss_mb": max(part["peer"]["max_rss_mb"] for part in parts),
        "ratio_run": round(total("peer", "run_seconds") / total("ens", "run_seconds"), 3),
        "ratio_wall": round(total("peer", "wall_seconds") / total("ens", "wall_seconds"), 3),
        "ratio_cpu": round(total("peer", "cpu_seconds") / total("ens", "cpu_seconds"), 3),
        "pixel_agreement": 1 - agree["pixels_differing"] / agree["pixels"],
        "pixels_differing": agree["pixels_differing"],
        "images_identical": f"{agree['images_identical']}/{agree['images']}",
        "csv_byte_identical_parts": f"{agree['csv_byte_identical']}/{len(parts)}",
    }


def summary(results: dict) -> str:
    lines = []
    if "ens" in results:
        ens = results["ens"]
        lines += [
            f"ens, one run: {ens['n_images']} images, {ens['images_per_second']} img/s over "
            f"{ens['run_seconds']} s (process wall {ens['wall_seconds']} s), outside member inference "
            f"{100 * ens['outside_inference_share']:.2f}% of wall time, peak RSS {ens['max_rss_mb']} MB",
            f"  stages (s): {ens['stages']}",
        ]
    if "comparison" in results:
        c = results["comparison"]
        lines.append(f"ens vs peer on {c['n_images']} images in {len(c['parts'])} alternating parts:")
        for side in ("ens", "peer"):
            t = c[side]
            lines.append(
                f"  {side:4} {c['n_images'] / t['run_seconds']:.2f} img/s (run {t['run_seconds']} s, "
                f"process wall {t['wall_seconds']} s, CPU {t['cpu_seconds']} s), "
                f"peak RSS {c[side + '_max_rss_mb']} MB"
            )
        lines += [
            f"  ens/peer speed: {c['ratio_run']:.2f}x (prediction + CSV), {c['ratio_wall']:.2f}x (whole "
            f"process), {c['ratio_cpu']:.2f}x (CPU time)",
            f"  agreement: {100 * c['pixel_agreement']:.5f}% of pixels ({c['pixels_differing']} differ), "
            f"{c['images_identical']} images identical, "
            f"{c['csv_byte_identical_parts']} CSV parts byte-identical",
        ]
    if results.get("rss_vs_n"):
        lines += ["", "| test images N | peak RSS (MB) | img/s |", "|---:|---:|---:|"]
        lines += [
            f"| {r['n_images']} | {r['max_rss_mb']} | {r['images_per_second']} |" for r in results["rss_vs_n"]
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=Path("data/mars_demo.npz"), help="course-format npz")
    parser.add_argument("--models-dir", type=Path, default=Path("models"), help="ONNX member store")
    parser.add_argument("--sources", type=Path, default=Path("models/sources"), help="member checkpoints")
    parser.add_argument("--members", default="unet,se_unet,keras_unet")
    parser.add_argument("--n-images", type=int, default=0, help="first N test images only (0: all)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: physical cores)")
    parser.add_argument("--parts", type=int, default=4, help="slices for the alternating ens/peer runs")
    parser.add_argument(
        "--rss-sizes", default="2500,5000", help="test-set sizes of extra demo files ('' none)"
    )
    parser.add_argument("--skip-single", action="store_true", help="leave out the one-run ens measurement")
    parser.add_argument("--skip-peer", action="store_true", help="leave out the ens/peer comparison")
    parser.add_argument("--out-dir", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    os.chdir(ROOT)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    if not args.data.exists() and args.data == Path("data/mars_demo.npz"):
        run_job(ens_command("data", "demo"))

    results: dict = {
        "machine": machine(),
        "command": " ".join(["benchmarks/predict_bench.py", *sys.argv[1:]]),
    }
    data = args.data
    if args.n_images:
        data = slice_file(
            args.data, read_test_images(args.data)[: args.n_images], args.out_dir / "subset.npz"
        )
    log("warm-up run (Numba caches, file cache)")
    warm = slice_file(
        args.data, read_test_images(args.data)[: 2 * args.batch_size], args.out_dir / "warmup.npz"
    )
    run_ens(warm, args, args.out_dir / "warmup.csv")

    rss = []
    if not args.skip_single:
        results["ens"] = run_ens(data, args, args.out_dir / "ens.csv")
        rss.append(results["ens"])
    if not args.skip_peer:
        results["comparison"] = compare(data, args)
    for n_test in [int(s) for s in args.rss_sizes.split(",") if s.strip()]:
        rss.append(run_ens(demo_file(n_test, args.out_dir), args, args.out_dir / f"rss_n{n_test}.csv"))
    results["rss_vs_n"] = sorted(rss, key=lambda r: r["n_images"])
    (args.out_dir / "predict_bench.json").write_text(json.dumps(results, indent=2) + "\n")
    print(summary(results))


if __name__ == "__main__":
    main()
