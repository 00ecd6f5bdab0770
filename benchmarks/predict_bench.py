"""Benchmark `ens predict` against the same job done the peer way, and its memory against N.

Every job runs in its own subprocess, so peak RSS and CPU time are per job:
1. `ens predict --tta flip --min-area 0 --format flat` on the whole test set in one run:
   images/s, the share of wall time outside member inference (manifest stage timings), peak RSS;
2. ens against `peer_predict.py` (torch eager + ttach, keras model.predict, pandas to_csv) on the
   same images, split into --parts slices run alternately (ens first, then peer first, ...) so a
   change in the load from other processes hits both alike: the speed ratio ens/peer and the pixel
   agreement of their CSVs;
3. `ens predict` on `ens data demo` files of other test-set sizes: peak RSS against N;
4. the bound (`--bound-parts P`): the test images split into P slices, and on each slice, in an order
   rotated from slice to slice, `make demo`'s predict (`--tta flip`, the ensemble file, RLE with
   cleanup) of this checkout (default runtime), of this checkout with `--runtime ort`, of another
   checkout (`--main-dir`, e.g. `git archive main | tar -x -C /tmp/main_base`), each member on its
   own on each runtime (member_speed.py: the pipeline's inputs and workers) and the peer path. It
   prints each member's img/s per runtime, the bound (the images / the sum over members of their
   fastest standalone seconds), ens img/s and its fraction of the bound, the speed-up against the
   other checkout, and the label agreement (CSV bytes, pixels, test mIoU) between them.

    .venv/bin/python benchmarks/predict_bench.py                  # full test set (about 30 min here)
    .venv/bin/python benchmarks/predict_bench.py --n-images 256 --parts 2 --rss-sizes 128,512
    .venv/bin/python benchmarks/predict_bench.py --n-images 768 --bound-parts 3 --skip-single \
        --skip-peer --rss-sizes '' --main-dir /tmp/main_base
    .venv/bin/python benchmarks/predict_bench.py --export-first --n-images 1000 --parts 2 \
        --skip-single --rss-sizes ''   # members just exported, no earlier runtime cache

With --export-first the members are first exported again from their checkpoints into a new store,
with a new $ENS_CACHE, so `ens predict` runs on the runtime choices those exports made.

Progress goes to stderr, the summary (markdown) to stdout and predict_bench.json in --out-dir.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
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
MEMBER_SPEED = Path(__file__).with_name("member_speed.py")


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


def export_fresh(args: argparse.Namespace) -> dict:
    """Export the members again from their checkpoints (each sidecar's `export_command`) into a new
    store, with a new, empty $ENS_CACHE for this and every later job: the runtime choices `ens predict`
    uses are the ones the exports just made. Returns the export seconds per member."""
    import shutil

    cache, store = args.out_dir / "fresh-cache", args.out_dir / "fresh-models"
    for folder in (cache, store):
        shutil.rmtree(folder, ignore_errors=True)
    os.environ["ENS_CACHE"] = str(cache.resolve())
    seconds = {}
    for name in args.members.split(","):
        sidecar = next(args.sources.glob(f"{name}.*.json"))
        words = shlex.split(json.loads(sidecar.read_text())["export_command"])
        assert words[:2] == ["ens", "export"], words
        # --trust: the factories are this checkout's zoo, which need not be the installed one
        command = ens_command(*words[1:], "--out-dir", str(store), "--trust")
        seconds[name] = round(run_job(command).seconds, 1)
    args.models_dir = store
    return seconds


def demo_predict(data: Path, args: argparse.Namespace, csv: Path, *extra: str, cwd: Path = ROOT) -> dict:
    """`make demo`'s predict (flip TTA, the ensemble file, RLE with cleanup) on `data`, run from `cwd`."""
    command = ens_command(
        "predict", "--data", str(data.resolve()), "--tta", "flip",
        "--models-dir", str(args.models_dir.resolve()),
        "--ensemble", str(args.ensemble.resolve()), "--device", "cpu", "--out", str(csv.resolve()), *extra,
    )  # fmt: skip
    job = run_job(command, cwd=cwd)
    manifest = json.loads(csv.with_name(csv.stem + ".manifest.json").read_text())
    return {
        "run_seconds": manifest["timings"]["total_seconds"],
        "wall_seconds": round(job.seconds, 2),
        "cpu_seconds": round(job.cpu_seconds, 2),
        "max_rss_mb": round(job.max_rss_mb, 1),
        "runtimes": [runtime_of(m.get("runtime", {})) for m in manifest["members"]],
        "workers": manifest["runtime"].get("workers", 1),
    }


def runtime_of(choice: dict) -> str:
    """A member's runtime in a manifest, with `+folded` when ONNX Runtime ran its folded graph."""
    return choice.get("runtime", "onnxruntime") + ("+folded" if choice.get("folded") else "")


def labels_of(csv: Path, shape: tuple[int, int], n_classes: int) -> np.ndarray:
    from ensemble.submission.io import read_submission

    return read_submission(csv, shape, n_classes)[1]


def bound_comparison(data: Path, args: argparse.Namespace) -> dict:
    """ens (default runtime and --runtime ort), another checkout's ens, each member alone on each
    runtime and the peer, on the same slices, in an order rotated per slice (see the docstring)."""
    from ensemble.data.datafile import open_data
    from ensemble.data.metrics import confusion_matrix, course_miou
    from ensemble.members.store import resolve_members

    source = open_data(data)
    images = source.load_test_images()
    # the test masks of the full file (a --n-images subset keeps the first N images without them)
    masks = (
        open_data(args.data).load_test_masks()[: len(images)]
        if "test_masks" in np.load(args.data).files
        else None
    )
    n_classes = resolve_members(args.members, args.models_dir)[0].n_classes
    train, train_masks = source.load_train()
    sides = ["ens", "ens-ort", "members"]
    sides += ["main"] if args.main_dir else []
    sides += [] if args.skip_peer else ["peer"]
    log("prime the `--runtime auto` cache on the first slice (what the first run on this machine does)")
    first = args.out_dir / "bound_part0.npz"
    chunks = np.array_split(np.arange(len(images)), args.bound_parts)
    parts = []
    for index, ids in enumerate(chunks):
        path = args.out_dir / f"bound_part{index}.npz"
        arrays = {"training_set": np.stack([train[:8], train_masks[:8]], axis=1), "test_set": images[ids]}
        if masks is not None:
            arrays["test_masks"] = masks[ids]
        np.savez(path, **arrays)
        if index == 0:
            run_job([sys.executable, str(MEMBER_SPEED), "--data", str(first), "--members", args.members,
                     "--models-dir", str(args.models_dir), "--prime"])  # fmt: skip
        part: dict = {"n_images": len(ids)}
        shift = index % len(sides)
        for side in sides[shift:] + sides[:shift]:
            log(f"bound slice {index + 1}/{args.bound_parts} ({len(ids)} images): {side}")
            csv = args.out_dir / f"bound_part{index}_{side}.csv"
            if side == "ens":
                part[side] = demo_predict(
                    path, args, csv, *(["--runtime", args.runtime] if args.runtime else [])
                )
            elif side == "ens-ort":
                part[side] = demo_predict(path, args, csv, "--runtime", "ort")
            elif side == "main":
                part[side] = demo_predict(path, args, csv, cwd=args.main_dir)
            elif side == "peer":
                part[side] = run_peer(path, args, csv)
            else:
                out = args.out_dir / f"bound_part{index}_members.json"
                command = [sys.executable, str(MEMBER_SPEED), "--data", str(path), "--members", args.members,
                           "--models-dir", str(args.models_dir), "--batch-size", str(args.batch_size),
                           "--json", str(out)]  # fmt: skip
                run_job(command)
                part[side] = json.loads(out.read_text())
        reference = args.out_dir / f"bound_part{index}_{'main' if args.main_dir else 'ens-ort'}.csv"
        ref_labels = labels_of(reference, images.shape[1:], n_classes)
        part["agreement"] = {}
        for side in ("ens", "ens-ort"):
            csv = args.out_dir / f"bound_part{index}_{side}.csv"
            labels = labels_of(csv, images.shape[1:], n_classes)
            entry = {
                "csv_byte_identical": csv.read_bytes() == reference.read_bytes(),
                "pixels_differing": int((labels != ref_labels).sum()),
                "pixels": int(labels.size),
            }
            if masks is not None:
                entry["confusion"] = confusion_matrix(masks[ids], labels, n_classes).tolist()
                entry["reference_confusion"] = confusion_matrix(masks[ids], ref_labels, n_classes).tolist()
            part["agreement"][side] = entry
        parts.append(part)
    return summarise_bound(parts, sides, masks is not None, course_miou)


def summarise_bound(parts: list[dict], sides: list[str], scored: bool, course_miou) -> dict:
    """Totals over the slices: img/s per side and per member and runtime, the bound, the ratios."""
    n = sum(p["n_images"] for p in parts)
    speed = {
        side: round(n / sum(p[side]["run_seconds"] for p in parts), 3)
        for side in sides
        if side not in ("members", "peer")
    }
    if "peer" in sides:
        speed["peer"] = round(n / sum(p["peer"]["run_seconds"] for p in parts), 3)
    members: dict[str, dict[str, float]] = {}
    for part in parts:
        for member, runtimes in part["members"]["seconds"].items():
            for runtime, seconds in runtimes.items():
                members.setdefault(member, {}).setdefault(runtime, 0.0)
                members[member][runtime] += seconds
    member_speed = {m: {rt: round(n / s, 2) for rt, s in r.items()} for m, r in members.items()}
    best = {m: min(r, key=r.get) for m, r in members.items()}
    bound = n / sum(members[m][best[m]] for m in members)
    ort_bound = n / sum(r["ort"] for r in members.values())
    result = {
        "n_images": n,
        "slices": len(parts),
        "img_per_s": speed,
        "member_img_per_s": member_speed,
        "best_runtime": best,
        "bound": round(bound, 3),
        "bound_ort_only": round(ort_bound, 3),
        "ens_fraction_of_bound": round(speed["ens"] / bound, 4),
        "ens_ort_fraction_of_ort_bound": round(speed["ens-ort"] / ort_bound, 4),
        "ens_runtimes": parts[0]["ens"]["runtimes"],
        "max_rss_mb": {s: max(p[s]["max_rss_mb"] for p in parts) for s in sides if s != "members"},
        "parts": parts,
    }
    if "main" in speed:
        result["speedup_vs_main"] = round(speed["ens"] / speed["main"], 3)
        result["speedup_ort_vs_main"] = round(speed["ens-ort"] / speed["main"], 3)
    if "peer" in speed:
        result["speedup_vs_peer"] = round(speed["ens"] / speed["peer"], 3)
    for side in ("ens", "ens-ort"):
        entries = [p["agreement"][side] for p in parts]
        agree = {
            "csv_byte_identical_slices": f"{sum(e['csv_byte_identical'] for e in entries)}/{len(entries)}",
            "pixel_agreement": 1
            - sum(e["pixels_differing"] for e in entries) / sum(e["pixels"] for e in entries),
        }
        if scored:
            mine = np.sum([e["confusion"] for e in entries], axis=0)
            ref = np.sum([e["reference_confusion"] for e in entries], axis=0)
            agree["test_miou"] = course_miou(mine)
            agree["test_miou_move"] = course_miou(mine) - course_miou(ref)
        result[f"agreement_{side}"] = agree
    return result


def bound_summary(b: dict) -> list[str]:
    runtimes = list(dict.fromkeys(rt for rates in b["member_img_per_s"].values() for rt in rates))
    lines = [
        "",
        f"bound comparison: {b['n_images']} images in {b['slices']} slices, sides alternated per slice",
        "",
        "| member | " + " | ".join(f"{rt} img/s" for rt in runtimes) + " | best |",
        "|---|" + "---:|" * len(runtimes) + "---|",
    ]
    for member, rates in b["member_img_per_s"].items():
        lines.append(
            f"| {member} | "
            + " | ".join(str(rates.get(rt, "-")) for rt in runtimes)
            + f" | {b['best_runtime'][member]} |"
        )
    lines += [
        "",
        f"bound (best runtime per member): {b['bound']} img/s; "
        f"ONNX Runtime only: {b['bound_ort_only']} img/s",
        "",
        "| side | img/s | peak RSS MB |",
        "|---|---:|---:|",
    ]
    lines += [
        f"| {side} | {rate} | {b['max_rss_mb'].get(side, '')} |" for side, rate in b["img_per_s"].items()
    ]
    lines += [
        "",
        f"ens (runtimes {b['ens_runtimes']}): {100 * b['ens_fraction_of_bound']:.1f}% of the bound; "
        f"ens --runtime ort: {100 * b['ens_ort_fraction_of_ort_bound']:.1f}% of the ONNX Runtime bound",
    ]
    if "speedup_vs_main" in b:
        lines.append(
            f"speed-up vs main: {b['speedup_vs_main']}x (default), "
            f"{b['speedup_ort_vs_main']}x (--runtime ort)"
        )
    if "speedup_vs_peer" in b:
        lines.append(f"speed-up vs peer: {b['speedup_vs_peer']}x")
    for side in ("ens", "ens-ort"):
        lines.append(f"agreement {side} vs reference: {b[f'agreement_{side}']}")
    return lines


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
    if results.get("bound"):
        lines += bound_summary(results["bound"])
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
    parser.add_argument("--bound-parts", type=int, default=0, help="slices of the bound comparison (0: none)")
    parser.add_argument("--runtime", default=None, help="--runtime of the `ens` side (default: ens's)")
    parser.add_argument("--main-dir", type=Path, default=None, help="another checkout to compare with")
    parser.add_argument("--ensemble", type=Path, default=Path("models/ensemble.json"), help="ensemble file")
    parser.add_argument("--skip-single", action="store_true", help="leave out the one-run ens measurement")
    parser.add_argument("--skip-peer", action="store_true", help="leave out the ens/peer comparison")
    parser.add_argument("--out-dir", type=Path, default=Path("benchmarks/results"))
    parser.add_argument(
        "--export-first",
        action="store_true",
        help="export the members from --sources into a new store with a new $ENS_CACHE first",
    )
    args = parser.parse_args(argv)
    os.chdir(ROOT)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    if not args.data.exists() and args.data == Path("data/mars_demo.npz"):
        run_job(ens_command("data", "demo"))

    results: dict = {
        "machine": machine(),
        "command": " ".join(["benchmarks/predict_bench.py", *sys.argv[1:]]),
    }
    if args.export_first:
        results["export_seconds"] = export_fresh(args)
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
    if args.bound_parts:
        results["bound"] = bound_comparison(data, args)
    if not args.skip_peer and not args.bound_parts:
        results["comparison"] = compare(data, args)
    for n_test in [int(s) for s in args.rss_sizes.split(",") if s.strip()]:
        rss.append(run_ens(demo_file(n_test, args.out_dir), args, args.out_dir / f"rss_n{n_test}.csv"))
    results["rss_vs_n"] = sorted(rss, key=lambda r: r["n_images"])
    (args.out_dir / "predict_bench.json").write_text(json.dumps(results, indent=2) + "\n")
    print(summary(results))


if __name__ == "__main__":
    main()
