"""Plain-text tables for the CLI's output."""

from __future__ import annotations


def table(rows: list[tuple]) -> str:
    """Plain-text table; the first row is the header, numbers right-aligned."""
    rows = [tuple(str(c) for c in r) for r in rows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]

    def fmt(row, header=False):
        return "  ".join(c.rjust(w) if not header and _numeric(c) else c.ljust(w)
                         for c, w in zip(row, widths, strict=True)).rstrip()

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([fmt(rows[0], header=True), sep, *(fmt(r) for r in rows[1:])])


def _numeric(cell: str) -> bool:
    try:
        float(cell.rstrip("%"))
    except ValueError:
        return cell == "-"
    return True
