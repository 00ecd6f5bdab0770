"""Prototype: the whole ensemble compiled into one ONNX graph, checked against the pipeline and timed.

Graph: input `pixels` float32 (N, 1, H, W) -> every TTA view of the batch (Slice with step -1 on W
and/or H) -> each member on the views -> views un-flipped and summed -> times a constant (C, 1, 1)
per member, weights x class gains x 1/V (1/V is a power of two for 1, 2 and 4 views, so folding it
into the weights rounds exactly as the pipeline's mean then weight) -> summed over members in the
pipeline's order -> ArgMax over classes 1..C-1 (+1; 0..C-1 with --allow-background; the first
maximum, i.e. ties to the lower class, as `decode`) -> uint8 `labels` (N, H, W), and, optionally,
the fused `scores` (N, C, H, W) the argmax sees.

Two layouts of the views: `concat` (views stacked into one (V*N) batch, each member once, as
`ens predict` does) and `separate` (each member once per view on an N batch; the copies share their
initializers), which gives ORT's parallel executor independent branches.

    .venv/bin/python benchmarks/compile_proto.py build                 # writes benchmarks/results/compiled_*.onnx
    .venv/bin/python benchmarks/compile_proto.py check --n-images 0    # labels vs the pipeline, all test images
    .venv/bin/python benchmarks/compile_proto.py speed --n-images 1536 --rounds 3
"""

# ruff: noqa: E501  (prototype scripts: long table and command lines)
from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper, version_converter

from ensemble.data import open_data
from ensemble.decode import decode
from ensemble.predict import PredictRequest, prepare

INPUT, OUTPUT = "pixels", "probs"
INT64_MIN = -(2**63)
VIEW_AXES = {"identity": (), "hflip": (3,), "vflip": (2,), "hvflip": (2, 3)}


# ------------------------------------------------------------------------------- graph building
def aligned(models: list[onnx.ModelProto]) -> tuple[list[onnx.ModelProto], int, dict[str, int]]:
    """Convert every member to the highest default-domain opset among them; the IR version and
    the other domains' opsets are the highest found."""
    target = max(next(o.version for o in m.opset_import if o.domain in ("", "ai.onnx")) for m in models)
    out = []
    for model in models:
        version = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
        out.append(model if version == target else version_converter.convert_version(model, target))
    domains: dict[str, int] = {}
    for model in out:
        for o in model.opset_import:
            key = "" if o.domain == "ai.onnx" else o.domain
            domains[key] = max(domains.get(key, 0), o.version)
    return out, max(m.ir_version for m in out), domains


def renamed_nodes(graph: onnx.GraphProto, prefix: str, init_prefix: str, inputs: dict[str, str]):
    """Copies of the graph's nodes with every tensor renamed: initializers to `init_prefix`+name,
    the graph inputs as `inputs` maps them, everything else to `prefix`+name."""
    inits = {t.name for t in graph.initializer}

    def name(n: str) -> str:
        if not n:
            return n
        if n in inputs:
            return inputs[n]
        return init_prefix + n if n in inits else prefix + n

    nodes = []
    for node in graph.node:
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
            raise SystemExit(
                f"node {node.name!r} ({node.op_type}) has a subgraph; not handled by the prototype"
            )
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        copy.name = prefix + (node.name or f"{node.op_type}_{len(nodes)}")
        copy.input[:] = [name(n) for n in node.input]
        copy.output[:] = [name(n) for n in node.output]
        nodes.append(copy)
    return nodes, name


def flip(x: str, axes: tuple[int, ...], out: str, nodes: list, inits: list) -> str:
    """Append a Slice that reverses `axes` of `x`."""
    if not axes:
        return x
    key = "_".join(map(str, axes))
    names = [f"flip{key}_{part}" for part in ("starts", "ends", "axes", "steps")]
    if not any(t.name == names[0] for t in inits):
        n = len(axes)
        values = ([-1] * n, [INT64_MIN] * n, list(axes), [-1] * n)
        inits += [
            numpy_helper.from_array(np.array(v, np.int64), nm) for v, nm in zip(values, names, strict=True)
        ]
    nodes.append(helper.make_node("Slice", [x, *names], [out], name=f"slice_{out}"))
    return out


def build_compiled(
    member_paths: list[Path],
    merge_weights: np.ndarray,
    views: tuple[str, ...],
    allow_background: bool = False,
    with_scores: bool = False,
    layout: str = "concat",
) -> onnx.ModelProto:
    """One ONNX model: pixels -> views -> members -> un-flip, weight, sum -> argmax -> uint8 labels."""
    models, ir_version, domains = aligned([onnx.load(str(p)) for p in member_paths])
    n_views, n_classes = len(views), merge_weights.shape[1]
    nodes: list = []
    inits: list = []
    view_inputs = [flip(INPUT, VIEW_AXES[v], f"view{k}", nodes, inits) for k, v in enumerate(views)]
    if layout == "concat" and n_views > 1:
        nodes.append(helper.make_node("Concat", view_inputs, ["views"], axis=0, name="concat_views"))
    fused = None
    for m, model in enumerate(models):
        graph = model.graph
        (member_input,) = [i.name for i in graph.input if i.name not in {t.name for t in graph.initializer}]
        (member_output,) = [o.name for o in graph.output]
        for t in graph.initializer:
            copy = onnx.TensorProto()
            copy.CopyFrom(t)
            copy.name = f"m{m}/" + t.name
            inits.append(copy)
        outs = []
        if layout == "concat" or n_views == 1:
            source = "views" if n_views > 1 else view_inputs[0]
            member_nodes, name = renamed_nodes(graph, f"m{m}/", f"m{m}/", {member_input: source})
            nodes += member_nodes
            probs = name(member_output)
            if n_views > 1:
                parts = [f"m{m}/part{k}" for k in range(n_views)]
                extra = {"num_outputs": n_views} if domains[""] >= 18 else {}
                nodes.append(helper.make_node("Split", [probs], parts, axis=0, name=f"m{m}/split", **extra))
            else:
                parts = [probs]
        else:
            parts = []
            for k in range(n_views):
                member_nodes, name = renamed_nodes(
                    graph, f"m{m}v{k}/", f"m{m}/", {member_input: view_inputs[k]}
                )
                nodes += member_nodes
                parts.append(name(member_output))
        for k, (view, part) in enumerate(zip(views, parts, strict=True)):
            outs.append(flip(part, VIEW_AXES[view], f"m{m}/unflip{k}", nodes, inits))
        total = outs[0]
        for k, part in enumerate(outs[1:], start=1):
            nodes.append(helper.make_node("Add", [total, part], [f"m{m}/sum{k}"], name=f"m{m}/add{k}"))
            total = f"m{m}/sum{k}"
        if n_views not in (1, 2, 4, 8):
            raise SystemExit(f"{n_views} views: 1/V is not a power of two; fold it differently")
        weight = merge_weights[m].astype(np.float32) * np.float32(1.0 / n_views)  # exact: a power of two
        inits.append(numpy_helper.from_array(weight.reshape(n_classes, 1, 1), f"w{m}"))
        nodes.append(helper.make_node("Mul", [total, f"w{m}"], [f"weighted{m}"], name=f"weight{m}"))
        if fused is None:
            fused = f"weighted{m}"
        else:
            nodes.append(helper.make_node("Add", [fused, f"weighted{m}"], [f"fused{m}"], name=f"fuse{m}"))
            fused = f"fused{m}"
    first = 0 if allow_background else 1
    candidates = fused
    if first:
        inits += [
            numpy_helper.from_array(np.array(v, np.int64), n)
            for v, n in (([1], "c_first"), ([n_classes], "c_last"), ([1], "c_axis"))
        ]
        nodes.append(
            helper.make_node(
                "Slice", [fused, "c_first", "c_last", "c_axis"], ["candidates"], name="candidates"
            )
        )
        candidates = "candidates"
    nodes.append(helper.make_node("ArgMax", [candidates], ["best"], axis=1, keepdims=0, select_last_index=0))
    if first:
        inits.append(numpy_helper.from_array(np.array(first, np.int64), "c_offset"))
        nodes.append(helper.make_node("Add", ["best", "c_offset"], ["best_class"], name="offset"))
    nodes.append(
        helper.make_node("Cast", ["best_class" if first else "best"], ["labels"], to=TensorProto.UINT8)
    )
    outputs = [helper.make_tensor_value_info("labels", TensorProto.UINT8, ["N", "H", "W"])]
    if with_scores:
        nodes.append(helper.make_node("Identity", [fused], ["scores"]))
        outputs.append(helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", n_classes, "H", "W"]))
    graph = helper.make_graph(
        nodes,
        "ens_compiled",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["N", 1, "H", "W"])],
        outputs,
        inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid(d, v) for d, v in sorted(domains.items())]
    )
    model.ir_version = ir_version
    onnx.checker.check_model(model, full_check=True)
    return model


# ------------------------------------------------------------------------------- sessions
def ort_runner(path: Path, threads: int, spin: bool = False, parallel_executor: bool = False):
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 2 if parallel_executor else 1
    if parallel_executor:
        options.execution_mode = ort.ExecutionMode.ORT_PARALLEL
    options.log_severity_level = 3
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    outputs = [o.name for o in session.get_outputs()]
    return lambda x: session.run(outputs, {INPUT: x})


def ov_runner(path: Path, batch: int | None, image_hw: tuple[int, int], requests: int = 1):
    """OpenVINO fp32, THROUGHPUT hint; with `batch` the input is reshaped to a static shape."""
    import openvino as ov

    core = ov.Core()
    model = core.read_model(str(path))
    if batch:
        model.reshape({INPUT: (batch, 1, *image_hw)})
    compiled = core.compile_model(
        model, "CPU", {"PERFORMANCE_HINT": "THROUGHPUT", "INFERENCE_PRECISION_HINT": "f32"}
    )
    return ov, compiled


def run_parallel(runs: list, work: list[np.ndarray]) -> list:
    """Batches taken in turn by one Python thread per runner (ORT frees the GIL while it runs)."""
    results: list = [None] * len(work)
    lock, cursor = threading.Lock(), iter(range(len(work)))

    def worker(run) -> None:
        while True:
            with lock:
                index = next(cursor, None)
            if index is None:
                return
            results[index] = run(work[index])

    threads = [threading.Thread(target=worker, args=(r,)) for r in runs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def run_ov(ov, compiled, work: list[np.ndarray], requests: int = 2) -> list:
    results: list = [None] * len(work)
    queue = ov.AsyncInferQueue(compiled, requests)

    def done(request, index) -> None:
        results[index] = [request.get_output_tensor(i).data.copy() for i in range(len(compiled.outputs))]

    queue.set_callback(done)
    for index, x in enumerate(work):
        queue.start_async({0: x}, index)
    queue.wait_all()
    return results


# ------------------------------------------------------------------------------- commands
def load(args: argparse.Namespace):
    """The pipeline's Ensemble as `ens predict` resolves it (models/ensemble.json), and the images."""
    ensemble, source, _, _ = prepare(PredictRequest(data=open_data(args.data), store=args.models_dir))
    images = open_data(args.data).load_test_images()
    if args.n_images:
        images = images[: args.n_images]
    return ensemble, images


def build_all(args: argparse.Namespace, ensemble) -> dict[str, Path]:
    paths = {}
    views = tuple(v.name for v in ensemble.views)
    members = [m.path for m in ensemble.members]
    for layout in ("concat", "separate"):
        for scores in (False, True):
            path = args.out_dir / f"compiled_{layout}{'_scores' if scores else ''}.onnx"
            model = build_compiled(
                members, ensemble.merge_weights, views, ensemble.options.allow_background, scores, layout
            )
            onnx.save(model, str(path))
            paths[(layout, scores)] = path
    return paths


def cmd_build(args: argparse.Namespace) -> None:
    ensemble, _ = load(args)
    for m in ensemble.members:
        model = onnx.load(str(m.path))
        print(
            f"{m.name}: ir {model.ir_version}, opsets {[(o.domain or 'ai.onnx', o.version) for o in model.opset_import]}, "
            f"{len(model.graph.node)} nodes, {sum(t.ByteSize() for t in model.graph.initializer) / 1e6:.2f} MB weights"
        )
    for path in build_all(args, ensemble).values():
        model = onnx.load(str(path))
        print(
            f"{path}: {len(model.graph.node)} nodes, ir {model.ir_version}, {path.stat().st_size / 1e6:.2f} MB"
        )


def cmd_check(args: argparse.Namespace) -> None:
    """Labels (before cleanup) and fused scores of the compiled graph against the pipeline's."""
    ensemble, images = load(args)
    paths = build_all(args, ensemble)
    run = ort_runner(paths[("concat", True)], ensemble.runners[0].report.threads)
    differing = ties = scores_equal = total = 0
    gaps: list[float] = []
    first = 0 if ensemble.options.allow_background else 1
    start = time.perf_counter()
    for s in range(0, len(images), args.batch_size):
        batch = images[s : s + args.batch_size]
        ids = np.arange(s, s + len(batch))
        ref_scores = ensemble.probabilities(ids, batch)
        ref = decode(ref_scores, ensemble.options.allow_background)
        labels, scores = run(batch.astype(np.float32)[:, None])
        scores_equal += int((scores == ref_scores).sum())
        total += ref_scores.size
        diff = labels != ref
        if diff.any():
            b, y, x = np.nonzero(diff)
            cand = ref_scores[b, first:, y, x]
            top2 = np.sort(cand, axis=1)[:, -2:]
            gap = top2[:, 1] - top2[:, 0]
            differing += int(diff.sum())
            ties += int((gap == 0).sum())
            gaps += gap.tolist()
        if s // args.batch_size % 20 == 0:
            print(f"  {s + len(batch)}/{len(images)} images, {differing} differing pixels", file=sys.stderr)
    report = {
        "n_images": len(images),
        "pixels": int(images.size),
        "pixels_differing": differing,
        "exact_ties_among_them": ties,
        "max_pipeline_gap_at_differing": max(gaps) if gaps else None,
        "scores_bitwise_equal_fraction": scores_equal / total,
        "seconds": round(time.perf_counter() - start, 1),
    }
    print(json.dumps(report, indent=2))
    (args.out_dir / "compile_check.json").write_text(json.dumps(report, indent=2) + "\n")


def cmd_speed(args: argparse.Namespace) -> None:
    """Fused labels of the same images: the pipeline against compiled-graph variants, alternating."""
    ensemble, images = load(args)
    paths = build_all(args, ensemble)
    threads = ensemble.runners[0].report.threads
    hw = images.shape[1:]
    work = [images[s : s + args.batch_size] for s in range(0, len(images), args.batch_size)]
    pixels = [w.astype(np.float32)[:, None] for w in work]
    concat, separate = paths[("concat", False)], paths[("separate", False)]
    variants = {}

    def pipeline():
        allow = ensemble.options.allow_background
        return [decode(ensemble.probabilities(np.arange(len(w)), w), allow) for w in work]

    variants["pipeline"] = pipeline
    single = {
        "ort-concat-spin0": ort_runner(concat, threads, spin=False),
        "ort-concat-spin1": ort_runner(concat, threads, spin=True),
        "ort-separate-spin0": ort_runner(separate, threads, spin=False),
        "ort-separate-parexec": ort_runner(separate, 1, parallel_executor=True),
    }
    for name, run in single.items():
        variants[name] = lambda run=run: [run(x)[0] for x in pixels]
    par = [ort_runner(concat, 1), ort_runner(concat, 1)]
    variants["ort-concat-par2"] = lambda: [r[0] for r in run_parallel(par, pixels)]
    par_sep = [ort_runner(separate, 1), ort_runner(separate, 1)]
    variants["ort-separate-par2"] = lambda: [r[0] for r in run_parallel(par_sep, pixels)]
    if not args.no_openvino and len(images) % args.batch_size == 0:
        ov, compiled = ov_runner(concat, args.batch_size, hw)
        variants["ov-concat-tput2-static"] = lambda: [r[0] for r in run_ov(ov, compiled, pixels)]
        ov_s, compiled_s = ov_runner(separate, args.batch_size, hw)
        variants["ov-separate-tput2-static"] = lambda: [r[0] for r in run_ov(ov_s, compiled_s, pixels)]
    names = [n for n in variants if not args.variants or n in args.variants.split(",")]
    seconds: dict[str, list[float]] = {n: [] for n in names}
    reference = None
    for name in names:  # warm-up, and the labels of every variant against the pipeline's
        labels = np.concatenate(variants[name]() if name != "pipeline" else variants[name]())
        if name == "pipeline":
            reference = labels
        else:
            print(
                f"warm-up {name}: {int((labels != reference).sum())} pixels differ from the pipeline",
                file=sys.stderr,
            )
    for round_ in range(args.rounds):
        order = names if round_ % 2 == 0 else names[::-1]
        for name in order:
            start = time.perf_counter()
            variants[name]()
            seconds[name].append(time.perf_counter() - start)
            print(f"round {round_ + 1} {name}: {len(images) / seconds[name][-1]:.1f} img/s", file=sys.stderr)
    base = statistics.median(seconds["pipeline"]) if "pipeline" in seconds else None
    print(
        f"{len(images)} images, batch {args.batch_size}, {args.rounds} alternating rounds, labels only (no cleanup for compiled)"
    )
    print("| variant | img/s (median) | rounds | vs pipeline |\n|---|---:|---|---:|")
    for name in names:
        med = statistics.median(seconds[name])
        ratio = f"{base / med:.3f}x" if base else ""
        print(
            f"| {name} | {len(images) / med:.1f} | {[round(len(images) / s, 1) for s in seconds[name]]} | {ratio} |"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=("build", "check", "speed"))
    parser.add_argument("--data", type=Path, default=Path("data/mars_demo.npz"))
    parser.add_argument("--models-dir", type=Path, default=Path("models"))
    parser.add_argument("--n-images", type=int, default=1536, help="first N test images (0: all)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variants", default="", help="speed: only these (comma-separated)")
    parser.add_argument("--no-openvino", action="store_true")
    parser.add_argument("--out-dir", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    {"build": cmd_build, "check": cmd_check, "speed": cmd_speed}[args.command](args)


if __name__ == "__main__":
    main()
