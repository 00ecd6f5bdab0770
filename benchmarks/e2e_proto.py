"""Prototype engines for `ens predict`, end to end (decode, cleanup, RLE CSV), against today's command.

Each variant runs in a child process; the variants alternate round after round. `ens` is the real
command (`ens predict --tta flip`, models/ensemble.json, as `make demo` runs it); the others load the
same ensemble (`prepare`), predict the same images and write the CSV with the same writer, cleanup
and format, so their CSVs must equal the command's byte for byte (ORT) or nearly (OpenVINO):

  pipe             today's pipeline code in-process (sanity: equals `ens`)
  pipe-spin        today's pipeline, ORT worker threads spinning instead of sleeping
  pipe-par2        two pipelines with 1-thread sessions, batches taken in turn by two Python threads
  compiled         the compiled ensemble graph (compile_proto.py), one session, T threads, spinning
  compiled-nospin  the same, idle threads sleeping
  compiled-par2    the compiled graph on 2 sessions x 1 thread, batches in turn from two Python threads
  compiled-par1s   ONE compiled session x 1 thread, called from two Python threads
  compiled-ov      the compiled graph on OpenVINO fp32 (THROUGHPUT hint, static batch, 2 requests;
                   the last batch is padded)

A `-b32` suffix runs a variant on batches of 32 images (half the memory per batch in flight).
Cleanup (Numba, parallel) and CSV writing stay in the main thread, in batch order.

    .venv/bin/python benchmarks/e2e_proto.py --n-images 1536 --rounds 3
    .venv/bin/python benchmarks/e2e_proto.py --n-images 0 --rounds 1 --variants ens,compiled-par2   # RSS at N=10,022
"""

# ruff: noqa: E501  (prototype scripts: long table and command lines)
from __future__ import annotations

import argparse
import json
import os
import queue
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from jobs import ROOT, ens_command, log, read_test_images, run_job, slice_file

VARIANTS = (
    "ens",
    "pipe",
    "pipe-spin",
    "pipe-par2",
    "compiled",
    "compiled-nospin",
    "compiled-par2",
    "compiled-par1s",
    "compiled-ov",
)
INPUT = "pixels"


def ort_session(path: Path, threads: int, spin: bool):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def in_pool(engines: list, batches, compute, consume, in_flight: int = 3) -> None:
    """`compute(engine, batch)` on a pool of engines (one Python thread each), `consume(batch,
    result)` in the calling thread in batch order; at most `in_flight` batches exist at once."""
    free: queue.Queue = queue.Queue()
    for engine in engines:
        free.put(engine)

    def task(batch):
        engine = free.get()
        try:
            return compute(engine, batch)
        finally:
            free.put(engine)

    pending = []
    with ThreadPoolExecutor(max_workers=len(engines)) as pool:
        for batch in batches:
            pending.append((batch, pool.submit(task, batch)))
            if len(pending) >= in_flight:
                done_batch, future = pending.pop(0)
                consume(done_batch, future.result())
        for done_batch, future in pending:
            consume(done_batch, future.result())


def child(args: argparse.Namespace) -> None:
    from compile_proto import build_compiled
    from ensemble.cleanup import remove_small_regions
    from ensemble.decode import decode
    from ensemble.pipeline import PredictOptions
    from ensemble.predict import PredictRequest, prepare

    from ensemble.data import open_data
    from ensemble.submission import SubmissionWriter

    variant = args.variant.removesuffix("-b32")  # `-b32`: batches of 32 images instead of --batch-size
    if args.variant.endswith("-b32"):
        args.batch_size = 32
    t_start = time.perf_counter()
    request = PredictRequest(data=open_data(args.data), store=args.models_dir, ensemble=args.ensemble)
    ensemble, source, _, _ = prepare(request)
    n_classes, allow = ensemble.n_classes, ensemble.options.allow_background
    threads = ensemble.runners[0].report.threads
    engines = [ensemble]
    if variant == "pipe-spin":
        for runner in ensemble.runners:
            runner.session = ort_session(runner.member.path, threads, spin=True)
    elif variant == "pipe-par2":
        single = PredictRequest(data=request.data, store=args.models_dir, options=PredictOptions(threads=1))
        engines = [prepare(single)[0], prepare(single)[0]]
    elif variant.startswith("compiled"):
        path = args.compiled_dir / "e2e_compiled.onnx"
        if not path.exists():
            import onnx

            views = tuple(v.name for v in ensemble.views)
            model = build_compiled([m.path for m in ensemble.members], ensemble.merge_weights, views, allow)
            onnx.save(model, str(path))
        if variant == "compiled":
            engines = [ort_session(path, threads, spin=True)]
        elif variant == "compiled-nospin":
            engines = [ort_session(path, threads, spin=False)]
        elif variant == "compiled-par2":
            engines = [ort_session(path, 1, spin=False), ort_session(path, 1, spin=False)]
        elif variant == "compiled-par1s":
            session = ort_session(path, 1, spin=False)
            engines = [session, session]
        else:
            import openvino as ov

            core = ov.Core()
            model = core.read_model(str(path))
            model.reshape({INPUT: (args.batch_size, 1, *source.image_shape)})
            config = {"PERFORMANCE_HINT": "THROUGHPUT", "INFERENCE_PRECISION_HINT": "f32"}
            engines = [core.compile_model(model, "CPU", config)]
    t_ready = time.perf_counter()

    def labels_of(engine, batch):
        ids, images = batch
        if variant.startswith("pipe"):
            return (
                engine.labels(engine.probabilities(ids, images))
                if variant != "pipe-par2"
                else decode(engine.probabilities(ids, images), allow)
            )
        return engine.run(["labels"], {INPUT: images.astype(np.float32)[:, None]})[0]

    min_area = ensemble.min_area
    with SubmissionWriter(args.out, "rle", source.image_shape, n_classes) as writer:

        def consume(batch, labels):
            if variant not in ("pipe", "pipe-spin") and min_area.any():
                remove_small_regions(labels, min_area, n_classes, ensemble.options.connectivity, out=labels)
            writer.write(batch[0], labels)

        batches = source.batches(args.batch_size)
        if variant == "compiled-ov":
            import openvino as ov

            compiled = engines[0]
            infer_queue = ov.AsyncInferQueue(compiled, 2)
            results: dict = {}
            lock = threading.Lock()

            def done(request, index) -> None:
                out = request.get_output_tensor(0).data.copy()
                with lock:
                    results[index] = out

            infer_queue.set_callback(done)
            order: list = []
            flushed = 0
            for index, (ids, images) in enumerate(batches):
                pixels = np.zeros((args.batch_size, 1, *images.shape[1:]), np.float32)
                pixels[: len(images), 0] = images
                order.append(ids)
                infer_queue.start_async({0: pixels}, index)  # blocks while both requests are busy
                while True:
                    with lock:
                        labels = results.pop(flushed, None)
                    if labels is None:
                        break
                    consume((order[flushed], None), labels[: len(order[flushed])])
                    order[flushed] = None
                    flushed += 1
            infer_queue.wait_all()
            for index in range(flushed, len(order)):
                consume((order[index], None), results.pop(index)[: len(order[index])])
        elif len(engines) == 1:
            for batch in batches:
                consume(batch, labels_of(engines[0], batch))
        else:
            in_pool(engines, batches, labels_of, consume)
    t_end = time.perf_counter()
    args.result.write_text(json.dumps({"seconds": t_end - t_ready, "setup_seconds": t_ready - t_start}))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=Path("data/mars_demo.npz"))
    parser.add_argument("--models-dir", type=Path, default=Path("models"))
    parser.add_argument("--n-images", type=int, default=1536, help="first N test images (0: all)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--out-dir", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--compiled-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--ensemble", type=Path, help="ensemble file (default: the store's ensemble.json)")
    args = parser.parse_args(argv)
    if args.child:
        child(args)
        return
    os.chdir(ROOT)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    data = args.data
    if args.n_images:
        data = slice_file(
            args.data, read_test_images(args.data)[: args.n_images], args.out_dir / "e2e_subset.npz"
        )
    n_images = args.n_images or len(read_test_images(args.data))
    compiled = args.out_dir / "e2e_compiled.onnx"
    compiled.unlink(missing_ok=True)
    variants = args.variants.split(",")
    result = args.out_dir / "e2e_child.json"
    runs: dict[str, list[dict]] = {v: [] for v in variants}
    for round_ in range(args.rounds):
        order = variants[round_ % len(variants) :] + variants[: round_ % len(variants)]
        for variant in order if round_ % 2 == 0 else order[::-1]:
            csv = args.out_dir / f"e2e_{variant}.csv"
            for old in (csv, csv.with_name(csv.stem + ".manifest.json")):
                old.unlink(missing_ok=True)
            if variant == "ens":
                job = run_job(ens_command("predict", "--data", str(data), "--models-dir", str(args.models_dir),
                                          "--tta", "flip", "--batch-size", str(args.batch_size), "--out", str(csv)))  # fmt: skip
                manifest = json.loads(csv.with_name(csv.stem + ".manifest.json").read_text())
                seconds = manifest["timings"]["total_seconds"]
            else:
                job = run_job([sys.executable, __file__, "--child", "--variant", variant, "--data", str(data),
                               "--models-dir", str(args.models_dir), "--batch-size", str(args.batch_size),
                               "--out", str(csv), "--result", str(result), "--compiled-dir", str(args.out_dir)])  # fmt: skip
                seconds = json.loads(result.read_text())["seconds"]
            runs[variant].append(
                {
                    "seconds": seconds,
                    "wall": job.seconds,
                    "cpu": job.cpu_seconds,
                    "max_rss_mb": job.max_rss_mb,
                }
            )
            log(
                f"round {round_ + 1} {variant}: {n_images / seconds:.1f} img/s, process wall {job.seconds:.1f} s, {job.max_rss_mb:.0f} MB"
            )
    reference = (args.out_dir / "e2e_ens.csv").read_bytes() if "ens" in variants else None
    summary = {}
    for variant, reports in runs.items():
        med = statistics.median(r["seconds"] for r in reports)
        wall = statistics.median(r["wall"] for r in reports)
        same = None if reference is None else (args.out_dir / f"e2e_{variant}.csv").read_bytes() == reference
        summary[variant] = {
            "seconds": round(med, 2), "images_per_second": round(n_images / med, 2),
            "process_wall": round(wall, 2), "rounds": [round(r["seconds"], 2) for r in reports],
            "process_cpu": round(statistics.median(r["cpu"] for r in reports), 2),
            "max_rss_mb": round(max(r["max_rss_mb"] for r in reports), 1), "csv_equals_ens": same,
        }  # fmt: skip
    if reference is not None and "compiled-ov" in variants and not summary["compiled-ov"]["csv_equals_ens"]:
        summary["compiled-ov"]["label_agreement"] = label_agreement(
            args.out_dir / "e2e_ens.csv", args.out_dir / "e2e_compiled-ov.csv", data
        )
    (args.out_dir / f"e2e_proto_n{n_images}.json").write_text(
        json.dumps({"summary": summary, "runs": runs}, indent=2) + "\n"
    )
    base = summary.get("ens")
    print(
        f"{n_images} images, batch {args.batch_size}, {args.rounds} alternating rounds, RLE CSV with cleanup\n"
    )
    print(
        "| variant | img/s (median) | rounds s | process wall s | process CPU s | vs ens | peak RSS MB | CSV == ens |"
    )
    print("|---|---:|---|---:|---:|---:|---:|---|")
    for variant, s in summary.items():
        ratio = f"{base['seconds'] / s['seconds']:.3f}x" if base else ""
        print(
            f"| {variant} | {s['images_per_second']} | {s['rounds']} | {s['process_wall']} | {s['process_cpu']} | {ratio} "
            f"| {s['max_rss_mb']} | {s['csv_equals_ens']} |"
        )


def label_agreement(ref_csv: Path, csv: Path, data: Path) -> dict:
    from ensemble.data import open_data
    from ensemble.submission import read_submission

    shape = open_data(data).image_shape
    _, a, _ = read_submission(ref_csv, shape, 5)
    _, b, _ = read_submission(csv, shape, 5)
    return {"pixels_differing": int((a != b).sum()), "pixels": int(a.size)}


if __name__ == "__main__":
    main()
