"""What every command-line entry point shares: ending quietly when its reader goes away.

``python -m fer_sweep.data --json | head -3`` closes the pipe before Python has written (or
flushed) everything; without this the command ends with a ``BrokenPipeError`` traceback, and a
second one when the interpreter flushes stdout at exit.  Stopping silently is what ``cat`` and
``grep`` do; the exit status is 141 (128 + SIGPIPE), as the shell reports for them.
"""

from __future__ import annotations

import functools
import os
import sys
from typing import Callable, TypeVar

EXIT_BROKEN_PIPE = 141

F = TypeVar("F", bound=Callable[..., int])


def stops_quietly_when_output_closes(main: F) -> F:
    """Wrap a ``main(argv) -> exit status``: a closed stdout ends it with status 141 and no traceback."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            try:
                return main(*args, **kwargs)
            finally:  # also after argparse's --help exit: a closed pipe shows up here for output still buffered
                sys.stdout.flush()
        except BrokenPipeError:
            _silence_stdout()
            return EXIT_BROKEN_PIPE

    return wrapper  # type: ignore[return-value]


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's flush at exit cannot raise again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # stdout replaced by something without a file descriptor (tests)
        pass
