"""The `tabular` preprocess kind: named columns in, one standardized feature vector out.

    {"kind": "tabular", "columns": [
        {"name": "age", "type": "numeric", "mean": 38.6, "std": 13.6},
        {"name": "workclass", "type": "category", "values": ["?", "Federal-gov", ...],
         "mean": 3.9, "std": 1.5}, ...]}

A numeric column is standardized with the training mean/std; a category column is label
encoded (its index in `values`, the vocabulary seen in the data file) and the code standardized
the same way. A numeric value written as "?" or left empty is missing and takes the training
mean (0 after standardizing); a category has its own "?" value when the data had one. Training
rows and rows on the Pi go through `rows_to_array`, so both are prepared identically.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.fileio import not_a_file
from edgekit.runtime.preprocess.kind import KINDS, Kind

MISSING = ("?", "")  # how a numeric value is written when it is unknown
KEYS = ("columns",)


def numeric_column(name: str, values: np.ndarray) -> dict:
    """A numeric column's spec from its training values (N,) float."""
    values = np.asarray(values, np.float64)
    return {"name": name, "type": "numeric", "mean": round(float(values.mean()), 6),
            "std": round(float(values.std()) or 1.0, 6)}


def category_column(name: str, vocabulary: list[str], codes: np.ndarray) -> dict:
    """A category column's spec: its values (index = code) and its training codes' mean/std."""
    codes = np.asarray(codes, np.float64)
    return {"name": name, "type": "category", "values": list(vocabulary),
            "mean": round(float(codes.mean()), 6), "std": round(float(codes.std()) or 1.0, 6)}


def check_spec(spec: dict, source: str) -> None:
    """Check a tabular spec's columns. Raises EdgekitError naming the first bad column."""
    cols = spec.get("columns")
    if not (isinstance(cols, list) and cols):
        raise EdgekitError(f"{source}: manifest preprocess (tabular) needs a non-empty list of "
                           "columns")
    for i, col in enumerate(cols):
        ok = (isinstance(col, dict) and isinstance(col.get("name"), str)
              and col.get("type") in ("numeric", "category")
              and all(isinstance(col.get(k), (int, float)) for k in ("mean", "std"))
              and col["std"] > 0)
        if ok and col["type"] == "category":
            values = col.get("values")
            ok = isinstance(values, list) and values and all(isinstance(v, str) for v in values)
        if not ok:
            raise EdgekitError(f"{source}: manifest preprocess column {i} must give name, type "
                               "(numeric or category), mean, std > 0 and, for a category, its "
                               f"values; got {col!r}")


def rows_to_array(rows: list[dict], spec: dict) -> np.ndarray:
    """Rows (column name -> raw value, as read from a CSV or JSON) -> (B, F) float32.

    Raises:
        EdgekitError: a missing column, an unseen category or a value that is not a number,
            naming the row, the column and the value.
    """
    cols = spec["columns"]
    index = [{v: i for i, v in enumerate(c["values"])} if c["type"] == "category" else None
             for c in cols]
    out = np.empty((len(rows), len(cols)), np.float32)
    for r, row in enumerate(rows):
        where = f"row {r + 1}: " if len(rows) > 1 else ""
        for c, col in enumerate(cols):
            name = col["name"]
            if name not in row:
                raise EdgekitError(f"{where}missing column {name!r}; expected columns: "
                                   + ", ".join(k["name"] for k in cols))
            out[r, c] = _encode(row[name], col, index[c], where)
    return out


def _encode(raw, col: dict, index: dict | None, where: str) -> float:
    value = raw.strip() if isinstance(raw, str) else raw
    if index is not None:
        code = index.get(str(value) if value is not None else "?")
        if code is None:
            shown = ", ".join(col["values"][:12]) + (", ..." if len(col["values"]) > 12 else "")
            raise EdgekitError(f"{where}column {col['name']!r}: unseen category {value!r}; "
                               f"expected one of: {shown}")
        number = float(code)
    elif value is None or (isinstance(value, str) and value in MISSING):
        return 0.0  # missing: the training mean, which standardizes to 0
    else:
        try:
            if isinstance(value, bool):
                raise ValueError
            number = float(value)
        except (TypeError, ValueError):
            raise EdgekitError(f"{where}column {col['name']!r}: expected a number, got "
                               f"{raw!r}") from None
        if not np.isfinite(number):
            raise EdgekitError(f"{where}column {col['name']!r}: expected a finite number, got "
                               f"{raw!r}")
    return (number - col["mean"]) / col["std"]


def read(path: str | Path, spec: dict) -> list[dict]:
    """A .csv (a header row naming the columns, then one row per input) or .json file (an
    object, or a list of objects) -> rows. Raises EdgekitError if it is neither."""
    path = Path(path)
    if not path.is_file():
        raise EdgekitError(f"input {str(path)!r} {not_a_file(path)}; expected a .csv or .json "
                           "file of rows")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise EdgekitError(f"{str(path)!r} is not UTF-8 text: {e}") from None
    if path.suffix.lower() == ".json":
        return from_json(text, str(path))
    return from_csv(text, spec, str(path))


def from_json(text: str, source: str) -> list[dict]:
    """A JSON object (one row) or a list of objects -> rows."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise EdgekitError(f"{source}: not valid JSON ({e})") from None
    rows = obj if isinstance(obj, list) else [obj]
    if not rows or not all(isinstance(r, dict) for r in rows):
        raise EdgekitError(f"{source}: expected a JSON object of column -> value, or a list of "
                           "them")
    return rows


def from_csv(text: str, spec: dict, source: str) -> list[dict]:
    """CSV text -> rows. The first row names the columns; a first row that names none of them
    is taken as values in the training file's column order, when it has that many fields.
    Fields may be separated by ", " as in the UCI files."""
    lines = [r for r in csv.reader(io.StringIO(text), skipinitialspace=True) if any(r)]
    if not lines:
        raise EdgekitError(f"{source}: no rows; expected a header row and one row per input")
    names = [c["name"] for c in spec["columns"]]
    header = [h.strip() for h in lines[0]]
    if set(header) & set(names):
        body = lines[1:]
    elif len(header) == len(names):
        header, body = names, lines
    else:
        raise EdgekitError(f"{source}: the first row names none of the columns and has "
                           f"{len(header)} fields, not {len(names)}; expected a header row "
                           f"naming: {', '.join(names)}")
    if not body:
        raise EdgekitError(f"{source}: a header but no rows to predict")
    rows = []
    for i, fields in enumerate(body, 2):
        if len(fields) != len(header):
            raise EdgekitError(f"{source}: line {i} has {len(fields)} fields; the header has "
                               f"{len(header)}")
        rows.append(dict(zip(header, fields, strict=True)))
    return rows


class TabularKind(Kind):
    """One row: a .csv file (a header, then the row), a .json object, or a dict."""

    name = "tabular"
    keys = KEYS
    suffixes = (".csv", ".json")
    media_types = ("text/csv", "application/json")

    def validate(self, spec: dict, source: str) -> None:
        super().validate(spec, source)
        check_spec(spec, source)

    def read(self, path: Path, spec: dict) -> list[dict]:
        return read(path, spec)

    def decode(self, body: bytes, media_type: str | None, spec: dict) -> list[dict]:
        try:
            text = body.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            raise EdgekitError(f"body is not UTF-8 text: {e}") from None
        if (media_type or "").endswith("json") or text.lstrip().startswith(("{", "[")):
            return from_json(text, "body")
        return from_csv(text, spec, "body")

    def to_array(self, value, spec: dict) -> np.ndarray:
        rows = [value] if isinstance(value, dict) else value
        if not (isinstance(rows, list) and len(rows) == 1 and isinstance(rows[0], dict)):
            n = len(rows) if isinstance(rows, list) else 0
            raise EdgekitError(f"tabular input is one row (column -> value); got {n} rows: "
                               "give one row per file")
        return rows_to_array(rows, spec)[0]  # (F,)

    def example(self, spec: dict) -> dict:
        return {c["name"]: c["values"][0] if c["type"] == "category" else c["mean"]
                for c in spec["columns"]}


KINDS.register("tabular")(TabularKind())
