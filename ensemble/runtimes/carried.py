"""Runtime choices carried over instead of made again: a Ray actor runs the members on the runtimes
its driver chose, and a copy of a member that differs only in its metadata keeps the cached times."""

from __future__ import annotations

from pathlib import Path

from ensemble.errors import EnsError
from ensemble.files.cachedir import cache_root
from ensemble.members.member import Member
from ensemble.members.session import CPU
from ensemble.runtimes.choice import OPENVINO, RUNTIME_CACHE, ChoiceInputs, folded_session
from ensemble.runtimes.folding import folded_model
from ensemble.runtimes.kinds import RuntimeChoice, ort_choice
from ensemble.runtimes.measurements import choice_key, read_cache, write_cache
from ensemble.runtimes.openvino import OpenVinoSession
from ensemble.runtimes.runner import Runner


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


def carried_choices(
    ensemble: ChoiceInputs, choices: list[RuntimeChoice]
) -> list[tuple[RuntimeChoice, Runner | None]]:
    """Each member's choice and runner (None: its ONNX Runtime session) for the runtimes `choices`
    name, as `runtime_choices` made them in another process with the same members and options (a
    Ray actor takes the driver's), untimed; on a GPU the members stay on ONNX Runtime."""
    if ensemble.ort_runners and ensemble.ort_runners[0].report.used[0] != CPU:  # a GPU actor
        return [(ort_choice("default", note="members run on a GPU"), None) for _ in choices]
    chosen: list[tuple[RuntimeChoice, Runner | None]] = []
    for index, choice in enumerate(choices):
        member, ort_runner = ensemble.members[index], ensemble.ort_runners[index]
        runner: Runner | None = None
        if choice.runtime == OPENVINO:
            batch = ensemble.worker_batch * len(ensemble.views)
            runner = OpenVinoSession(member, batch, ensemble.workers)
        elif choice.folded:
            folded = folded_model(member.path)
            if folded is None:
                raise EnsError(
                    f"member {member.name!r} has no affine operations to fold here, unlike on the driver"
                )
            runner = folded_session(member, folded[0], ort_runner)
        chosen.append((choice, runner))
    return chosen
