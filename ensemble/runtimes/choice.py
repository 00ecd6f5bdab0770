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
from dataclasses import asdict, dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import onnxruntime as ort

from ensemble.errors import EnsError
from ensemble.files.cachedir import cache_root
from ensemble.members.channels import to_pixels
from ensemble.members.member import Member
from ensemble.members.session import CPU, ORT_ERRORS, build_session, ort_message
from ensemble.runtimes.folding import folded_model
from ensemble.runtimes.int8 import INT8_PARITY_TOLERANCE
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
from ensemble.runtimes.openvino import INSTALL_HINT, OpenVinoSession, core, openvino_version

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


class Runtime(str, Enum):
    """`--runtime`: `auto` measures once per machine and member, `ort` and `openvino` force one."""

    auto = "auto"
    ort = "ort"
    openvino = "openvino"


@dataclass(frozen=True)
class RuntimeChoice:
    """The runtime of one member and why: `how` is default, requested, measured or cached;
    `seconds` the median timed round of each candidate behind an `auto` choice; `folded` how many
    affine operations were folded into convolutions when ONNX Runtime runs the folded graph;
    `untimed` that `auto` had neither a cached choice nor enough images to time the candidates."""

    runtime: str
    version: str
    how: str
    parity_max_abs_err: float | None = None
    seconds: dict[str, float] | None = None
    note: str | None = None
    warning: str | None = None
    folded: int | None = None
    untimed: bool | None = None  # True: no cached choice and too few images to time the runtimes

    @property
    def kind(self) -> str:
        """What computed the member's output: the runtime, and whether its graph was folded."""
        return f"{self.runtime}+folded" if self.folded else self.runtime

    def to_json(self) -> dict:
        return {key: value for key, value in asdict(self).items() if value is not None}


class Rewired(Protocol):
    """What `choose_runtimes` reads of an ensemble (its members, views, worker layout and the ONNX
    Runtime session of each member) and sets (each member's runner and choice)."""

    engine: str
    members: list[Member]
    views: tuple[View, ...]
    channels: int
    workers: int
    worker_batch: int
    ort_runners: list[Runner]
    runners: list[Runner]
    choices: list[RuntimeChoice]


def ort_choice(how: str, **fields) -> RuntimeChoice:
    return RuntimeChoice("onnxruntime", ort.__version__, how, **fields)


def choose_runtimes(
    ensemble: Rewired,
    source: Source,
    runtime: Runtime | str = Runtime.auto,
    *,
    cache: Path | None = None,
    tolerance: float = PARITY_TOLERANCE,
    min_images: int = MIN_IMAGES,
    on_timing: Callable[[str], None] | None = None,
) -> None:
    """Set each member's runner and choice on `ensemble` for `runtime` (see the module docstring);
    `cache` defaults to runtimes.json in the cache dir; `on_timing` hears of each member timed."""
    runtime = Runtime(runtime)
    cache = cache_root() / RUNTIME_CACHE if cache is None else cache
    count = len(ensemble.members)
    if runtime is Runtime.ort:
        ensemble.choices = [ort_choice("requested") for _ in range(count)]
        return
    if ensemble.engine != "pipeline":
        ensemble.choices = [ort_choice("default", note="the compiled graph runs on ONNX Runtime")] * count
        return
    used = ensemble.ort_runners[0].report.used[0]
    if used != CPU:
        if runtime is Runtime.openvino:
            raise EnsError(
                f"--runtime openvino runs members on the CPU, but they run on {used}; "
                "add --device cpu, or use --runtime auto"
            )
        ensemble.choices = [ort_choice("default", note="members run on a GPU") for _ in range(count)]
        return
    if runtime is Runtime.openvino:
        core()  # not installed: one error with the install hint, not a fallback per member
    has_openvino = runtime is Runtime.openvino or openvino_available()
    note = None if has_openvino else f"openvino is not installed ({INSTALL_HINT})"
    _, images = next(iter(source.batches(ensemble.worker_batch, ensemble.channels)))
    pixels = to_pixels(images, ensemble.channels)
    entries = read_cache(cache) if runtime is Runtime.auto else {}
    changed = False
    for index, member in enumerate(ensemble.members):
        batch = member_input(member, pixels, ensemble.views)
        static = (ensemble.worker_batch * len(ensemble.views), *batch.shape[1:])
        ort_runner = ensemble.ort_runners[index]
        folded = folded_model(member.path) if runtime is Runtime.auto else None
        makers: dict[str, Callable[[], Runner]] = {}
        if folded is not None:
            makers[FOLDED] = lambda m=member, f=folded[0], r=ort_runner: folded_session(m, f, r)
        if has_openvino:
            makers[OPENVINO] = lambda m=member, b=static[0]: OpenVinoSession(m, b, ensemble.workers)
        if not makers:
            ensemble.choices[index] = ort_choice("default", note=note or "no other runtime applies")
            continue
        candidates = [ORT, *makers]
        built: dict[str, Runner] = {}
        name, seconds, how = OPENVINO, None, "requested"
        try:
            if runtime is Runtime.auto:
                fields = key_fields(member, static, ensemble.workers, ensemble.views, candidates)
                key = choice_key(fields)
                seconds = cached_seconds(entries.get(key), candidates)
                if seconds is not None:
                    how = "cached"
                elif source.n_images < min_images:
                    too_few = f"{source.n_images} images are too few to time the runtimes (< {min_images})"
                    ensemble.choices[index] = ort_choice("default", note=note or too_few, untimed=True)
                    continue
                else:
                    if on_timing:
                        on_timing(
                            f"timing member {member.name!r} on {', '.join(candidates)} "
                            f"(once on this machine; cached in {cache})"
                        )
                    for name, make in makers.items():  # `name` names the candidate that fails
                        built[name] = make()
                    times = time_runners((ort_runner, *built.values()), batch, ensemble.workers)
                    seconds = dict(zip(candidates, times, strict=True))
                    how, changed = "measured", True
                    entries[key] = {"member": member.name, "seconds": seconds, "key": fields}
                name = min(seconds, key=seconds.get)
                if name == ORT or seconds[ORT] < MARGIN * seconds[name]:
                    ensemble.choices[index] = ort_choice(how, seconds=seconds, note=note)
                    continue
            runner = built.get(name) or makers[name]()
            error = parity_error(ort_runner, runner, batch)
        except (EnsError, *ORT_ERRORS) as exc:
            reason = ort_message(exc, 160)
            warning = (
                f"member {member.name!r} could not run on {DESCRIBED[name]} ({reason}); "
                "running it on ONNX Runtime"
            )
            ensemble.choices[index] = ort_choice(how, warning=warning, note=note)
            continue
        limit = tolerance if member.info.quantization is None else max(tolerance, INT8_PARITY_TOLERANCE)
        if not error <= limit:
            warning = (
                f"member {member.name!r}: {DESCRIBED[name]} differs from ONNX Runtime by {error:.2g} on the "
                f"first batch (tolerance {limit:g}); running it on ONNX Runtime"
            )
            ensemble.choices[index] = ort_choice(
                how, parity_max_abs_err=error, seconds=seconds, warning=warning, note=note
            )
            continue
        ensemble.runners[index] = runner
        if name == FOLDED:
            ensemble.choices[index] = ort_choice(
                how, parity_max_abs_err=error, seconds=seconds, note=note, folded=folded[1]
            )
        else:
            ensemble.choices[index] = RuntimeChoice(OPENVINO, openvino_version() or "", how, error, seconds)
    if changed:
        write_cache(cache, entries)


def untimed_note(ensemble: Rewired, n_images: int) -> str | None:
    """One line for a run whose members `auto` left on ONNX Runtime untimed (too few images, nothing
    cached), naming them and how to time them; None when there are none."""
    names = [m.name for m, c in zip(ensemble.members, ensemble.choices, strict=True) if c.untimed]
    if not names:
        return None
    return (
        f"{n_images} images are too few to time the runtimes (< {MIN_IMAGES}) and no choice is cached on "
        f"this machine for {', '.join(map(repr, names))}, so they ran on ONNX Runtime as exported; "
        "`ens members --bench` chooses their runtimes once (`ens export` does for the members it writes)"
    )


def carry_choice(old: Member, new: Member, cache: Path | None = None) -> None:
    """Give `new`, a copy of `old` that differs only in its metadata, `old`'s cached measurements
    (they are keyed by the file's hash; metadata does not change the speed)."""
    cache = cache_root() / RUNTIME_CACHE if cache is None else cache
    entries = read_cache(cache)
    added = {}
    for entry in entries.values():
        fields = entry.get("key") if isinstance(entry, dict) else None
        if isinstance(fields, dict) and fields.get("member_sha256") == old.sha256:
            fields = {**fields, "member_sha256": new.sha256}
            added[choice_key(fields)] = {**entry, "member": new.name, "key": fields}
    if added:
        write_cache(cache, {**entries, **added})


def apply_choices(ensemble: Rewired, choices: list[RuntimeChoice]) -> None:
    """Run each member of `ensemble` on the runtime `choices` name, as made by `choose_runtimes` in
    another process with the same members and options (a Ray actor takes the driver's), untimed."""
    if ensemble.ort_runners and ensemble.ort_runners[0].report.used[0] != CPU:  # a GPU actor
        ensemble.choices = [ort_choice("default", note="members run on a GPU") for _ in choices]
        return
    for index, choice in enumerate(choices):
        member, ort_runner = ensemble.members[index], ensemble.ort_runners[index]
        if choice.runtime == OPENVINO:
            batch = ensemble.worker_batch * len(ensemble.views)
            ensemble.runners[index] = OpenVinoSession(member, batch, ensemble.workers)
        elif choice.folded:
            folded = folded_model(member.path)
            if folded is None:
                raise EnsError(
                    f"member {member.name!r} has no affine operations to fold here, unlike on the driver"
                )
            ensemble.runners[index] = folded_session(member, folded[0], ort_runner)
    ensemble.choices = list(choices)


def folded_session(member: Member, model: bytes, like: Runner) -> Runner:
    """An ONNX Runtime session of `member`'s folded graph, on the device and threads of `like`."""
    return build_session(member, like.report.device, like.report.threads, model=model)


def openvino_available() -> bool:
    """True when openvino imports (its first import takes about a second, so only `auto` asks)."""
    try:
        core()
    except EnsError:
        return False
    return True
