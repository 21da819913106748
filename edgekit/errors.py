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
