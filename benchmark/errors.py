"""The error for bad input: the CLI prints it as one line and exits 2, with nothing computed or stored.

Every module that checks what a user handed it (a database URL, a suite file, an adapter folder, a
cache entry) raises `UserError` with a message that names the thing and says what is wrong with
it; the command line turns it into `error: <message>` (a traceback only under `--debug`). It is a
ValueError so that callers that already catch ValueError keep working.
"""

from __future__ import annotations


class UserError(ValueError):
    """Bad input, described in full by its message (which file, which key, what was expected)."""


def first_line(err: BaseException) -> str:
    """`Type: first line of the message`: libraries' messages run to paragraphs."""
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__
