"""The one exception type that reaches users as a message instead of a traceback."""


class StitchgenError(Exception):
    """A problem with the user's input: printed as one line, exit code 2."""

    exit_code = 2
