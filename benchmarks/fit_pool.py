"""Benchmark `ens fit` on a pool of six members: one checkout against another, in the same run.

Six members: the three demo members of models/ and a copy of each with its weights perturbed
(other files, other predictions). The validation split is 20% of the demo's 2,615 labelled images
with outliers kept: 523 images. The probability cache is filled first (by this checkout, at
`--folds 0`), so each timed `ens fit` is the fit itself; the timed runs of the checkouts run at the
same time, so a change in the load from other processes hits both alike. Prints wall and CPU
seconds per checkout, their ratios, and the machine's 1-minute load average during the run (mean
and max of a sample every 5 s): on a shared machine wall times depend on it.

    .venv/bin/python benchmarks/fit_pool.py --work /tmp/fit_pool --other /tmp/main_base
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from jobs import ROOT, ens_command, log, machine, run_job  # noqa: E402

MEMBERS = ("keras_unet", "se_unet", "unet")


def pool_members(models: Path, seed: int = 1) -> Path:
    """The demo members and a perturbed copy of each (`<name>_b.onnx`) in `models`."""
    import onnx
    from onnx import numpy_helper

    models.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name in MEMBERS:
        shutil.copyfile(ROOT / "models" / f"{name}.onnx", models / f"{name}.onnx")
        model = onnx.load(str(models / f"{name}.onnx"))
        for init in model.graph.initializer:
            array = numpy_helper.to_array(init)
            if array.dtype == np.float32 and array.size > 16:
                noisy = array + rng.normal(0, 0.15 * (array.std() + 1e-8), array.shape).astype(np.float32)
                init.CopyFrom(numpy_helper.from_array(noisy, init.name))
        onnx.save(model, str(models / f"{name}_b.onnx"))
    return models


def fit_args(work: Path, folds: int, out: Path) -> list[str]:
    return [
        "fit", "--data", str(work / "demo.npz"), "--models-dir", str(work / "models"),
        "--cache-dir", str(work / "cache"), "--keep-outliers", "--folds", str(folds), "--out", str(out),
    ]  # fmt: skip


def run_together(commands: dict[str, tuple[list[str], Path]]) -> dict[str, tuple[float, float]]:
    """Start every command at once, each in its checkout (`python -m` imports from there); (wall,
    CPU) seconds of each, from its own rusage."""
    started, processes = time.perf_counter(), {}
    for label, (command, checkout) in commands.items():
        log(f"{label} ({checkout}): {' '.join(command)}")
        env = dict(os.environ, PYTHONPATH=str(checkout))
        processes[label] = subprocess.Popen(command, cwd=checkout, stdout=sys.stderr, env=env)
    results, pending = {}, {p.pid: label for label, p in processes.items()}
    while pending:
        pid, status, usage = os.wait4(-1, 0)
        if pid in pending:
            label = pending.pop(pid)
            if os.waitstatus_to_exitcode(status):
                raise SystemExit(f"{label} failed")
            results[label] = (time.perf_counter() - started, usage.ru_utime + usage.ru_stime)
            log(f"{label}: {results[label][0]:.1f} s wall, {results[label][1]:.1f} s CPU")
    return results


class LoadSampler:
    """The 1-minute load average every `every` seconds, on a thread, until stopped."""

    def __init__(self, every: float = 5.0) -> None:
        self.samples: list[float] = [os.getloadavg()[0]]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(every,), daemon=True)
        self.thread.start()

    def _run(self, every: float) -> None:
        while not self.stop.wait(every):
            self.samples.append(os.getloadavg()[0])

    def summary(self) -> str:
        self.stop.set()
        self.thread.join()
        mean = sum(self.samples) / len(self.samples)
        return f"load average (1 min) during the run: mean {mean:.1f}, max {max(self.samples):.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", type=Path, default=Path("/tmp/fit_pool"))
    parser.add_argument("--other", type=Path, help="another checkout to time beside this one (e.g. main)")
    parser.add_argument("--folds", type=int, default=5)
    args = parser.parse_args()
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    if not (work / "demo.npz").exists():
        run_job(ens_command("data", "demo", "--out", str(work / "demo.npz")))
    pool_members(work / "models")
    log(f"machine: {machine()}")
    run_job(ens_command(*fit_args(work, 0, work / "warm.json")))  # fills the probability cache
    commands = {"this checkout": (ens_command(*fit_args(work, args.folds, work / "this.json")), ROOT)}
    if args.other is not None:
        other = ens_command(*fit_args(work, args.folds, work / "other.json"))
        commands["other checkout"] = (other, args.other.resolve())
    load = LoadSampler()
    results = run_together(commands)
    print(f"ens fit, 6 members, 523 validation images, --folds {args.folds}, cache warm")
    print(f"- {load.summary()}")
    for label, (wall, cpu) in results.items():
        print(f"- {label}: {wall:.1f} s wall, {cpu:.1f} s CPU")
    if "other checkout" in results:
        (wall, cpu), (other_wall, other_cpu) = results["this checkout"], results["other checkout"]
        print(f"- other / this: {other_wall / wall:.1f}x wall, {other_cpu / cpu:.1f}x CPU")


if __name__ == "__main__":
    main()
