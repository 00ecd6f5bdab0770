"""Usage errors (a bad option value, an unknown option or command) as one `error:` line and exit 1,
like every other error, instead of Typer's usage box and exit 2.

`OneLineGroup` is the root command's class: parsing of the root and of every subcommand happens
inside its `make_context` and `invoke`, so one place covers every command, in `ens` and in tests.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

from typer.core import TyperGroup

try:  # Typer 0.2x carries its own copy of Click
    from typer._click import exceptions as click_errors
except ImportError:  # older Typer runs on Click itself
    from click import exceptions as click_errors

from ensemble.cli.common import fail

# A group called without a command raises this to show its help page (Click 8.2 on); older Click
# prints the page itself.
NO_ARGS_IS_HELP = getattr(click_errors, "NoArgsIsHelpError", ())


class OneLineGroup(TyperGroup):
    """The `ens` group: a usage error anywhere below it ends in one line and exit 1. Help pages
    (`--help`, a group called without a command) are shown as before."""

    def make_context(self, info_name, args, parent=None, **extra):
        with one_line_usage_errors():
            return super().make_context(info_name, args, parent=parent, **extra)

    def invoke(self, ctx):
        with one_line_usage_errors(ctx):
            return super().invoke(ctx)


@contextlib.contextmanager
def one_line_usage_errors(group_ctx=None) -> Iterator[None]:
    """Print a usage error as one line and exit 1; a group's help page passes through."""
    try:
        yield
    except NO_ARGS_IS_HELP:
        raise
    except click_errors.UsageError as exc:
        raise fail(usage_message(exc, group_ctx)) from None


def usage_message(exc: click_errors.UsageError, group_ctx=None) -> str:
    """One line: what was wrong (the option, the value received, what is allowed) and where help is."""
    param = getattr(exc, "param", None)
    if isinstance(exc, click_errors.MissingParameter) or param is None:
        text = _sentence(exc.format_message())
        if text.startswith("no such command") and exc.ctx is not None:
            text += f" (the commands: {', '.join(exc.ctx.command.list_commands(exc.ctx))})"
    else:
        text = _bad_value(_param_name(param), exc)
    return f"{text}; see `{_command_path(exc, group_ctx)} --help`"


def _command_path(exc: click_errors.UsageError, group_ctx) -> str:
    """`ens predict` for an error of `ens predict`. An error raised while a subcommand's options are
    split up carries no context: the group's context names the subcommand instead."""
    if exc.ctx is not None:
        return exc.ctx.command_path
    if group_ctx is not None:
        return " ".join(filter(None, [group_ctx.command_path, group_ctx.invoked_subcommand]))
    return "ens"


def _param_name(param) -> str:
    """`--batch-size` for an option, `CSV` for an argument."""
    opts = [opt for opt in getattr(param, "opts", []) if opt.startswith("-")]
    return "/".join(opts) if opts else (param.name or "value").upper()


_PATH = re.compile(r"^\w+ ('.*') (is a file|is a directory|does not exist|is not (?:readable|writable))\.?$")
_CHOICE = re.compile(r"^(?:Value error, )?('.*') is not one of (.+?)\.?$")


def _bad_value(name: str, exc: click_errors.BadParameter) -> str:
    """`--x got '0': ...`, from Typer's message or the validation error it wraps."""
    path = _PATH.match(exc.message)
    if path:
        where, problem = path.groups()
        if problem == "is a file":
            return f"{name} expects a folder, got the file {where}"
        if problem == "is a directory":
            return f"{name} expects a file, got the folder {where}"
        return f"{name} got {where}, which {problem}"
    choice = _CHOICE.match(exc.message)
    if choice:
        return f"{name} got {choice.group(1)}; allowed: {choice.group(2)}"
    received = _received(exc)
    got = f" got {received!r}" if received is not None else ""
    return f"{name}{got}: {_sentence(exc.message)}"


def _received(exc: click_errors.BadParameter) -> object | None:
    """The raw value a pydantic validation error (Typer's number and type checks) names."""
    errors = getattr(exc.__cause__, "errors", None)
    if not callable(errors):
        return None
    try:
        first = errors()[0]
    except (IndexError, TypeError, ValueError):
        return None
    return first.get("input")


def _sentence(message: str) -> str:
    """A message as a clause of the one line: lower-case start, no final full stop."""
    message = " ".join(message.split()).rstrip(".")
    message = message.removeprefix("Value error, ")
    return message[:1].lower() + message[1:] if message[:2] != message[:2].upper() else message
