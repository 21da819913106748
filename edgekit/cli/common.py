"""Pieces more than one command shares: the default top-k, thread/batch count lists."""

from __future__ import annotations

from edgekit.errors import EdgekitError

# Labels `predict` shows and `serve` returns unless asked (serve.Limits.k says the same).
TOP_K = 3


def parse_counts(text: str, option: str, all_value: int | None = None) -> list[int]:
    """"1,2,8" -> [1, 2, 8]; "all" -> all_value where allowed. One-line error otherwise."""
    counts = []
    for part in str(text).split(","):
        part = part.strip()
        if all_value is not None and part == "all":
            counts.append(all_value)
        elif part.isdigit() and int(part) > 0:
            counts.append(int(part))
        else:
            expected = "positive whole numbers separated by commas, e.g. 1,8" + (
                ", or 'all'" if all_value is not None else "")
            raise EdgekitError(f"{option} {text!r}: expected {expected}")
    return counts
