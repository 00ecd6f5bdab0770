"""Each member on its own, per runtime and setting: images/s, peak RSS, parity with ONNX Runtime, and
the bound that the fastest settings put on a whole ensemble.

Every (member, setting) runs in a child process of this one, round after round, with the order of
the settings rotated each round so that load from other processes on a shared machine hits all of
them alike; the medians over rounds are reported. A child loads the first --n-images test images,
runs one warm-up batch, then times every batch of --batch-size images (one view unless the setting
says otherwise).

Settings (ORT = ONNX Runtime CPU provider, T = physical cores):
  ort              T intra-op threads, ORT's defaults (idle threads spin, one arena per session)
  ort-nospin       T threads, idle threads sleep (session.intra_op.allow_spinning=0)
  ort-shared       T threads, the process-wide shared arena (session.use_env_allocators=1)
  ort-today        both of the above: the CPU sessions `ens predict` builds today
  ort-today-2B     ort-today with flip TTA run as one batch of 2B views (as `ens predict` does)
  ort-today-2x     ort-today with flip TTA run as two batches of B views
  ort-2B, ort-2x   the same two with ORT's defaults
  ort-b32, ort-b16 ORT's defaults, sub-batches of 32 / 16 images
  ort-par2         2 sessions x 1 thread, two Python threads taking batches in turn (ORT frees the GIL)
  ort-par2-shared  the same, both sessions on the shared arena
  ort-par1s        ONE session x 1 thread called from two Python threads at once
  ov-lat           OpenVINO fp32, LATENCY hint, one synchronous request
  ov-tput          OpenVINO fp32, THROUGHPUT hint, one synchronous request
  ov-tput2         OpenVINO fp32, THROUGHPUT hint, 2 requests in an AsyncInferQueue
  ov-tput2-static  the same with the input reshaped to a static (B, 1, H, W)
  ov-lat2          OpenVINO fp32, LATENCY hint, 2 requests in an AsyncInferQueue

    .venv/bin/python benchmarks/runtime_bench.py --n-images 768 --rounds 3
    .venv/bin/python benchmarks/runtime_bench.py --settings ort,ort-par2,ov-tput2 --members unet

Progress goes to stderr, the summary (markdown) to stdout and runtime_bench.json in --out-dir.
"""

# ruff: noqa: E501  (prototype scripts: long table and command lines)
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np
from jobs import ROOT, log, machine, physical_cores, read_test_images, run_job

SETTINGS = (
    "ort", "ort-nospin", "ort-shared", "ort-today", "ort-today-2B", "ort-today-2x", "ort-2B", "ort-2x",
    "ort-b32", "ort-b16", "ort-par2", "ort-par2-shared", "ort-par1s",
    "ov-lat", "ov-tput", "ov-tput2", "ov-tput2-static", "ov-lat2",
)  # fmt: skip
DEFAULT_SETTINGS = (
    "ort", "ort-nospin", "ort-shared", "ort-today", "ort-today-2B", "ort-today-2x", "ort-2B", "ort-2x",
    "ort-par2", "ort-par1s", "ov-lat", "ov-tput", "ov-tput2", "ov-tput2-static",
)  # fmt: skip
INPUT, OUTPUT = "pixels", "probs"


# ---------------------------------------------------------------- child: one member, one setting
def ort_session(path: Path, threads: int, spin: bool = True, shared: bool = False):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if shared:
        memory = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
        ort.create_and_register_allocator(memory, ort.OrtArenaCfg(0, -1, -1, -1))
        options.add_session_config_entry("session.use_env_allocators", "1")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda x: session.run([OUTPUT], {INPUT: x})[0]


def ov_model(path: Path, hint: str, static_shape: tuple[int, ...] | None = None):
    import openvino as ov

    core = ov.Core()
    model = core.read_model(str(path))
    if static_shape is not None:
        model.reshape({INPUT: static_shape})
    config = {"PERFORMANCE_HINT": hint, "INFERENCE_PRECISION_HINT": "f32"}
    compiled = core.compile_model(model, "CPU", config)
    props = {
        key: str(compiled.get_property(key))
        for key in ("NUM_STREAMS", "INFERENCE_NUM_THREADS", "OPTIMAL_NUMBER_OF_INFER_REQUESTS")
    }
    return ov, compiled, props


def batches_of(images: np.ndarray, batch: int) -> list[np.ndarray]:
    pixels = images.astype(np.float32)[:, None]
    return [np.ascontiguousarray(pixels[s : s + batch]) for s in range(0, len(pixels), batch)]


def in_threads(runs: list, work: list[np.ndarray], results: list) -> None:
    """Each Python thread takes the next batch and runs it on its own callable."""
    lock, cursor = threading.Lock(), iter(range(len(work)))

    def worker(run) -> None:
        while True:
            with lock:
                index = next(cursor, None)
            if index is None:
                return
            results[index] = run(work[index])

    threads = [threading.Thread(target=worker, args=(run,)) for run in runs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def child(args: argparse.Namespace) -> None:
    """Time one setting on one member and write the result (and, if asked, outputs) as files."""
    setting, path = args.setting, args.models_dir / f"{args.member}.onnx"
    images = np.load(args.images)
    batch = {"ort-b32": 32, "ort-b16": 16}.get(setting, args.batch_size)
    work = batches_of(images, batch)
    cores = physical_cores()
    props: dict = {}
    views = 1
    parallel = None
    if setting.startswith("ov-"):
        hint = "LATENCY" if setting.startswith("ov-lat") else "THROUGHPUT"
        static = (batch, 1, *images.shape[1:]) if setting.endswith("-static") else None
        ov, compiled, props = ov_model(path, hint, static)
        if setting in ("ov-tput2", "ov-tput2-static", "ov-lat2"):
            parallel = ("ov", 2)
        else:
            request = compiled.create_infer_request()

            def run(x):
                return request.infer({0: x})[0].copy()

    elif setting.startswith("ort-par"):
        shared = setting == "ort-par2-shared"
        runs = [ort_session(path, 1, shared=shared)]
        runs.append(runs[0] if setting == "ort-par1s" else ort_session(path, 1, shared=shared))
        parallel = ("ort", runs)
    else:
        spin = setting not in ("ort-nospin",) and not setting.startswith("ort-today")
        shared = setting == "ort-shared" or setting.startswith("ort-today")
        run = ort_session(path, cores, spin=spin, shared=shared)
        if setting.endswith("-2B"):
            views, base = 2, run

            def run(x):
                out = base(np.concatenate([x, x[..., ::-1]]))
                return out[: len(x)]

        elif setting.endswith("-2x"):
            views, base = 2, run

            def run(x):
                out = base(x)
                base(np.ascontiguousarray(x[..., ::-1]))
                return out

    results: list = [None] * len(work)
    if parallel is None:
        run(work[0])  # warm-up
        start = time.perf_counter()
        for index, x in enumerate(work):
            results[index] = run(x)
        seconds = time.perf_counter() - start
    elif parallel[0] == "ort":
        for r in parallel[1]:
            r(work[0])
        start = time.perf_counter()
        in_threads(parallel[1], work, results)
        seconds = time.perf_counter() - start
    else:
        queue = ov.AsyncInferQueue(compiled, parallel[1])

        def done(request, index) -> None:
            results[index] = request.get_output_tensor(0).data.copy()

        queue.set_callback(done)
        for _ in range(parallel[1]):
            queue.start_async({0: work[0]}, 0)
        queue.wait_all()
        start = time.perf_counter()
        for index, x in enumerate(work):
            queue.start_async({0: x}, index)
        queue.wait_all()
        seconds = time.perf_counter() - start
    report = {
        "member": args.member,
        "setting": setting,
        "n_images": len(images),
        "views": views,
        "batch": batch,
        "seconds": seconds,
        "images_per_second": len(images) / seconds,
        "props": props,
    }
    if args.save:
        probs = np.concatenate(results)
        np.save(args.save / f"{args.member}_{setting}_first.npy", results[0])
        np.save(
            args.save / f"{args.member}_{setting}_labels.npy",
            probs[:, 1:].argmax(axis=1).astype(np.uint8) + 1,
        )
    args.result.write_text(json.dumps(report))


# ---------------------------------------------------------------- parent: rounds, medians, bound
def child_command(args: argparse.Namespace, member: str, setting: str, result: Path, save: bool) -> list[str]:
    command = [
        sys.executable, __file__, "--child", "--member", member, "--setting", setting,
        "--images", str(args.out_dir / "runtime_images.npy"), "--models-dir", str(args.models_dir),
        "--batch-size", str(args.batch_size), "--result", str(result),
    ]  # fmt: skip
    if save:
        command += ["--save", str(args.out_dir / "runtime_outputs")]
    return command


def bound(rates: dict[str, float], views: int) -> float:
    """Images/s of an ensemble whose members run one after another at these standalone rates."""
    return 1.0 / (views * sum(1.0 / r for r in rates.values()))


def parity(args: argparse.Namespace, members: list[str], settings: list[str]) -> dict:
    """Max abs difference of each setting's first batch from `ort`, and label agreement over all images."""
    out, table = args.out_dir / "runtime_outputs", {}
    for member in members:
        ref_first = np.load(out / f"{member}_ort_first.npy")
        ref_labels = np.load(out / f"{member}_ort_labels.npy")
        for setting in settings:
            if setting == "ort" or not (out / f"{member}_{setting}_first.npy").exists():
                continue
            first = np.load(out / f"{member}_{setting}_first.npy")
            labels = np.load(out / f"{member}_{setting}_labels.npy")
            table[f"{member}/{setting}"] = {
                "max_abs_diff_first_batch": float(np.abs(first - ref_first).max()),
                "label_pixels_differing": int((labels != ref_labels).sum()),
                "label_pixels": int(labels.size),
            }
    return table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=Path("data/mars_demo.npz"))
    parser.add_argument("--models-dir", type=Path, default=Path("models"))
    parser.add_argument("--members", default="unet,se_unet,keras_unet")
    parser.add_argument("--settings", default=",".join(DEFAULT_SETTINGS), help=f"of {','.join(SETTINGS)}")
    parser.add_argument("--n-images", type=int, default=768)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--views", type=int, default=2, help="TTA views for the bound (flip: 2)")
    parser.add_argument("--out-dir", type=Path, default=Path("benchmarks/results"))
    # child mode
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--member", help=argparse.SUPPRESS)
    parser.add_argument("--setting", help=argparse.SUPPRESS)
    parser.add_argument("--images", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--save", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args)
        return
    os.chdir(ROOT)
    members = [m.strip() for m in args.members.split(",")]
    settings = [s.strip() for s in args.settings.split(",")]
    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown:
        raise SystemExit(f"unknown settings {unknown}; choose from {', '.join(SETTINGS)}")
    if "ort" not in settings:
        settings.insert(0, "ort")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "runtime_outputs").mkdir(exist_ok=True)
    np.save(args.out_dir / "runtime_images.npy", read_test_images(args.data)[: args.n_images])
    result = args.out_dir / "runtime_child.json"
    runs: dict = {}
    for round_ in range(args.rounds):
        order = settings[round_ % len(settings) :] + settings[: round_ % len(settings)]
        if round_ % 2:
            order = order[::-1]
        for member in members:
            for setting in order:
                job = run_job(child_command(args, member, setting, result, save=round_ == 0))
                report = json.loads(result.read_text())
                report["max_rss_mb"] = round(job.max_rss_mb, 1)
                runs.setdefault(f"{member}/{setting}", []).append(report)
                log(f"round {round_ + 1} {member}/{setting}: {report['images_per_second']:.1f} img/s "
                    f"({report['views']} view(s)), {job.max_rss_mb:.0f} MB {report['props'] or ''}")  # fmt: skip
    table = {}
    for key, reports in runs.items():
        rates = [r["images_per_second"] for r in reports]
        table[key] = {
            "images_per_second": round(statistics.median(rates), 1),
            "views_per_second": round(statistics.median(rates) * reports[0]["views"], 1),
            "rounds": [round(r, 1) for r in rates],
            # round 1 also keeps every output for the parity check: its RSS is left out when there are more
            "max_rss_mb": max(r["max_rss_mb"] for r in (reports[1:] or reports)),
            "props": reports[0]["props"],
        }
    one_view = [s for s in settings if s.split("-")[-1] not in ("2B", "2x")]
    best = {m: max((table[f"{m}/{s}"]["images_per_second"], s) for s in one_view) for m in members}
    bounds = {
        "ort": bound({m: table[f"{m}/ort"]["images_per_second"] for m in members}, args.views),
        "best": bound({m: best[m][0] for m in members}, args.views),
        "best_setting": {m: best[m][1] for m in members},
    }
    for setting in ("ort-today", "ort-par2", "ov-tput2"):
        if setting in settings:
            rates = {m: table[f"{m}/{setting}"]["images_per_second"] for m in members}
            bounds[setting] = bound(rates, args.views)
    results = {
        "machine": machine(),
        "command": " ".join(["benchmarks/runtime_bench.py", *sys.argv[1:]]),
        "n_images": args.n_images,
        "batch_size": args.batch_size,
        "table": table,
        "bounds": bounds,
        "parity_vs_ort": parity(args, members, settings),
    }
    (args.out_dir / "runtime_bench.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = [
        f"{args.n_images} images, batch {args.batch_size}, {args.rounds} rounds (median img/s; views/s for 2B/2x)",
        "",
        "| setting | " + " | ".join(members) + " |",
        "|---|" + "---:|" * len(members),
    ]
    for setting in settings:
        cells = []
        for m in members:
            t = table[f"{m}/{setting}"]
            cells.append(f"{t['views_per_second']} ({t['max_rss_mb']:.0f} MB)")
        lines.append(f"| {setting} | " + " | ".join(cells) + " |")
    lines += ["", f"bounds for {len(members)} members x {args.views} views (img/s): "
              + ", ".join(f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}" for k, v in bounds.items())]  # fmt: skip
    lines += ["", "parity vs ort (first batch max abs diff; label pixels differing, argmax over 1..C-1):"]
    lines += [
        f"  {k}: {v['max_abs_diff_first_batch']:.2e}; {v['label_pixels_differing']}/{v['label_pixels']}"
        for k, v in results["parity_vs_ort"].items()
    ]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
