"""The one exception type that edgekit shows to users as a single line."""


class EdgekitError(ValueError):
    """Bad user input or a failed check: the CLI prints the message and exits non-zero."""


class EdgekitWarning(UserWarning):
    """Input that runs but may give meaningless results (NaN/inf): the CLI prints one line."""
