"""What the run-time trust checks cost next to the work they guard (issue 8).

1. `session.run` with the quiet RunOptions every member session now passes (ONNX Runtime's own
   error log kept off the terminal) against no RunOptions, in alternating rounds; and, for scale,
   redirecting the stdout/stderr descriptors around every run instead (what session creation does);
2. the member contract check (`contract_problem`, first batch of each member only) against one
   batch of inference;
3. the damaged-entry scan of a probability cache hit (`read_entry`) against the float32 TTA mean
   that `ens fit` computes from the same entry (`view_mean`).

    .venv/bin/python benchmarks/checks_bench.py --member models/unet.onnx --rounds 7
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ensemble.data.tta import augment, get_views
from ensemble.fitting.cache import read_entry, view_mean
from ensemble.inference.runner import contract_problem
from ensemble.members.channels import to_pixels
from ensemble.members.contract import INPUT_NAME, OUTPUT_NAME
from ensemble.members.member import load_member
from ensemble.members.session import build_session


def seconds(call, repeat: int = 1) -> float:
    start = time.perf_counter()
    for _ in range(repeat):
        call()
    return (time.perf_counter() - start) / repeat


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--member", type=Path, default=Path("models/unet.onnx"))
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--cache-images", type=int, default=2048)
    args = parser.parse_args()

    member = load_member(args.member)
    height, width = (size or free for size, free in zip(member.info.input_hw, (64, 128), strict=True))
    runner = build_session(member, "cpu")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.batch_size, height, width), dtype=np.uint8)
    batch = np.ascontiguousarray(augment(to_pixels(images), get_views("flip")))
    session, feed = runner.session, {INPUT_NAME: batch}

    def plain():
        session.run([OUTPUT_NAME], feed)

    def quiet():
        session.run([OUTPUT_NAME], feed, runner.run_options)

    def captured():
        with quiet():
            session.run([OUTPUT_NAME], feed, runner.run_options)

    plain()  # warm-up
    times: dict[str, list[float]] = {"no RunOptions": [], "quiet RunOptions": [], "fd capture per run": []}
    for round_index in range(args.rounds):
        order = list(zip(times, (plain, quiet, captured), strict=True))
        for name, call in order if round_index % 2 == 0 else order[::-1]:
            times[name].append(seconds(call))
        print(f"round {round_index + 1}/{args.rounds}", file=sys.stderr)
    base = statistics.median(times["no RunOptions"])
    print(
        f"member {member.name}, batch {args.batch_size} x flip = {len(batch)} views of {height}x{width}, CPU"
    )
    print("\n| per batch | median s | vs no RunOptions |\n|---|---:|---:|")
    for name, values in times.items():
        print(f"| {name} | {statistics.median(values):.4f} | {statistics.median(values) / base:.3f}x |")

    out = session.run([OUTPUT_NAME], feed)[0]
    check = seconds(lambda: contract_problem(out), repeat=5)
    print(
        f"\ncontract check on one batch output {out.shape}: {check * 1e3:.1f} ms, {check / base:.1%} of that"
    )
    print("batch's inference, once per member and run (the first batch only)")

    shape = (args.cache_images, member.n_classes, height, width)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "entry.npy"
        array = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=shape)
        for start in range(0, shape[0], 256):
            array[start : start + 256] = rng.dirichlet(
                np.ones(shape[1]), (min(256, shape[0] - start), *shape[2:])
            ).transpose(0, 3, 1, 2)
        array.flush()
        del array
        scan = statistics.median(seconds(lambda: read_entry(path, shape)) for _ in range(3))
        mean = statistics.median(seconds(lambda: view_mean([np.load(path, mmap_mode="r")])) for _ in range(3))
    size_mb = np.prod(shape) * 2 / 1e6
    print(f"\ncache entry {shape} float16 ({size_mb:.0f} MB), warm page cache:")
    print(
        f"read_entry scan {scan:.3f} s, view_mean of the entry {mean:.3f} s (scan = {scan / mean:.0%} of it)"
    )


if __name__ == "__main__":
    main()
