"""Engines for `ens predict` and the members' standalone bound, interleaved chunk by chunk in ONE process.

On a shared machine whose load swings within seconds, separate runs (even alternating ones) compare
different loads. Here every engine processes the same chunk of 2 batches in turn (the order rotated
each chunk) before anyone moves to the next chunk, so a load swing hits all engines alike; each
engine's seconds are summed over the chunks. Engines that predict write the RLE CSV with cleanup
(models/ensemble.json, as `make demo`) and their CSV is compared with `today`'s byte for byte.

  today           `Ensemble.probabilities` + `labels` + `SubmissionWriter`: today's `ens predict` loop
  pipe-par        two pipelines on 1-thread sessions, one batch each in two Python threads
  pipe-ov-par     pipe-par with the --ov-members on OpenVINO (THROUGHPUT, static 2B batch, a request per thread)
  compiled        the compiled ensemble graph (compile_proto.py), 1 session, T threads, idle threads sleep
  compiled-par    the compiled graph, ONE session x 1 thread, called from two Python threads
  compiled-ov     the compiled graph on OpenVINO fp32, THROUGHPUT hint, static batch, 2 requests
  bound-ort       members only, T-thread sessions (idle threads sleep), each view a run of B raw images
  bound-par       members only, 1-thread sessions, two Python threads (one batch each)
  bound-ov        members only, OpenVINO fp32 THROUGHPUT hint, static batch, 2 requests
The bound engines time each member; the `best` bound sums each member's fastest of the three.
Every ORT session allocates from the shared arena. Cleanup (Numba) and CSV writes stay in the main thread.

    .venv/bin/python benchmarks/interleave_bench.py --n-images 1536
"""

# ruff: noqa: E501  (prototype scripts: long table and command lines)
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from compile_proto import build_compiled
from ensemble.cleanup import remove_small_regions
from ensemble.decode import decode
from ensemble.pipeline import PredictOptions
from ensemble.predict import PredictRequest, prepare

from ensemble.data import open_data
from ensemble.submission import SubmissionWriter

INPUT, OUTPUT = "pixels", "probs"
ENGINES = (
    "today",
    "pipe-par",
    "pipe-ov-par",
    "compiled",
    "compiled-par",
    "compiled-ov",
    "bound-ort",
    "bound-par",
    "bound-ov",
)


def ort_session(path: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.use_env_allocators", "1")  # registered by prepare()
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def ov_compiled(path: Path, shape: tuple[int, ...]):
    import openvino as ov

    core = ov.Core()
    model = core.read_model(str(path))
    model.reshape({INPUT: shape})
    compiled = core.compile_model(
        model, "CPU", {"PERFORMANCE_HINT": "THROUGHPUT", "INFERENCE_PRECISION_HINT": "f32"}
    )
    return ov.AsyncInferQueue(compiled, 2)


def ov_run(infer_queue, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """Run each input on a 2-request queue; outputs in input order."""
    out: list = [None] * len(inputs)

    def done(request, index) -> None:
        out[index] = request.get_output_tensor(0).data.copy()

    infer_queue.set_callback(done)
    for index, x in enumerate(inputs):
        infer_queue.start_async({0: x}, index)
    infer_queue.wait_all()
    return out


def padded(pixels: np.ndarray, batch: int) -> np.ndarray:
    if len(pixels) == batch:
        return pixels
    out = np.zeros((batch, *pixels.shape[1:]), np.float32)
    out[: len(pixels)] = pixels
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=Path("data/mars_demo.npz"))
    parser.add_argument("--models-dir", type=Path, default=Path("models"))
    parser.add_argument("--n-images", type=int, default=1536, help="first N test images (0: all)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--ov-members", default="unet,se_unet", help="pipe-ov-par: members on OpenVINO")
    parser.add_argument("--out-dir", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    names = args.engines.split(",")
    request = PredictRequest(data=open_data(args.data), store=args.models_dir)
    today, _, _, _ = prepare(request)
    members, n_classes, batch = today.members, today.n_classes, args.batch_size
    allow, min_area, connectivity = today.options.allow_background, today.min_area, today.options.connectivity
    threads = today.runners[0].report.threads
    images = open_data(args.data).load_test_images()
    images = images[: args.n_images] if args.n_images else images
    hw = images.shape[1:]
    batches = [
        (np.arange(s, min(s + batch, len(images))), images[s : s + batch])
        for s in range(0, len(images), batch)
    ]
    chunks = [batches[i : i + 2] for i in range(0, len(batches), 2)]
    args.out_dir.mkdir(parents=True, exist_ok=True)
    compiled_path = args.out_dir / "interleave_compiled.onnx"
    views = tuple(v.name for v in today.views)
    onnx.save(
        build_compiled([m.path for m in members], today.merge_weights, views, allow), str(compiled_path)
    )
    pool = ThreadPoolExecutor(max_workers=2)
    tmp = Path(tempfile.mkdtemp())
    writers = {
        n: SubmissionWriter(tmp / f"{n}.csv", "rle", hw, n_classes).__enter__()
        for n in names
        if not n.startswith("bound")
    }
    member_seconds: dict[str, dict[str, float]] = {
        n: {m.name: 0.0 for m in members} for n in names if n.startswith("bound")
    }

    def finish(name: str, ids: np.ndarray, labels: np.ndarray) -> None:
        if min_area.any():
            remove_small_regions(labels, min_area, n_classes, connectivity, out=labels)
        writers[name].write(ids, labels)

    engines: dict = {}
    if "today" in names:

        def run_today(chunk):
            for ids, imgs in chunk:
                writers["today"].write(ids, today.labels(today.probabilities(ids, imgs)))

        engines["today"] = run_today
    if "pipe-par" in names:
        single = PredictRequest(data=request.data, store=args.models_dir, options=PredictOptions(threads=1))
        pipes = [prepare(single)[0], prepare(single)[0]]

        def run_pipe_par(chunk):
            futures = [
                pool.submit(lambda p, b: decode(p.probabilities(*b), allow), pipes[i], b)
                for i, b in enumerate(chunk)
            ]
            for (ids, _), future in zip(chunk, futures, strict=True):
                finish("pipe-par", ids, future.result())

        engines["pipe-par"] = run_pipe_par
    if "pipe-ov-par" in names:
        # pipe-par with the members listed in --ov-members on OpenVINO: one THROUGHPUT-compiled model
        # per member (2 streams, static 2B batch), one infer request per worker
        single = PredictRequest(data=request.data, store=args.models_dir, options=PredictOptions(threads=1))
        ov_pipes = [prepare(single)[0], prepare(single)[0]]
        for member in members:
            if member.name not in args.ov_members.split(","):
                continue
            import openvino as ov

            core = ov.Core()
            model = core.read_model(str(member.path))
            model.reshape({INPUT: (len(today.views) * batch, 1, *hw)})
            config = {"PERFORMANCE_HINT": "THROUGHPUT", "INFERENCE_PRECISION_HINT": "f32"}
            compiled_member = core.compile_model(model, "CPU", config)
            for pipe in ov_pipes:
                runner = next(r for r in pipe.runners if r.member.name == member.name)
                request_ = compiled_member.create_infer_request()
                runner.run = lambda x, r=request_: r.infer({0: x})[0].copy()

        def run_pipe_ov_par(chunk):
            futures = [
                pool.submit(lambda p, b: decode(p.probabilities(*b), allow), ov_pipes[i], b)
                for i, b in enumerate(chunk)
            ]
            for (ids, _), future in zip(chunk, futures, strict=True):
                finish("pipe-ov-par", ids, future.result())

        engines["pipe-ov-par"] = run_pipe_ov_par
    if "compiled" in names:
        compiled = ort_session(compiled_path, threads)

        def run_compiled(chunk):
            for ids, imgs in chunk:
                finish(
                    "compiled", ids, compiled.run(["labels"], {INPUT: imgs.astype(np.float32)[:, None]})[0]
                )

        engines["compiled"] = run_compiled
    if "compiled-par" in names:
        compiled1 = ort_session(compiled_path, 1)

        def run_compiled_par(chunk):
            futures = [
                pool.submit(
                    lambda x: compiled1.run(["labels"], {INPUT: x})[0], imgs.astype(np.float32)[:, None]
                )
                for _, imgs in chunk
            ]
            for (ids, _), future in zip(chunk, futures, strict=True):
                finish("compiled-par", ids, future.result())

        engines["compiled-par"] = run_compiled_par
    if "compiled-ov" in names:
        ov_queue = ov_compiled(compiled_path, (batch, 1, *hw))

        def run_compiled_ov(chunk):
            outs = ov_run(ov_queue, [padded(imgs.astype(np.float32)[:, None], batch) for _, imgs in chunk])
            for (ids, _), labels in zip(chunk, outs, strict=True):
                finish("compiled-ov", ids, labels[: len(ids)])

        engines["compiled-ov"] = run_compiled_ov

    def view_inputs(imgs):
        x = imgs.astype(np.float32)[:, None]
        return [x, np.ascontiguousarray(x[..., ::-1])]

    if "bound-ort" in names:
        sessions = {m.name: ort_session(m.path, threads) for m in members}

        def run_bound_ort(chunk):
            for _, imgs in chunk:
                for name, session in sessions.items():
                    t0 = time.perf_counter()
                    for x in view_inputs(imgs):
                        session.run([OUTPUT], {INPUT: x})
                    member_seconds["bound-ort"][name] += time.perf_counter() - t0

        engines["bound-ort"] = run_bound_ort
    if "bound-par" in names:
        sessions1 = {m.name: ort_session(m.path, 1) for m in members}

        def run_bound_par(chunk):
            for name, session in sessions1.items():
                t0 = time.perf_counter()
                futures = [
                    pool.submit(
                        lambda xs, s=session: [s.run([OUTPUT], {INPUT: x}) for x in xs], view_inputs(imgs)
                    )
                    for _, imgs in chunk
                ]
                for future in futures:
                    future.result()
                member_seconds["bound-par"][name] += time.perf_counter() - t0

        engines["bound-par"] = run_bound_par
    if "bound-ov" in names:
        queues = {m.name: ov_compiled(m.path, (batch, 1, *hw)) for m in members}

        def run_bound_ov(chunk):
            inputs = [padded(x, batch) for _, imgs in chunk for x in view_inputs(imgs)]
            for name, q in queues.items():
                t0 = time.perf_counter()
                ov_run(q, inputs)
                member_seconds["bound-ov"][name] += time.perf_counter() - t0

        engines["bound-ov"] = run_bound_ov

    # warm-up on the first batch, outside the clock and the CSVs (arenas, OpenVINO's first inference)
    ids0, imgs0 = batches[0]
    x0 = imgs0.astype(np.float32)[:, None]
    for name in names:
        if name.startswith("bound"):
            engines[name]([batches[0]])
    today.labels(today.probabilities(ids0, imgs0))
    if "pipe-par" in names:
        list(pool.map(lambda p: p.probabilities(ids0, imgs0), pipes))
    if "pipe-ov-par" in names:
        list(pool.map(lambda p: p.probabilities(ids0, imgs0), ov_pipes))
    if "compiled" in names:
        compiled.run(["labels"], {INPUT: x0})
    if "compiled-par" in names:
        list(pool.map(lambda x: compiled1.run(["labels"], {INPUT: x}), [x0, x0]))
    if "compiled-ov" in names:
        ov_run(ov_queue, [padded(x0, batch)] * 2)
    for per in member_seconds.values():
        for key in per:
            per[key] = 0.0
    today.timings.seconds.clear()
    seconds = dict.fromkeys(names, 0.0)
    start = time.perf_counter()
    for index, chunk in enumerate(chunks):
        order = names[index % len(names) :] + names[: index % len(names)]
        for name in order:
            t0 = time.perf_counter()
            engines[name](chunk)
            seconds[name] += time.perf_counter() - t0
        if index % 4 == 3:
            done = sum(len(b[0]) for c in chunks[: index + 1] for b in c)
            rates = {n: round(done / s, 1) for n, s in seconds.items()}
            print(f"{done}/{len(images)} images: img/s {rates}", file=sys.stderr, flush=True)
    total = time.perf_counter() - start
    for writer in writers.values():
        writer.__exit__(None, None, None)
    n = len(images)
    ref = (tmp / "today.csv").read_bytes() if "today" in writers else None
    report: dict = {
        "n_images": n, "batch": batch, "threads": threads, "wall_seconds_all": round(total, 1),
        "engines": {}, "bounds": {}, "today_stages": today.timings.as_dict(),
    }  # fmt: skip
    for name in names:
        entry = {"seconds": round(seconds[name], 2), "images_per_second": round(n / seconds[name], 2)}
        if "today" in seconds:
            entry["speed_vs_today"] = round(seconds["today"] / seconds[name], 3)
        if name in writers and ref is not None:
            data = (tmp / f"{name}.csv").read_bytes()
            entry["csv_equals_today"] = data == ref
            if data != ref:
                from ensemble.submission import read_submission

                _, a, _ = read_submission(tmp / "today.csv", hw, n_classes)
                _, b, _ = read_submission(tmp / f"{name}.csv", hw, n_classes)
                entry["pixels_differing"] = int((a != b).sum())
        if name in member_seconds:
            entry["member_seconds"] = {k: round(v, 2) for k, v in member_seconds[name].items()}
        report["engines"][name] = entry
    for name, per in member_seconds.items():
        report["bounds"][name] = round(n / sum(per.values()), 2)
    if member_seconds:
        best = {m.name: min(per[m.name] for per in member_seconds.values()) for m in members}
        report["bounds"]["best"] = round(n / sum(best.values()), 2)
        report["bounds"]["best_engine_per_member"] = {
            m.name: min(member_seconds, key=lambda e, m=m: member_seconds[e][m.name]) for m in members
        }
        for name in writers:
            report["engines"][name]["fraction_of_best_bound"] = round(
                report["engines"][name]["images_per_second"] / report["bounds"]["best"], 3
            )
    (args.out_dir / "interleave_bench.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"{n} images, batch {batch}, {threads} threads, engines interleaved per chunk of 2 batches "
          f"(whole run {total:.0f} s)\n")  # fmt: skip
    print(
        "| engine | img/s | vs today | of best bound | CSV == today | member s |\n|---|---:|---:|---:|---|---|"
    )
    for name, e in report["engines"].items():
        frac = e.get("fraction_of_best_bound")
        print(f"| {name} | {e['images_per_second']} | {e.get('speed_vs_today', '')} | {'' if frac is None else f'{frac:.1%}'} "
              f"| {e.get('csv_equals_today', '')}{'' if e.get('pixels_differing') is None else ' (' + str(e['pixels_differing']) + ' px differ)'} "
              f"| {e.get('member_seconds', '')} |")  # fmt: skip
    print(f"\nbounds (img/s, 3 members x {len(views)} views): {report['bounds']}")
    print(f"today's stages (s): {report['today_stages']}")


if __name__ == "__main__":
    main()
