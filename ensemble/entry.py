"""The `ens` console script: stop signals in charge from the first instant, then the command line.

Standard library only until the commands load, so Ctrl-C, SIGTERM or SIGHUP while `ens` is still
starting end in one line too, never a traceback.
"""

from __future__ import annotations

import signal
import sys

from ensemble.process import (
    Stopped,
    debug_enabled,
    exit_while_loading,
    handle_stop_signals,
    internal_error,
    interrupt_exit_code,
    interrupt_message,
    stop_signals,
)


def main() -> None:
    """Run the `ens` command line: exit 130/143/129 in one line for Ctrl-C/SIGTERM/SIGHUP, also while
    loading; one line naming the exception for a bug (the traceback with --debug or ENS_DEBUG=1)."""
    debug = "--debug" in sys.argv[1:]
    for signum in (signal.SIGINT, *stop_signals()):
        signal.signal(signum, exit_while_loading)
    try:
        from ensemble.cli import app

        handle_stop_signals()
        app()
    except (KeyboardInterrupt, Stopped) as exc:
        if debug or debug_enabled():
            raise
        print(f"error: {interrupt_message(exc)}", file=sys.stderr)
        raise SystemExit(interrupt_exit_code(exc)) from None
    except Exception as exc:
        if debug or debug_enabled():
            raise
        print(f"error: {internal_error(exc)}", file=sys.stderr)
        raise SystemExit(1) from None
