"""Where the time between standalone ONNX Runtime and `ens predict` goes.

Each variant runs in its own child process, the variants alternate round after round:
  pipeline         today's `pipeline.run` as `ens predict` calls it (models/ensemble.json: weights,
                   gains, flip TTA, cleanup; RLE CSV), each member's `session.run` timed on its own
  members-today    only the three members' `session.run` on the same pre-built flip batches (2B
                   views per run), on the sessions `ens predict` builds (spin off, shared arena)
  members-spin     the same with idle ORT threads spinning (shared arena kept)
  members-own      spin off, one arena per session
  members-default  ORT's defaults: spinning, one arena per session
  members-default-2x  ORT's defaults, the two views as two runs of B images
  members-default-raw ORT's defaults, each member on the B raw images only (the standalone
                   benchmark's unit; twice this time is the bound's share)

    .venv/bin/python benchmarks/gap_bench.py --n-images 1536 --rounds 3
"""

# ruff: noqa: E501  (prototype scripts: long table and command lines)
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from jobs import ROOT, log, read_test_images, run_job, slice_file

VARIANTS = (
    "pipeline", "members-today", "members-spin", "members-own", "members-default",
    "members-default-2x", "members-default-raw",
)  # fmt: skip


def child(args: argparse.Namespace) -> None:
    import onnxruntime as ort
    from ensemble.pipeline import run
    from ensemble.predict import PredictRequest, prepare

    from ensemble.data import open_data

    ensemble, source, _, _ = prepare(PredictRequest(data=open_data(args.data), store=args.models_dir))
    report: dict = {"variant": args.variant}
    if args.variant == "pipeline":
        per_member = {r.member.name: 0.0 for r in ensemble.runners}
        for runner in ensemble.runners:
            original = runner.run

            def timed(pixels, original=original, name=runner.member.name):
                start = time.perf_counter()
                out = original(pixels)
                per_member[name] += time.perf_counter() - start
                return out

            runner.run = timed
        warm = next(source.batches(args.batch_size))
        ensemble.labels(ensemble.probabilities(*warm))
        ensemble.timings.seconds.clear()
        for name in per_member:
            per_member[name] = 0.0
        with tempfile.TemporaryDirectory() as tmp:
            result = run(ensemble, source, Path(tmp) / "out.csv", "rle")
        report.update(seconds=result.seconds, stages=result.timings, per_member=per_member)
    else:
        images = open_data(args.data).load_test_images()
        pixels = [
            images[s : s + args.batch_size].astype(np.float32)[:, None]
            for s in range(0, len(images), args.batch_size)
        ]
        views2 = [np.ascontiguousarray(np.concatenate([p, p[..., ::-1]])) for p in pixels]
        flipped = [np.ascontiguousarray(p[..., ::-1]) for p in pixels]
        if args.variant == "members-today":
            runs = {r.member.name: r.run for r in ensemble.runners}
        else:
            spin = args.variant != "members-own"
            shared = args.variant in ("members-spin",)
            runs = {}
            for member in ensemble.members:
                options = ort.SessionOptions()
                options.intra_op_num_threads = ensemble.runners[0].report.threads
                options.inter_op_num_threads = 1
                options.log_severity_level = 3
                if not spin:
                    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
                if shared:
                    options.add_session_config_entry(
                        "session.use_env_allocators", "1"
                    )  # registered by prepare()
                session = ort.InferenceSession(str(member.path), options, providers=["CPUExecutionProvider"])
                runs[member.name] = lambda x, s=session: s.run(["probs"], {"pixels": x})[0]
        per_member = dict.fromkeys(runs, 0.0)
        for run_ in runs.values():
            run_(views2[0])
        start = time.perf_counter()
        for index in range(len(pixels)):
            for name, run_ in runs.items():
                t0 = time.perf_counter()
                if args.variant == "members-default-2x":
                    run_(pixels[index])
                    run_(flipped[index])
                elif args.variant == "members-default-raw":
                    run_(pixels[index])
                else:
                    run_(views2[index])
                per_member[name] += time.perf_counter() - t0
        report.update(seconds=time.perf_counter() - start, per_member=per_member)
    args.result.write_text(json.dumps(report))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=Path("data/mars_demo.npz"))
    parser.add_argument("--models-dir", type=Path, default=Path("models"))
    parser.add_argument("--n-images", type=int, default=1536)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--out-dir", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args)
        return
    import os

    os.chdir(ROOT)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    data = slice_file(
        args.data, read_test_images(args.data)[: args.n_images], args.out_dir / "gap_subset.npz"
    )
    variants = args.variants.split(",")
    result = args.out_dir / "gap_child.json"
    runs: dict[str, list[dict]] = {v: [] for v in variants}
    for round_ in range(args.rounds):
        order = variants[round_ % len(variants) :] + variants[: round_ % len(variants)]
        for variant in order if round_ % 2 == 0 else order[::-1]:
            command = [sys.executable, __file__, "--child", "--variant", variant, "--data", str(data),
                       "--models-dir", str(args.models_dir), "--batch-size", str(args.batch_size), "--result", str(result)]  # fmt: skip
            job = run_job(command)
            report = json.loads(result.read_text())
            report["max_rss_mb"] = round(job.max_rss_mb, 1)
            runs[variant].append(report)
            log(f"round {round_ + 1} {variant}: {args.n_images / report['seconds']:.1f} img/s "
                f"{ {k: round(v, 2) for k, v in report['per_member'].items()} }")  # fmt: skip
    summary = {}
    for variant, reports in runs.items():
        med = statistics.median(r["seconds"] for r in reports)
        summary[variant] = {
            "seconds_median": round(med, 2),
            "images_per_second": round(args.n_images / med, 2),
            "per_member_median": {
                k: round(statistics.median(r["per_member"][k] for r in reports), 2)
                for k in reports[0]["per_member"]
            },
            "rounds": [round(r["seconds"], 2) for r in reports],
            "max_rss_mb": max(r["max_rss_mb"] for r in reports),
        }
        if variant == "pipeline":
            stages = reports[0]["stages"].keys()
            summary[variant]["stages_median"] = {
                s: round(statistics.median(r["stages"].get(s, 0) for r in reports), 3) for s in stages
            }
    (args.out_dir / "gap_bench.json").write_text(
        json.dumps({"n_images": args.n_images, "summary": summary, "runs": runs}, indent=2) + "\n"
    )
    print(
        f"{args.n_images} images, batch {args.batch_size}, {args.rounds} alternating rounds (median seconds)\n"
    )
    print("| variant | s | img/s | per member s | peak RSS MB |\n|---|---:|---:|---|---:|")
    for variant, s in summary.items():
        print(
            f"| {variant} | {s['seconds_median']} | {s['images_per_second']} | {s['per_member_median']} | {s['max_rss_mb']} |"
        )
    if "pipeline" in summary:
        print(f"\npipeline stages (median s): {summary['pipeline']['stages_median']}")


if __name__ == "__main__":
    main()
