"""Each member on its own, on each runtime, in `ens predict`'s worker configuration (a child of
predict_bench.py): the same inputs the pipeline gives it (the TTA views of a worker batch stacked),
K threads calling one session at once, engines interleaved chunk by chunk so a load swing hits all.
OpenVINO also runs at the whole worker batch in one static batch (`openvino-b64`), a setting ens
does not use (its static batch is capped for memory), so that the bound is each member's best.

    .venv/bin/python benchmarks/member_speed.py --data part.npz --json out.json
    .venv/bin/python benchmarks/member_speed.py --data part.npz --prime   # fill the `auto` cache
    .venv/bin/python benchmarks/member_speed.py --data part.npz --pinned-too   # + pinned OpenVINO

Prints/writes {"n_images", "workers", "worker_batch", "seconds": {member: {runtime: s}}}.
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ensemble.data.datasets import open_dataset
from ensemble.data.sources import make_source
from ensemble.inference.options import PredictOptions
from ensemble.inference.pipeline import open_pipeline
from ensemble.members.channels import to_pixels
from ensemble.members.store import resolve_members
from ensemble.runtimes.choice import folded_session
from ensemble.runtimes.folding import folded_model
from ensemble.runtimes.measurements import member_input
from ensemble.runtimes.openvino import MAX_BATCH, OPENVINO_CONFIG, OpenVinoSession, openvino_version


class PinnedOpenVinoSession(OpenVinoSession):
    """OpenVINO with its streams pinned to cores (its default), which ens turns off."""

    config = {**OPENVINO_CONFIG, "ENABLE_CPU_PINNING": True}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--models-dir", type=Path, default=Path("models"))
    parser.add_argument("--members", default="unet,se_unet,keras_unet")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--prime", action="store_true", help="only run `--runtime auto`'s measurement")
    parser.add_argument("--pinned-too", action="store_true", help="also OpenVINO with pinned streams")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    members = resolve_members(args.members, args.models_dir)
    options = PredictOptions(batch_size=args.batch_size, device="cpu", tta="flip")
    source = make_source(open_dataset(args.data), "test")
    if args.prime:
        primed = open_pipeline(members, options, source, runtime="auto", min_images=0)
        print(json.dumps({m.name: c.to_json() for m, c in zip(members, primed.choices, strict=True)}))
        return
    ensemble = open_pipeline(members, options)
    workers, per = ensemble.workers, ensemble.worker_batch
    engines = {(m.name, "ort"): r for m, r in zip(members, ensemble.ort_runners, strict=True)}
    for member, runner in zip(members, ensemble.ort_runners, strict=True):
        folded = folded_model(member.path)
        if folded is not None:
            engines[(member.name, "ort-folded")] = folded_session(member, folded[0], runner)
    if openvino_version():
        views = per * len(ensemble.views)
        for member in members:
            engines[(member.name, "openvino")] = OpenVinoSession(member, views, workers)
            if args.pinned_too:
                engines[(member.name, "openvino-pinned")] = PinnedOpenVinoSession(member, views, workers)
            if views > MAX_BATCH:  # the best standalone setting, beyond what ens allows for memory
                engines[(member.name, f"openvino-b{views}")] = OpenVinoSession(member, views, workers, views)
    batches = [to_pixels(images) for _, images in source.batches(per)]
    chunks = [batches[i : i + workers] for i in range(0, len(batches), workers)]
    inputs = {
        m.name: [[member_input(m, b, ensemble.views) for b in chunk] for chunk in chunks] for m in members
    }
    seconds = {key: 0.0 for key in engines}
    keys = list(engines)
    with ThreadPoolExecutor(workers) as pool:
        for key in keys:  # warm-up: first-run allocations and OpenVINO's compilation
            list(pool.map(engines[key].run, inputs[key[0]][0]))
        for index in range(len(chunks)):
            shift = index % len(keys)
            for key in keys[shift:] + keys[:shift]:
                start = time.perf_counter()
                list(pool.map(engines[key].run, inputs[key[0]][index]))
                seconds[key] += time.perf_counter() - start
    result = {
        "n_images": sum(len(b) for b in batches),
        "workers": workers,
        "worker_batch": per,
        "views": len(ensemble.views),
        "seconds": {
            m.name: {rt: round(s, 3) for (name, rt), s in seconds.items() if name == m.name} for m in members
        },
    }
    text = json.dumps(result, indent=1)
    if args.json:
        args.json.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
