#!/usr/bin/env bash
# GPU readiness of `ens predict`, in one run of under 5 minutes on a machine with an NVIDIA GPU:
# the pipeline on CUDA (and TensorRT when onnxruntime offers it) on the first N demo test images,
# its labels against the CPU labels of the same images, img/s and device-to-host bytes per image
# (every member output copied to the host, counted); then the compiled ensemble graph when this
# checkout has `ens compile`. Without onnxruntime-gpu, CUDA or a GPU it says so in one line and
# exits 0.
#
#   benchmarks/gpu_check.sh                 # N=1024 images
#   N=2048 PY=.venv/bin/python benchmarks/gpu_check.sh
#   DEVICES=cpu N=64 benchmarks/gpu_check.sh   # rehearse the script's steps on a machine without a GPU
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
N=${N:-1024}
DATA=${DATA:-data/mars_demo.npz}
OUT=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")
trap 'rm -rf "$OUT"' EXIT

DEVICES=${DEVICES:-}
if [ -z "$DEVICES" ] && ! "$PY" -c "import onnxruntime, sys; sys.exit('CUDAExecutionProvider' not in onnxruntime.get_available_providers())" 2>/dev/null; then
    echo "gpu_check: onnxruntime-gpu is not installed (no CUDAExecutionProvider); nothing to check"
    exit 0
fi
if [ -z "$DEVICES" ] && ! "$PY" -c "from ensemble.machine import gpu_present; import sys; sys.exit(not gpu_present())"; then
    echo "gpu_check: no NVIDIA GPU or driver on this machine (/proc/driver/nvidia/gpus, /dev/nvidia0); nothing to check"
    exit 0
fi
[ -f "$DATA" ] || "$PY" -m ensemble data demo --out "$DATA"

"$PY" - "$DATA" "$N" "$OUT" "$DEVICES" <<'EOF'
"""The pipeline on CPU, then on each GPU provider: speed, labels against CPU, device-to-host bytes."""
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from ensemble.data.datafile import open_data
from ensemble.inference.batchpool import ordered_batches
from ensemble.inference.loop import label_batches
from ensemble.inference.options import PredictOptions, resolve_options
from ensemble.inference.pipeline import open_pipeline
from ensemble.members.ensemblefile import resolve_ensemble
from ensemble.members.session import CUDA, TENSORRT

data, n, out = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
images = open_data(data).load_test_images()[:n]
np.savez(out / "slice.npz", training_set=np.zeros((1, 2, *images.shape[1:])), test_set=images)
members, spec, _ = resolve_ensemble(None, Path("models/ensemble.json"), Path("models"))


def labels_on(device: str, runtime: str = "ort") -> tuple[np.ndarray, float, float, str]:
    """Labels, img/s (after one warm-up batch), device-to-host bytes per image, provider used."""
    options = resolve_options(members, spec, PredictOptions(device=device, runtime=runtime))
    ensemble = open_pipeline(members, options)
    used = ensemble.runners[0].report.used[0]
    copied = [0]
    for runner in ensemble.runners:
        run = runner.run

        def counted(pixels, run=run):
            probs = run(pixels)
            copied[0] += probs.nbytes
            return probs

        runner.run = counted
    step = ensemble.worker_batch
    batches = lambda: ((np.arange(i, min(i + step, n)), images[i : i + step]) for i in range(0, n, step))
    next(ordered_batches(ensemble.score, batches(), ensemble.workers, ensemble.timings))  # warm-up: cuDNN algorithm search, TensorRT engines
    copied[0] = 0
    labels = np.empty(images.shape, np.uint8)
    start = time.perf_counter()

    def sink(ids, batch_labels, _probs):
        labels[ids] = batch_labels

    label_batches(ensemble, batches(), sink)
    seconds = time.perf_counter() - start
    return labels, n / seconds, copied[0] / n, used


cpu, cpu_rate, _, _ = labels_on("cpu")
print(f"gpu_check: {n} demo images; CPU (ONNX Runtime) {cpu_rate:.1f} img/s")
devices = sys.argv[4].split() or ["cuda"] + (["tensorrt"] if TENSORRT in ort.get_available_providers() else [])
failed = False
for device in devices:
    labels, rate, d2h, used = labels_on(device)
    if device != "cpu" and used not in (CUDA, TENSORRT):
        print(f"gpu_check: --device {device} fell back to {used} (CUDA libraries missing?); nothing to check")
        sys.exit(0)
    agree = float((labels == cpu).mean())
    same = "labels equal to CPU" if agree == 1 else f"labels differ from CPU on {100 * (1 - agree):.4f}% of pixels"
    failed |= agree < 0.9999
    print(f"gpu_check: pipeline on {used}: {rate:.1f} img/s, {d2h / 1e6:.2f} MB device-to-host per image, {same}")
np.save(out / "cpu_labels.npy", cpu)
sys.exit(1 if failed else 0)
EOF

if "$PY" -m ensemble compile --help >/dev/null 2>&1; then
    # the compiled ensemble graph: `ens predict` takes it when it matches the ensemble file
    "$PY" -m ensemble compile ${COMPILE_ARGS:-} >/dev/null
    for device in ${DEVICES:-cuda $("$PY" -c "import onnxruntime as o; print('tensorrt' if 'TensorrtExecutionProvider' in o.get_available_providers() else '')")}; do
        "$PY" -m ensemble predict --data "$OUT/slice.npz" --tta flip --device "$device" --format flat \
            --ensemble models/ensemble.json --models-dir models --graph compiled --out "$OUT/compiled_$device.csv" >/dev/null
        "$PY" - "$OUT" "$device" <<'EOF'
import json, sys
from pathlib import Path
import numpy as np
from ensemble.submission.io import read_submission

out, device = Path(sys.argv[1]), sys.argv[2]
cpu = np.load(out / "cpu_labels.npy")
manifest = json.loads((out / f"compiled_{device}.manifest.json").read_text())
_, labels, _ = read_submission(out / f"compiled_{device}.csv", cpu.shape[1:], len(manifest["classes"]))
rate = manifest["timings"]["images_per_second"]
engine = manifest["graph"]["name"]
print(f"gpu_check: ens predict --device {device} ({engine}): {rate} img/s, labels equal to CPU on "
      f"{100 * float((labels == cpu).mean()):.4f}% of pixels, {cpu.shape[1] * cpu.shape[2]} bytes of labels per image")
EOF
    done
else
    echo "gpu_check: this checkout has no \`ens compile\`; compiled path not checked"
fi
