"""A pool of five library nets through `ens export`, `ens fit`, `ens score`: is the fitted ensemble at
least as good as its best member on images the fit never saw, and does the nested CV estimate say so?

1. `ens data demo` (64x128, 2,615 labelled images, `--n-test` test images with masks); the labelled
   images are split as `ens fit` splits them (seed, fraction, outliers dropped): the train part
   trains the nets, the validation part (written to `val_ids.txt`, passed as `--val-ids`) is what
   `ens fit` sees, and the test images with their masks are the held-out part;
2. five nets from library_nets.py (smp Unet and FPN, torchvision LR-ASPP, a SegFormer, a Keras
   attention U-Net), trained briefly on CPU with fixed seeds and saved as their authors save them;
3. `ens export` of each with the lines of the README table, `ens fit --folds 5` on the validation
   split (the nested CV estimate), then on the held-out part: `ens score --truth` for each member
   alone (no TTA, and with the ensemble's TTA) and for the fitted ensemble (every stage), and
   `ens predict` + `ens score CSV` for the ensemble as the user runs it;
4. a table: every member's held-out score, the ensemble's, the nested CV estimate, the in-sample
   score, and the two checks (held-out >= best single member, |CV - held-out| <= 0.005).

The defaults (60% of the labelled images for validation: 1,492 after outliers; 4,000 held-out images;
800 training images per net) keep the draw of images from hiding the check: the course mIoU of one
ensemble moves by 0.0067 (std) between sets of 737 images and by 0.0043 between sets of 1,500, so a
0.005 tolerance needs both sets large. The trained nets depend on the seed and `--val-fraction`
only, not on `--n-test`. Trained sources and exported members in `--work` are reused by a rerun
(delete them to retrain).

    PYTHONPATH=. .venv/bin/python benchmarks/library_pool.py --work /tmp/library_pool
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from jobs import ens_command, log, machine, run_job  # noqa: E402
from library_nets import (  # noqa: E402
    N_CLASSES,
    NETS,
    Training,
    keras_scores,
    save_torch,
    torch_scores,
    train_keras,
    train_torch,
)

from ensemble.data.metrics import confusion_matrix, course_miou  # noqa: E402
from ensemble.data.split import SplitSpec  # noqa: E402
from zoo.batches import load_training_data, validation_miou  # noqa: E402

TOLERANCE = 0.005
STAGES = ("equal", "learned", "learned+gains", "learned+gains+cleanup")  # the fit's stage keys


def prepare_data(work: Path, args) -> tuple[Path, Path, object]:
    """The demo file, the validation ids file and the training data of the split."""
    data = work / "demo.npz"
    if not data.exists():
        run_job(ens_command("data", "demo", "--out", str(data), "--n-test", str(args.n_test),
                            "--seed", str(args.seed)))  # fmt: skip
    spec = SplitSpec(seed=args.split_seed, val_fraction=args.val_fraction)
    training = load_training_data(data, spec, N_CLASSES)
    val_ids = work / "val_ids.txt"
    val_ids.write_text("\n".join(str(i) for i in training.split.val) + "\n")
    log(f"split: {len(training.train_images)} training images, {len(training.val_images)} validation "
        f"images ({training.split.description})")  # fmt: skip
    return data, val_ids, training


def train_all(work: Path, data, args) -> dict[str, float]:
    """Train and save every net not yet saved in work/sources; their validation course mIoU."""
    sources = work / "sources"
    sources.mkdir(parents=True, exist_ok=True)
    import torch

    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    pick = np.sort(rng.permutation(len(data.train_images))[: args.train_images])
    images, masks = data.train_images[pick], data.train_masks[pick]
    val_scores = {}
    for k, net in enumerate(NETS):
        if (sources / net.source).exists():
            log(f"{net.name}: {sources / net.source} exists, reused")
            continue
        training = Training(epochs=args.epochs * net.epochs_factor, seed=args.seed + k)
        start = time.perf_counter()
        if net.name == "keras_attn":
            model = train_keras(images, masks, training, log)
            scores = keras_scores(model)
            model.save(sources / net.source)
        else:
            model = train_torch(net, images, masks, training, log)
            scores = torch_scores(net, model)
            save_torch(net, model, sources)
        val = validation_miou(scores, data.val_images, data.val_masks, N_CLASSES, 64)
        val_scores[net.name] = val
        log(f"{net.name}: trained in {time.perf_counter() - start:.0f} s, validation course mIoU {val:.4f}")
    return val_scores


def export_all(work: Path, data: Path, val_ids: Path, force: bool) -> None:
    models = work / "models"
    for net in NETS:
        if (models / f"{net.name}.onnx").exists():
            continue
        source = work / "sources" / net.source
        options = ["--data", str(data), "--val-ids", str(val_ids), "--out-dir", str(models), "--no-bench"]
        options += ["--force"] if force else []
        run_job(ens_command("export", str(source), "--name", net.name, *net.export_args, *options))


def common(work: Path, data: Path, val_ids: Path) -> list[str]:
    return ["--data", str(data), "--models-dir", str(work / "models"), "--cache-dir", str(work / "cache"),
            "--val-ids", str(val_ids)]  # fmt: skip


def held_out(work: Path, data: Path, val_ids: Path, name: str, *options: str) -> list[dict]:
    """The ablation rows of `ens score --truth` (the test images and their masks)."""
    out = work / "scores" / f"{name}.json"
    out.unlink(missing_ok=True)
    out.parent.mkdir(exist_ok=True)
    run_job(
        ens_command("score", "--truth", str(data), *common(work, data, val_ids), *options, "--json", str(out))
    )
    return json.loads(out.read_text())["rows"]


def trivial_baseline(data: Path) -> float:
    """Course mIoU of predicting the most common labelled class everywhere on the held-out masks."""
    masks = np.load(data)["test_masks"]
    counts = np.bincount(masks[masks > 0].ravel(), minlength=N_CLASSES)
    return course_miou(confusion_matrix(masks, np.full_like(masks, int(counts.argmax())), N_CLASSES))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", type=Path, default=Path("/tmp/library_pool"))
    parser.add_argument("--n-test", type=int, default=4000, help="held-out test images (with masks)")
    parser.add_argument("--val-fraction", type=float, default=0.6)
    parser.add_argument("--split-seed", type=int, default=0)
    parser.add_argument("--train-images", type=int, default=800, help="training images each net sees")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--force", action="store_true", help="export past the quality guard (smoke runs)")
    args = parser.parse_args()
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    log(f"machine: {machine()}")
    data, val_ids, training = prepare_data(work, args)
    val_scores = train_all(work, training, args)
    export_all(work, data, val_ids, args.force)
    ensemble = work / "models" / "ensemble.json"
    ensemble.unlink(missing_ok=True)
    job = run_job(
        ens_command("fit", *common(work, data, val_ids), "--folds", str(args.folds), "--out", str(ensemble))
    )
    log(f"ens fit: {job.seconds:.0f} s wall, {job.cpu_seconds:.0f} s CPU (member probabilities included)")
    fit = json.loads(ensemble.read_text())["fit"]
    members = {}
    for net in NETS:
        rows = held_out(work, data, val_ids, net.name, "--members", net.name, "--tta", "flip")
        members[net.name] = (rows[0]["miou"], rows[-1]["miou"])
    everyone = ",".join(net.name for net in NETS)
    equal = held_out(work, data, val_ids, "equal", "--members", everyone, "--tta", "flip")[-1]["miou"]
    stages = held_out(work, data, val_ids, "ensemble", "--ensemble", str(ensemble))
    csv = work / "ensemble.csv"
    csv.unlink(missing_ok=True)
    csv.with_suffix(".manifest.json").unlink(missing_ok=True)
    run_job(ens_command("predict", "--ensemble", str(ensemble), "--data", str(data), "--models-dir",
                        str(work / "models"), "--out", str(csv)))  # fmt: skip
    csv_json = work / "scores" / "ensemble_csv.json"
    csv_json.unlink(missing_ok=True)
    run_job(ens_command("score", str(csv), "--truth", str(data), "--json", str(csv_json)))
    report(
        args,
        members,
        val_scores,
        equal,
        stages,
        fit,
        json.loads(csv_json.read_text())["miou"],
        trivial_baseline(data),
        heldout_spread(data, csv, (len(training.val_images), args.n_test)),
    )
    log(f"total {time.perf_counter() - started:.0f} s")


def heldout_spread(data: Path, csv: Path, sizes: tuple[int, ...], draws: int = 400) -> dict[int, float]:
    """Standard deviation of the course mIoU of the ensemble's CSV over sets of `size` held-out images
    drawn with replacement: how far a score on that many images moves by the draw of images alone."""
    from ensemble.submission.io import read_submission

    masks = np.load(data)["test_masks"]
    ids, labels, _ = read_submission(csv, masks.shape[1:], N_CLASSES)
    per_image = np.stack([confusion_matrix(masks[i], labels[k], N_CLASSES) for k, i in enumerate(ids)])
    rng = np.random.default_rng(0)
    return {
        size: float(np.std([course_miou(per_image[rng.choice(len(ids), size)].sum(0)) for _ in range(draws)]))
        for size in sizes
    }


def report(args, members, val_scores, equal, stages, fit, csv_score, baseline, spread) -> None:
    """The markdown tables and the two checks."""
    print(f"\n{len(members)} members, held-out: {args.n_test} demo test images with masks; course mIoU")
    print(f"trivial baseline (most common class everywhere): {baseline:.4f}\n")
    print("| member | validation (training script) | held-out, no TTA | held-out, flip TTA |")
    print("|---|---:|---:|---:|")
    for name, (plain, flip) in members.items():
        val = val_scores.get(name)
        print(f"| {name} | {'—' if val is None else f'{val:.4f}'} | {plain:.4f} | {flip:.4f} |")
    best_name, (best_plain, best_flip) = max(members.items(), key=lambda item: item[1][1])
    best = max(best_plain, best_flip)
    by_name = {row["name"]: row["miou"] for row in stages}
    learned = by_name.get("+ TTA flip", by_name.get("learned fusion"))
    scores = (equal, learned, by_name.get("+ class gains", learned), stages[-1]["miou"])
    held = dict(zip(STAGES, scores, strict=True))
    stage_table(fit, held)
    final, cv = stages[-1]["miou"], fit["cv"]["learned+gains+cleanup"]
    print(f"\nfitted ensemble, held-out: {final:.4f} (ens predict + ens score CSV: {csv_score:.4f}); "
          f"members kept: {', '.join(stages[-1]['members'])}")  # fmt: skip
    print(f"- held-out >= best single member ({best_name} {best:.4f}): {final >= best} ({final - best:+.4f})")
    print(f"- |nested CV - held-out| <= {TOLERANCE}: {abs(cv - final) <= TOLERANCE} ({cv - final:+.4f})")
    gain_cv, gain_held = cv - fit["cv"]["equal"], final - equal
    print(f"- gain over equal weights, nested CV {gain_cv:+.4f} vs held-out {gain_held:+.4f} "
          f"(difference {gain_cv - gain_held:+.4f})")  # fmt: skip
    spreads = ", ".join(f"{s:.4f} on {n} images" for n, s in spread.items())
    print(f"- spread of the held-out score by the draw of images alone (bootstrap std): {spreads}")
    print(f"- fit notes: {'; '.join(fit.get('notes', []))}")


def stage_table(fit: dict, held: dict[str, float]) -> None:
    """Each stage's score in-sample, by nested CV and held-out, and its gain over the stage before."""
    print("\n| stage (flip TTA) | in-sample | nested CV | held-out | CV gain | held-out gain |")
    print("|---|---:|---:|---:|---:|---:|")
    previous = None
    for key in STAGES:
        cv = fit["cv"][key]
        gains = (
            ["", ""] if previous is None else [f"{cv - previous[0]:+.4f}", f"{held[key] - previous[1]:+.4f}"]
        )
        cells = [f"{fit['in_sample'][key]:.4f}", f"{cv:.4f}", f"{held[key]:.4f}", *gains]
        print(f"| {key} | {' | '.join(cells)} |")
        previous = (cv, held[key])


if __name__ == "__main__":
    main()
