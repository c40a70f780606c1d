"""The one error type of the demo: bad input it cannot use, with a one-line message."""

from __future__ import annotations


class DemoError(ValueError):
    """An input the demo cannot use (source, detector, model).  The message is one line that names
    the input and says what was expected; the CLI prints it to stderr and exits with code 2."""


def one_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of ``str(exc)``, shortened to ``limit`` characters (for messages built from
    third-party exceptions, whose text may span many lines)."""
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."
