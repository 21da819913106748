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


def flagged(values: list[str | None], flags: list[bool], header: str = "",
            mark: str = "!") -> list[str]:
    """Numbers right-aligned to one width, `mark` after the flagged ones; None is "-".

    Every cell comes out as wide as the header, so the table aligns flagged and plain alike.
    """
    width = max((len(v) for v in values if v is not None), default=1)
    cells = [("-" if v is None else v).rjust(width) + (mark if f else " ")
             for v, f in zip(values, flags, strict=True)]
    return [c.rjust(len(header)) for c in cells]
