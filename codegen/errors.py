"""The one exception type that reaches users as a message instead of a traceback."""


class StitchgenError(Exception):
    """A problem with the user's input: printed as one line, exit code 2."""

    exit_code = 2


def first_line(exc: BaseException) -> str:
    """An exception as one line: its message's first line, or its type when it has none.

    Keras and h5py messages run over many lines; a user sees the first, which names
    the problem, and `--verbose` (where offered) shows the rest.
    """
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
