"""The one exception type that edgekit shows to users as a single line."""


class EdgekitError(ValueError):
    """Bad user input or a failed check: the CLI prints the message and exits non-zero."""


class Interrupted(EdgekitError):
    """Training stopped by a signal after saving a checkpoint: exit status 128 + the signal."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum


class EdgekitWarning(UserWarning):
    """Input that runs but may give meaningless results (NaN/inf): the CLI prints one line."""


def one_line(error: object, limit: int = 300) -> str:
    """A library's error message (often pages long, with a C++ trace) as one bounded line."""
    return " ".join(str(error).split())[:limit]


EXCERPT = 100  # characters of an input an error message quotes


def excerpt(value, limit: int = EXCERPT, quote: bool = True) -> str:
    """`value` as an error message quotes it: its repr (its text with quote=False), cut to
    about `limit` characters with the total size named, so a 20 MB input cannot make a 20 MB
    "one-line" error.

        excerpt("hello")      -> "'hello'"
        excerpt("x" * 10000)  -> "'xxxx...xxx'... (10000 characters)"
    """
    if isinstance(value, (bytes, bytearray, memoryview)):
        value, unit = bytes(value), "bytes"
    elif isinstance(value, str):
        unit = "characters"
    else:  # a number, a list, ...: its repr is what gets quoted
        value, unit, quote = repr(value), "characters", False
    show = repr if quote else str
    if len(value) <= limit:
        return show(value)
    return f"{show(value[:limit])}... ({len(value)} {unit})"
