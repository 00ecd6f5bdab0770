"""A PyTorch state_dict loaded into the network `--factory` builds: where a checkpoint keeps it, and
a one-line report of the keys that do not fit (with the prefix a wrapper added taken off)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ensemble.errors import EnsError
from exporters.factory import build_network
from exporters.request import ExportRequest

STATE_DICT_KEYS = ("state_dict", "model_state_dict")


def with_factory(state_dict: dict, where: str, path: Path, request: ExportRequest) -> tuple:
    """The network --factory builds, with the state_dict's weights loaded into it, and its kind."""
    if not request.factory:
        raise EnsError(
            f"{str(path)!r} is a state_dict of {len(state_dict)} tensors{where}; pass --factory "
            "module:callable that builds the network (and --factory-kwargs JSON for its arguments)"
        )
    net = build_network(request.factory, request.factory_kwargs, request.trust)
    if not isinstance(net, torch.nn.Module):
        raise EnsError(
            f"--factory {request.factory!r} returned a {type(net).__name__}, not a torch.nn.Module; "
            "point it at the network class or a function returning one"
        )
    note = load_weights(net, state_dict, path, request.factory)
    return net.float(), f"state_dict{where}{note} + {request.factory}"


def find_state_dict(obj: Any, path: Path) -> tuple[dict, str]:
    """The state_dict a checkpoint holds (itself, or under a usual key) and where it was found."""
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        state, where = obj, ""
    elif isinstance(obj, dict) and any(isinstance(obj.get(k), dict) for k in STATE_DICT_KEYS):
        key = next(k for k in STATE_DICT_KEYS if isinstance(obj.get(k), dict))
        state, where = obj[key], f" (under {key!r})"
    else:
        keys = list(obj)[:6] if isinstance(obj, dict) else None
        raise EnsError(
            f"{str(path)!r} holds a {type(obj).__name__}{f' with keys {keys}' if keys else ''}, not a "
            f"state_dict; expected a dict of tensors, or one under {' or '.join(map(repr, STATE_DICT_KEYS))}"
        )
    return state, where


def load_weights(net: torch.nn.Module, state: dict, path: Path, factory: str) -> str:
    """load_state_dict(strict=True), with a one-line report of missing, unexpected and resized keys;
    keys that all carry a prefix the network's lack are loaded without it; return a note saying so."""
    expected = net.state_dict()
    state, note = strip_prefix(state, expected)
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    resized = [
        f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}"
        for k in expected
        if k in state and tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    parts = [
        f"{label} {few_keys(keys)}"
        for label, keys in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape mismatch", resized),
        )
        if keys
    ]
    if parts:
        raise EnsError(
            f"the state_dict in {str(path)!r} does not fit the network built by --factory {factory!r}: "
            f"{'; '.join(parts)}; {_prefix_hint(state, expected)}check --factory and --factory-kwargs"
        )
    net.load_state_dict(state, strict=True)
    return note


def strip_prefix(state: dict, expected: dict) -> tuple[dict, str]:
    """`state` without the prefixes all its keys share and the network's keys lack (DataParallel's
    'module.', Lightning's 'model.', a wrapper's 'net.') when that makes it fit better, and the note.

    >>> strip_prefix({"module.net.w": 1}, {"w": 0})
    ({'w': 1}, " (prefix 'module.net.' removed)")
    """
    stripped, removed = state, ""
    while set(stripped) != set(expected):
        prefix = _common_prefix(stripped)
        if not prefix or _common_prefix(expected) == prefix:
            break
        stripped, removed = {k[len(prefix) :]: v for k, v in stripped.items()}, removed + prefix
    if not removed or len(set(stripped) ^ set(expected)) >= len(set(state) ^ set(expected)):
        return state, ""
    return stripped, f" (prefix {removed!r} removed)"


def _common_prefix(keys) -> str:
    """'net.' when every key starts with that one dotted component, else ''."""
    firsts = {key.partition(".")[0] + "." if "." in key else "" for key in keys}
    return firsts.pop() if len(firsts) == 1 else ""


def _prefix_hint(state: dict, expected: dict) -> str:
    """Where the keys' prefixes differ, say so: the usual cause of a state_dict that fits nothing."""
    have, want = _common_prefix(state), _common_prefix(expected)
    if have == want:
        return ""
    have_text = f"all start with {have!r}" if have else f"start like {next(iter(state), '')!r}"
    return (
        f"the state_dict's keys {have_text} while the network's "
        f"{f'all start with {want!r}' if want else 'share no prefix'} (a wrapper's or of another class?); "
    )


def few_keys(items: list[str], shown: int = 4) -> str:
    """The first few of a list of keys, and how many more there are."""
    more = f" (+{len(items) - shown} more)" if len(items) > shown else ""
    return ", ".join(items[:shown]) + more
