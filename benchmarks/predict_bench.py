"""Benchmark `ens predict` against the same job done the peer way, and its memory against N.

Runs, each in its own subprocess so that peak RSS is per job:
1. `ens predict --tta flip --min-area 0 --format flat` on the test set: images/s, the share of
   wall time outside member inference (from the manifest's stage timings), peak RSS;
2. `peer_predict.py` (torch eager + ttach, keras model.predict, pandas to_csv) on the same images:
   images/s, peak RSS, the speed ratio ens/peer and the pixel agreement of the two CSVs;
3. `ens predict` on demo files of other test-set sizes: peak RSS against N.

    .venv/bin/python benchmarks/predict_bench.py                  # full test set (slow)
    .venv/bin/python benchmarks/predict_bench.py --n-images 256 --rss-sizes 128,512

Progress goes to stderr, the summary (markdown) to stdout and a JSON file in --out-dir.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PEER = Path(__file__).with_name("peer_predict.py")
SHAPE_CLASSES = 5


@dataclass(frozen=True)
class Job:
    """One finished subprocess: wall seconds from spawn to exit and its own peak RSS."""

    seconds: float
    max_rss_mb: float


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def run_job(command: list[str], env: dict[str, str] | None = None) -> Job:
    """Run `command` from the repository root, its output on our stderr; fail on a non-zero exit.

    `os.wait4` gives this child's own rusage (RUSAGE_CHILDREN would be the maximum over all
    children so far); Linux reports ru_maxrss in KiB.
    """
    log(" ".join(command))
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, stdout=sys.stderr, env=env)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise SystemExit(f"benchmark step failed with exit code {process.returncode}: {' '.join(command)}")
    return Job(seconds, usage.ru_maxrss / 1024)


def ens_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "ensemble", *args]


def subset_file(data: Path, n_images: int, out: Path) -> Path:
    """A course-format npz holding the first `n_images` test images of `data` (8 training images)."""
    from ensemble.data import open_data

    source = open_data(data)
    images, masks = source.load_train()
    test = np.concatenate(list(source.iter_test_images(256)))[:n_images]
    np.savez(out, training_set=np.stack([images[:8], masks[:8]], axis=1), test_set=test)
    return out


def demo_file(n_test: int, out_dir: Path) -> Path:
    """`ens data demo` with `n_test` test images and 200 training images (kept for reruns)."""
    path = out_dir / f"demo_n{n_test}.npz"
    if not path.exists():
        run_job(ens_command("data", "demo", "--out", str(path), "--n-test", str(n_test), "--n-train", "200"))
    return path


def run_ens(data: Path, args: argparse.Namespace, csv: Path) -> dict:
    """`ens predict` on the test set of `data`; returns the job, the manifest timings and N."""
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
    n_images = manifest["data"]["n_images"]
    return {
        "n_images": n_images,
        "wall_seconds": round(job.seconds, 2),
        "max_rss_mb": round(job.max_rss_mb, 1),
        "run_seconds": timings["total_seconds"],
        "images_per_second": round(n_images / timings["total_seconds"], 2),
        "outside_inference_share": timings["outside_inference_share"],
        "stages": timings["stages"],
        "threads": manifest["runtime"]["threads"],
    }


def run_peer(data: Path, args: argparse.Namespace, csv: Path) -> dict:
    timings = csv.with_suffix(".timings.json")
    command = [
        sys.executable, str(PEER), "--data", str(data), "--sources", str(args.sources),
        "--members", args.members, "--out", str(csv), "--timings", str(timings),
        "--batch-size", str(args.batch_size), "--threads", str(args.threads or physical_cores()),
    ]  # fmt: skip
    # idle OpenMP threads sleep, as ORT's do in ens: spinning slows torch badly on a shared machine
    job = run_job(command, env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
    report = json.loads(timings.read_text())
    seconds = report["seconds"]
    return {
        "n_images": report["n_images"],
        "wall_seconds": round(job.seconds, 2),
        "max_rss_mb": round(job.max_rss_mb, 1),
        "run_seconds": round(seconds["run"], 2),
        "images_per_second": round(report["n_images"] / seconds["run"], 2),
        "stages": {k: round(v, 3) for k, v in seconds.items()},
    }


def physical_cores() -> int:
    from ensemble.session import physical_cores as cores

    return cores()


def agreement(ens_csv: Path, peer_csv: Path, image_shape: tuple[int, int]) -> dict:
    """Pixel and image agreement of two flat CSVs, and whether they are byte-identical."""
    from ensemble.submission import read_submission

    ens_ids, ens_labels, _ = read_submission(ens_csv, image_shape, SHAPE_CLASSES)
    peer_ids, peer_labels, _ = read_submission(peer_csv, image_shape, SHAPE_CLASSES)
    if not np.array_equal(ens_ids, peer_ids):
        raise SystemExit(f"{ens_csv} and {peer_csv} hold different image ids")
    same = ens_labels == peer_labels
    return {
        "pixel_agreement": float(same.mean()),
        "pixels_differing": int((~same).sum()),
        "images_identical": float(same.all(axis=(1, 2)).mean()),
        "csv_byte_identical": ens_csv.read_bytes() == peer_csv.read_bytes(),
    }


def machine() -> dict:
    from importlib import metadata

    model = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")), platform.processor(),
    )  # fmt: skip
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "physical_cores": physical_cores(),
        "python": platform.python_version(),
        "onnxruntime": metadata.version("onnxruntime-gpu" if _has("onnxruntime-gpu") else "onnxruntime"),
        "torch": metadata.version("torch"),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def _has(distribution: str) -> bool:
    from importlib import metadata

    try:
        metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return False
    return True


def summary(results: dict) -> str:
    ens, peer, rss = results["ens"], results.get("peer"), results["rss_vs_n"]
    lines = [
        f"ens: {ens['n_images']} images, {ens['images_per_second']} img/s over {ens['run_seconds']} s "
        f"(process wall {ens['wall_seconds']} s), outside member inference "
        f"{100 * ens['outside_inference_share']:.2f}% of wall time, peak RSS {ens['max_rss_mb']} MB",
        f"ens stages (s): {ens['stages']}",
    ]
    if peer:
        agree = results["agreement"]
        lines += [
            f"peer: {peer['images_per_second']} img/s over {peer['run_seconds']} s "
            f"(process wall {peer['wall_seconds']} s), peak RSS {peer['max_rss_mb']} MB",
            f"peer stages (s): {peer['stages']}",
            f"ens/peer: {results['ratio_run']:.2f}x (prediction + CSV), {results['ratio_wall']:.2f}x "
            f"(whole process); pixel agreement {100 * agree['pixel_agreement']:.5f}% "
            f"({agree['pixels_differing']} pixels differ), CSV byte-identical: {agree['csv_byte_identical']}",
        ]
    lines += ["", "| test images N | peak RSS (MB) | img/s |", "|---:|---:|---:|"]
    lines += [f"| {r['n_images']} | {r['max_rss_mb']} | {r['images_per_second']} |" for r in rss]
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
    parser.add_argument(
        "--rss-sizes", default="2500,5000", help="test-set sizes of extra `ens data demo` files ('' for none)"
    )
    parser.add_argument("--skip-peer", action="store_true", help="leave out the peer run")
    parser.add_argument("--out-dir", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    os.chdir(ROOT)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    if not args.data.exists() and args.data == Path("data/mars_demo.npz"):
        run_job(ens_command("data", "demo"))

    results: dict = {"machine": machine(), "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])}
    data = args.data
    if args.n_images:
        data = subset_file(args.data, args.n_images, args.out_dir / f"subset_{args.n_images}.npz")
    log("warm-up run (numba caches, file cache)")
    warm = subset_file(args.data, 2 * args.batch_size, args.out_dir / "warmup.npz")
    run_ens(warm, args, args.out_dir / "warmup.csv")

    ens_csv, peer_csv = args.out_dir / "ens.csv", args.out_dir / "peer.csv"
    results["ens"] = run_ens(data, args, ens_csv)
    if not args.skip_peer:
        results["peer"] = run_peer(data, args, peer_csv)
        from ensemble.data import open_data

        results["agreement"] = agreement(ens_csv, peer_csv, open_data(data).image_shape)
        results["ratio_run"] = results["peer"]["run_seconds"] / results["ens"]["run_seconds"]
        results["ratio_wall"] = results["peer"]["wall_seconds"] / results["ens"]["wall_seconds"]

    rss = [{"data": str(data), **results["ens"]}]
    for n_test in [int(s) for s in args.rss_sizes.split(",") if s.strip()]:
        path = demo_file(n_test, args.out_dir)
        rss.append({"data": str(path), **run_ens(path, args, args.out_dir / f"rss_n{n_test}.csv")})
    results["rss_vs_n"] = sorted(rss, key=lambda r: r["n_images"])
    (args.out_dir / "predict_bench.json").write_text(json.dumps(results, indent=2) + "\n")
    print(summary(results))


if __name__ == "__main__":
    main()
