"""Which runtime runs each member: `--runtime ort`, `openvino`, or `auto` (measured once per machine).

`auto` times each member on its candidates in the worker configuration (K threads on the run's
first batch, candidates alternated round by round so load swings hit all): ONNX Runtime on the
member as exported, ONNX Runtime on the member with its affine operations folded into its
convolutions (`folding`, when there are any) and OpenVINO (when installed). It leaves the member
as exported only for a clear margin, and caches the times under the cache dir, keyed by what the
speed depends on (`measurements.key_fields`). Another candidate runs a member only when its output
on the first batch is within `PARITY_TOLERANCE` of ONNX Runtime's; otherwise the member stays on
ONNX Runtime as exported, with a one-line warning (an int8 copy of a member: within
`INT8_PARITY_TOLERANCE`, since int8 kernels of two runtimes round differently).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from ensemble.errors import EnsError
from ensemble.files.cachedir import cache_root
from ensemble.members.channels import to_pixels
from ensemble.members.member import Member
from ensemble.members.session import CPU, ORT_ERRORS, build_session, ort_message
from ensemble.runtimes.folding import folded_model
from ensemble.runtimes.int8 import INT8_PARITY_TOLERANCE
from ensemble.runtimes.kinds import Runtime, RuntimeChoice, ort_choice
from ensemble.runtimes.measurements import (
    cached_seconds,
    choice_key,
    key_fields,
    member_input,
    parity_error,
    read_cache,
    time_runners,
    write_cache,
)
from ensemble.runtimes.openvino import (
    INSTALL_HINT,
    OpenVinoSession,
    core,
    openvino_available,
    openvino_version,
)

if TYPE_CHECKING:
    from ensemble.data.sources import Source
    from ensemble.data.tta import View
    from ensemble.runtimes.runner import Runner

PARITY_TOLERANCE = 1e-4
MARGIN = 1.05  # another candidate must be this much faster than ONNX Runtime to take a member over
MIN_IMAGES = 1024  # below this, timing the runtimes would cost a large share of the run
RUNTIME_CACHE = "runtimes.json"  # under the cache dir
ORT, FOLDED, OPENVINO = "ort", "ort-folded", "openvino"
DESCRIBED = {FOLDED: "ONNX Runtime with its affine operations folded", OPENVINO: "OpenVINO"}


class ChoiceInputs(Protocol):
    """What `runtime_choices` reads of the opened members: the members, the TTA views and worker
    layout they run in, and the ONNX Runtime session of each member (timed and kept as reference)."""

    members: list[Member] | tuple[Member, ...]
    views: tuple[View, ...]
    channels: int
    workers: int
    worker_batch: int
    ort_runners: list[Runner]


def runtime_choices(
    ensemble: ChoiceInputs,
    source: Source,
    runtime: Runtime | str = Runtime.auto,
    *,
    cache: Path | None = None,
    tolerance: float = PARITY_TOLERANCE,
    min_images: int = MIN_IMAGES,
    on_timing: Callable[[str], None] | None = None,
) -> list[tuple[RuntimeChoice, Runner | None]]:
    """Each member's choice for `runtime` (see the module docstring) and the runner to use instead of
    its ONNX Runtime session (None: keep it); nothing is changed in place. `cache` defaults to
    runtimes.json in the cache dir (new measurements are added to it); `on_timing` hears of each
    member timed."""
    runtime = Runtime(runtime)
    cache = cache_root() / RUNTIME_CACHE if cache is None else cache
    fixed = _fixed_choices(ensemble, runtime)
    if fixed is not None:
        return [(choice, None) for choice in fixed]
    if runtime is Runtime.openvino:
        core()  # not installed: one error with the install hint, not a fallback per member
    has_openvino = runtime is Runtime.openvino or openvino_available()
    _, images = next(iter(source.batches(ensemble.worker_batch, ensemble.channels)))
    plan = _Plan(
        ensemble, runtime, cache, tolerance, min_images, on_timing, source.n_images,
        pixels=to_pixels(images, ensemble.channels),
        has_openvino=has_openvino,
        note=None if has_openvino else f"openvino is not installed ({INSTALL_HINT})",
        entries=read_cache(cache) if runtime is Runtime.auto else {},
    )  # fmt: skip
    chosen = [_choose_member(plan, index, member) for index, member in enumerate(ensemble.members)]
    if plan.changed:
        write_cache(cache, plan.entries)
    return chosen


def _fixed_choices(ensemble: ChoiceInputs, runtime: Runtime) -> list[RuntimeChoice] | None:
    """The choices when there is nothing to choose (ONNX Runtime asked for, members on a GPU); None
    when each member is to be looked at."""
    count = len(ensemble.members)
    if runtime is Runtime.ort:
        return [ort_choice("requested") for _ in range(count)]
    used = ensemble.ort_runners[0].report.used[0]
    if used != CPU:
        if runtime is Runtime.openvino:
            raise EnsError(
                f"--runtime openvino runs members on the CPU, but they run on {used}; "
                "add --device cpu, or use --runtime auto"
            )
        return [ort_choice("default", note="members run on a GPU") for _ in range(count)]
    return None


@dataclass
class _Plan:
    """What the choice of every member shares: the run's options, its first batch as pixels, the
    cached measurements (`changed` once one is added)."""

    ensemble: ChoiceInputs
    runtime: Runtime
    cache: Path
    tolerance: float
    min_images: int
    on_timing: Callable[[str], None] | None
    n_images: int
    pixels: np.ndarray
    has_openvino: bool
    note: str | None
    entries: dict
    changed: bool = False


@dataclass
class _Attempt:
    """The candidate being tried for one member, its timed rounds and how it was picked, kept up to
    date so a failure names the candidate that failed."""

    name: str = OPENVINO
    seconds: dict[str, float] | None = None
    how: str = "requested"


def _choose_member(plan: _Plan, index: int, member: Member) -> tuple[RuntimeChoice, Runner | None]:
    """The choice for one member, and the runner to use instead of its ONNX Runtime session (None:
    keep that session)."""
    ensemble = plan.ensemble
    batch = member_input(member, plan.pixels, ensemble.views)
    static = (ensemble.worker_batch * len(ensemble.views), *batch.shape[1:])
    ort_runner = ensemble.ort_runners[index]
    folded = folded_model(member.path) if plan.runtime is Runtime.auto else None
    makers: dict[str, Callable[[], Runner]] = {}
    if folded is not None:
        makers[FOLDED] = lambda m=member, f=folded[0], r=ort_runner: folded_session(m, f, r)
    if plan.has_openvino:
        makers[OPENVINO] = lambda m=member, b=static[0]: OpenVinoSession(m, b, ensemble.workers)
    if not makers:
        return ort_choice("default", note=plan.note or "no other runtime applies"), None
    built: dict[str, Runner] = {}
    attempt = _Attempt()
    try:
        if plan.runtime is Runtime.auto:
            settled = _auto_choice(plan, member, ort_runner, batch, static, makers, built, attempt)
            if settled is not None:
                return settled, None
        runner = built.get(attempt.name) or makers[attempt.name]()
        error = parity_error(ort_runner, runner, batch)
    except (EnsError, *ORT_ERRORS) as exc:
        reason = ort_message(exc, 160)
        warning = (
            f"member {member.name!r} could not run on {DESCRIBED[attempt.name]} ({reason}); "
            "running it on ONNX Runtime"
        )
        return ort_choice(attempt.how, warning=warning, note=plan.note), None
    return _checked_choice(plan, member, attempt, error, runner, folded)


def _auto_choice(
    plan: _Plan,
    member: Member,
    ort_runner: Runner,
    batch: np.ndarray,
    static: tuple[int, ...],
    makers: dict[str, Callable[[], Runner]],
    built: dict[str, Runner],
    attempt: _Attempt,
) -> RuntimeChoice | None:
    """`auto` for one member: its cached times, or its candidates timed now (built into `built`);
    the choice when it stays on ONNX Runtime, else None with the faster candidate in `attempt`."""
    ensemble, candidates = plan.ensemble, [ORT, *makers]
    fields = key_fields(member, static, ensemble.workers, ensemble.views, candidates)
    key = choice_key(fields)
    seconds = cached_seconds(plan.entries.get(key), candidates)
    if seconds is not None:
        attempt.how = "cached"
    elif plan.n_images < plan.min_images:
        too_few = f"{plan.n_images} images are too few to time the runtimes (< {plan.min_images})"
        return ort_choice("default", note=plan.note or too_few, untimed=True)
    else:
        if plan.on_timing:
            plan.on_timing(
                f"timing member {member.name!r} on {', '.join(candidates)} "
                f"(once on this machine; cached in {plan.cache})"
            )
        for name, make in makers.items():  # `attempt.name` names the candidate that fails
            attempt.name = name
            built[name] = make()
        times = time_runners((ort_runner, *built.values()), batch, ensemble.workers)
        seconds = dict(zip(candidates, times, strict=True))
        attempt.how, plan.changed = "measured", True
        plan.entries[key] = {"member": member.name, "seconds": seconds, "key": fields}
    attempt.seconds = seconds
    attempt.name = min(seconds, key=seconds.get)
    if attempt.name == ORT or seconds[ORT] < MARGIN * seconds[attempt.name]:
        return ort_choice(attempt.how, seconds=seconds, note=plan.note)
    return None


def _checked_choice(
    plan: _Plan, member: Member, attempt: _Attempt, error: float, runner: Runner, folded
) -> tuple[RuntimeChoice, Runner | None]:
    """The chosen candidate if its output on the first batch is within the parity tolerance, else
    ONNX Runtime with a warning."""
    tolerance = plan.tolerance
    limit = tolerance if member.info.quantization is None else max(tolerance, INT8_PARITY_TOLERANCE)
    name, seconds, how, note = attempt.name, attempt.seconds, attempt.how, plan.note
    if not error <= limit:
        warning = (
            f"member {member.name!r}: {DESCRIBED[name]} differs from ONNX Runtime by {error:.2g} on the "
            f"first batch (tolerance {limit:g}); running it on ONNX Runtime"
        )
        return ort_choice(how, parity_max_abs_err=error, seconds=seconds, warning=warning, note=note), None
    if name == FOLDED:
        return ort_choice(how, parity_max_abs_err=error, seconds=seconds, note=note, folded=folded[1]), runner
    return RuntimeChoice(OPENVINO, openvino_version() or "", how, error, seconds), runner


def untimed_note(members: list[Member], choices: list[RuntimeChoice], n_images: int) -> str | None:
    """One line for a run whose members `auto` left on ONNX Runtime untimed (too few images, nothing
    cached), naming them and how to time them; None when there are none."""
    names = [m.name for m, c in zip(members, choices, strict=True) if c.untimed]
    if not names:
        return None
    return (
        f"{n_images} images are too few to time the runtimes (< {MIN_IMAGES}) and no choice is cached on "
        f"this machine for {', '.join(map(repr, names))}, so they ran on ONNX Runtime as exported; "
        "`ens members --bench` chooses their runtimes once (`ens export` does for the members it writes)"
    )


def folded_session(member: Member, model: bytes, like: Runner) -> Runner:
    """An ONNX Runtime session of `member`'s folded graph, on the device and threads of `like`."""
    return build_session(member, like.report.device, like.report.threads, model=model)
