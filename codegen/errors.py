"""The one exception type that reaches users as a message instead of a traceback."""

from __future__ import annotations


class StitchgenError(Exception):
    """A problem with the user's input: printed as one line, exit code 2.

    `detail` keeps the whole text of the error behind it (Keras and h5py write many
    lines); the CLI prints it under `--verbose`.
    """

    exit_code = 2

    def __init__(self, message: str, detail: str | None = None) -> None:
        super().__init__(message)
        self.detail = detail

    @classmethod
    def wrapping(cls, message: str, exc: BaseException, hint: str = "") -> StitchgenError:
        """`message: <first line of exc><hint>`, with the whole of `exc` kept for --verbose."""
        text = str(exc).strip()
        more = " (--verbose shows the whole message)" if len(text.splitlines()) > 1 else ""
        return cls(f"{message}: {first_line(exc)}{hint}{more}", detail=f"{type(exc).__name__}: {text}")


def first_line(exc: BaseException) -> str:
    """An exception as one line: its message's first line, or its type when it has none.

    Keras and h5py messages run over many lines; a user sees the first, which names
    the problem, and `--verbose` (where offered) shows the rest.
    """
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
