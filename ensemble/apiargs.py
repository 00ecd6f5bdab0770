"""The Python API's own arguments (members, paths), checked as the command line checks its options:
a notebook's mistake raises the EnsError the matching `ens` option gives, never a numpy or Python
error from deep inside. The options of a prediction are checked by `ensemble.runs.options`, for the
command line and the API alike.

>>> member_args(("a", "b"))
['a', 'b']
"""

from __future__ import annotations

import os

from ensemble.errors import EnsError
from ensemble.members.member import Member
from ensemble.members.store import NO_MEMBERS
from ensemble.optionvalues import check_path, short_repr


def path_or_none(value, what: str):
    """None, or a path checked like `check_path`."""
    return None if value is None else check_path(value, what)


def member_args(members) -> list[Member | str | os.PathLike] | str | None:
    """None (the whole store), 'a,b' text, one name/path/Member, or a list of them; [] is refused."""
    if members is None or isinstance(members, str):
        return members
    if isinstance(members, Member | os.PathLike):
        return [members]
    if not isinstance(members, list | tuple):
        raise EnsError(
            f"members {short_repr(members)} are not member names, .onnx paths or Members; "
            "give e.g. ['a', 'b'] or 'a,b'"
        )
    if not members:
        raise EnsError(NO_MEMBERS)
    for member in members:
        if not isinstance(member, Member):
            check_path(member, "member")
    return list(members)
