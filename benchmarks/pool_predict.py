"""Benchmark `ens predict` with members fitted at weight 0: a pool of six members of which four have
weight 0 everywhere, against the two weighted members alone, on 1,000 test images.

The ensemble file of the pool lists all six (as `ens fit` wrote them before it left such members
out); this checkout drops the four and must write a CSV byte-identical to the two alone, in about
their time. With `--other` (e.g. the main branch, `git archive main | tar -x -C /tmp/main_base`)
that checkout predicts the pool too, running all six. Runs go one after the other, repeated
`--repeats` times in rotated order; the median wall and CPU seconds of each are printed.

    .venv/bin/python benchmarks/pool_predict.py --work /tmp/pool_predict --other /tmp/main_base
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fit_pool import pool_members  # noqa: E402
from jobs import ROOT, demo_file, ens_command, log, machine  # noqa: E402

WEIGHTED = ("keras_unet", "unet")


def ensemble_files(work: Path) -> tuple[Path, Path]:
    """pool.json (six members, four at weight 0) and weighted.json (the two weighted ones alone)."""
    from ensemble.members.ensemblefile import EnsembleSpec, write_spec
    from ensemble.members.store import resolve_members

    members = resolve_members(None, work / "models")
    rng = np.random.default_rng(0)
    rows = {m.name: rng.uniform(0.2, 1.0, 5).round(4) if m.name in WEIGHTED else np.zeros(5) for m in members}

    def spec(chosen) -> EnsembleSpec:
        return EnsembleSpec(
            members=tuple(m.name for m in chosen),
            member_sha256=tuple(m.sha256 for m in chosen),
            weights=tuple(tuple(float(v) for v in rows[m.name]) for m in chosen),
            tta="flip",
            min_area=(0, 8, 8, 16, 4),
            class_gain=(1.0, 1.0, 1.0, 1.0, 2.0),
        )

    pool = write_spec(work / "pool.json", spec(members))
    return pool, write_spec(work / "weighted.json", spec([m for m in members if m.name in WEIGHTED]))


def predict(checkout: Path, work: Path, data: Path, ensemble: Path, out: Path) -> tuple[float, float]:
    """(wall, CPU) seconds of one `ens predict` run from `checkout`."""
    command = ens_command("predict", "--data", str(data), "--models-dir", str(work / "models"),
                          "--ensemble", str(ensemble), "--out", str(out))  # fmt: skip
    log(f"({checkout}) {' '.join(command)}")
    env = dict(os.environ, PYTHONPATH=str(checkout), ENS_CACHE=str(work / "cache"))
    start = time.perf_counter()
    import subprocess

    process = subprocess.Popen(command, cwd=checkout, stdout=sys.stderr, env=env)
    _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"failed: {' '.join(command)}")
    return time.perf_counter() - start, usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", type=Path, default=Path("/tmp/pool_predict"))
    parser.add_argument("--other", type=Path, help="another checkout that predicts the pool too")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    data = demo_file(1000, work)
    pool_members(work / "models")
    pool, weighted = ensemble_files(work)
    log(f"machine: {machine()}")
    runs = {"pool of 6, 4 at weight 0": (ROOT, pool), "the 2 weighted alone": (ROOT, weighted)}
    if args.other is not None:
        runs["pool of 6, other checkout"] = (args.other.resolve(), pool)
    times: dict[str, list[tuple[float, float]]] = {label: [] for label in runs}
    outputs = {label: work / f"out{i}" / "sub.csv" for i, label in enumerate(runs)}
    labels = list(runs)
    for repeat in range(args.repeats):
        for label in labels[repeat % len(labels) :] + labels[: repeat % len(labels)]:
            checkout, ensemble = runs[label]
            times[label].append(predict(checkout, work, data, ensemble, outputs[label]))
    reference = outputs["the 2 weighted alone"].read_bytes()
    print(f"ens predict, 1,000 test images of 64x128, TTA flip, cleanup; median of {args.repeats}")
    for label in labels:
        wall = statistics.median(t[0] for t in times[label])
        cpu = statistics.median(t[1] for t in times[label])
        same = outputs[label].read_bytes() == reference
        print(f"- {label}: {wall:.1f} s wall, {cpu:.1f} s CPU; CSV identical to the 2 alone: {same}")


if __name__ == "__main__":
    main()
