"""The member store: a folder of `<name>.onnx` members, looked up by name like a registry."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ensemble.errors import EnsError
from ensemble.members.member import DEFAULT_STORE, Member, load_member
from ensemble.optionvalues import name_list


def list_member_files(store: Path = DEFAULT_STORE) -> dict[str, Path]:
    """Names and paths of the `.onnx` files in the store, sorted by name (none if it is no folder)."""
    if not store.is_dir():
        return {}
    return {path.stem: path for path in sorted(store.glob("*.onnx"))}


def store_files(store: Path = DEFAULT_STORE) -> dict[str, Path]:
    """`list_member_files` of a store that must exist: a missing folder is an error, not an empty store."""
    store = Path(store)
    if not store.is_dir():
        what = "is not a folder" if store.exists() else "does not exist"
        raise EnsError(
            f"member store {str(store)!r} {what}; pass the folder of your .onnx members with "
            "--models-dir, or export one there with `ens export SOURCE --name NAME`"
        )
    return list_member_files(store)


NO_MEMBERS = "no members given; pass --members a,b,c (see `ens members`)"


def get_member(name: str, store: Path = DEFAULT_STORE) -> Member:
    """Load a member by store name, or by path when `name` ends in .onnx."""
    if name.endswith(".onnx"):
        return load_member(Path(name))
    files = store_files(store)
    if name not in files:
        available = ", ".join(files) or "none"
        raise EnsError(
            f"unknown member {name!r} in store {str(store)!r}; available: {available}; "
            "export one with `ens export` or pass a path to an .onnx file"
        )
    return load_member(files[name], name)


def parse_names(text: str) -> list[str]:
    """Split --members 'a,b,c' into names, rejecting empty entries and repeats."""
    return name_list(text, "--members", "a,b,c")


def resolve_members(names: Sequence[str] | str | None, store: Path = DEFAULT_STORE) -> list[Member]:
    """Load the named members (all of the store when None) and check they can be fused."""
    if isinstance(names, str):
        names = parse_names(names)
    if names is None:
        names = list(store_files(store))
        if not names:
            raise EnsError(
                f"the member store {str(store)!r} holds no .onnx members; export some with "
                "`ens export` or pass --models-dir"
            )
    members = [get_member(name, store) for name in names]
    check_distinct(members)
    check_compatible(members)
    return members


def check_distinct(members: Sequence[Member]) -> None:
    """Each member once: no two are the same file (through links), hold the same content or share a name."""
    checks = (
        ("are the same file", lambda m: m.path.resolve()),
        ("have the same content (sha256 {sha}…)", lambda m: m.sha256),
        ("have the same name", lambda m: m.name),
    )
    for same, key in checks:
        seen: dict[object, Member] = {}
        for member in members:
            other = seen.setdefault(key(member), member)
            if other is not member:
                raise EnsError(
                    f"members {other.name!r} ({other.path}) and {member.name!r} ({member.path}) "
                    f"{same.format(sha=member.sha256[:12])}; list each member once (fusing one twice "
                    "would only double its weight)"
                )


def check_compatible(members: Sequence[Member]) -> None:
    """Members must agree on classes, input channels and any fixed input size."""
    first = members[0]
    for other in members[1:]:
        if other.channels != first.channels:
            raise EnsError(
                f"member {other.name!r} takes {other.channels} input channel(s) but {first.name!r} takes "
                f"{first.channels}; fuse only members of one kind (grayscale or RGB), e.g. --members "
                f"{first.name}"
            )
        if other.info.class_names != first.info.class_names:
            raise EnsError(
                f"member {other.name!r} predicts {other.n_classes} classes "
                f"{list(other.info.class_names)} but {first.name!r} predicts {first.n_classes} "
                f"{list(first.info.class_names)}; fuse only members trained on the same classes"
            )
        for axis, label in ((0, "height"), (1, "width")):
            a, b = first.info.input_hw[axis], other.info.input_hw[axis]
            if a is not None and b is not None and a != b:
                raise EnsError(
                    f"member {other.name!r} takes input {label} {b} but {first.name!r} takes {a}; "
                    "members must accept the same image size"
                )
