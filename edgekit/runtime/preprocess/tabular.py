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
import itertools
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from edgekit.diskfull import human
from edgekit.errors import EdgekitError, excerpt
from edgekit.fileio import not_a_file
from edgekit.preprocess_spec import KEYS as KEYS_OF
from edgekit.runtime.preprocess.kind import KINDS, Kind

MISSING = ("?", "")  # how a numeric value is written when it is unknown
JSON_LIMIT = 64 * 1024 * 1024  # a JSON table is parsed whole; a bigger table must be CSV
KEYS = KEYS_OF["tabular"]


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
            raise EdgekitError(f"{where}column {col['name']!r}: unseen category "
                               f"{excerpt(value)}; "
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
                               f"{excerpt(raw)}") from None
        if not np.isfinite(number):
            raise EdgekitError(f"{where}column {col['name']!r}: expected a finite number, got "
                               f"{excerpt(raw)}")
    return (number - col["mean"]) / col["std"]


def read(path: str | Path, spec: dict, most: int = 1) -> list[dict]:
    """A .csv (a header row naming the columns, then one row per input) or .json file (an
    object, or a list of objects) -> rows.

    A CSV is read only as far as `most` + 1 rows: one input is one row, and a table of a
    million rows is refused after its second, not parsed whole (`csv_rows` streams a table).

    Raises:
        EdgekitError: not a file, not UTF-8, not CSV/JSON of rows, or more than `most` rows.
    """
    path = Path(path)
    if not path.is_file():
        raise EdgekitError(f"input {str(path)!r} {not_a_file(path)}; expected a .csv or .json "
                           "file of rows")
    if path.suffix.lower() == ".json":
        rows = from_json(_read_text(path), str(path))
    else:
        with open_csv(path) as f:
            rows = [row for _, row in itertools.islice(csv_rows(f, spec, str(path)), most + 1)]
    if len(rows) > most:
        raise EdgekitError(f"{str(path)!r} holds more than {most} row(s); one input is one row "
                           "(`edgekit predict MODEL FILE` predicts every row of a table)")
    return rows


def _read_text(path: Path) -> str:
    check_json_size(path)
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise EdgekitError(f"{str(path)!r} is not UTF-8 text: {e}") from None


def check_json_size(path: Path) -> None:
    """Refuse a JSON table too big to parse whole (CSV streams; JSON cannot, here)."""
    size = path.stat().st_size
    if size > JSON_LIMIT:
        raise EdgekitError(f"{str(path)!r} is a JSON table of {human(size)}; JSON is "
                           f"read whole, so a table over {JSON_LIMIT // 2**20} MB must be CSV "
                           "(read a batch of rows at a time)")


def open_csv(path: Path, raw=None) -> io.TextIOWrapper:
    """A CSV file opened for `csv_rows` (a BOM skipped; `raw`: an open binary file to wrap)."""
    return io.TextIOWrapper(raw or open(path, "rb"), encoding="utf-8-sig", newline="")


def from_json(text: str, source: str) -> list[dict]:
    """A JSON object (one row) or a list of objects -> rows. A column named twice is refused
    (JSON parsers keep the last silently, and the prediction would change without a word)."""
    try:
        obj = json.loads(text, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as e:
        raise EdgekitError(f"{source}: not valid JSON ({e})") from None
    except _DuplicateKey as e:
        raise EdgekitError(f"{source}: column {excerpt(e.args[0])} is given twice in one row; "
                           "expected each column once") from None
    rows = obj if isinstance(obj, list) else [obj]
    if not rows or not all(isinstance(r, dict) for r in rows):
        raise EdgekitError(f"{source}: expected a JSON object of column -> value, or a list of "
                           "them")
    return rows


class _DuplicateKey(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return out


def from_csv(text: str, spec: dict, source: str) -> list[dict]:
    """CSV text -> rows (see `csv_rows`)."""
    rows = [row for _, row in csv_rows(io.StringIO(text), spec, source)]
    if not rows:
        raise EdgekitError(f"{source}: a header but no rows to predict")
    return rows


def csv_rows(f, spec: dict, source: str, skip_bad: bool = False
             ) -> Iterator[tuple[int, dict | EdgekitError]]:
    """Stream a CSV's rows: (line number, column -> value), one row in memory at a time.

    With `skip_bad`, a row with the wrong number of fields comes as (line number, its error)
    and the rows after it follow.

    The first row names the columns; a first row that names none of them is taken as values
    in the training file's column order, when it has that many fields. Fields may be separated
    by ", " as in the UCI files. Blank lines are skipped.

    Raises:
        EdgekitError: no rows, a header naming a column twice, a row with the wrong number of
            fields, a field over csv's limit (128 KB) or bytes that are not UTF-8, with the
            line number.
    """
    reader = csv.reader(f, skipinitialspace=True)
    lines = _checked(reader, source)
    first = next(lines, None)
    if first is None:
        raise EdgekitError(f"{source}: no rows; expected a header row and one row per input")
    names = [c["name"] for c in spec["columns"]]
    header = [h.strip() for h in first]
    if set(header) & set(names):
        twice = [h for h in dict.fromkeys(header) if header.count(h) > 1]
        if twice:
            raise EdgekitError(f"{source}: the header names column {excerpt(twice[0])} "
                               f"{header.count(twice[0])} times; expected each column once")
    elif len(header) == len(names):
        yield reader.line_num, dict(zip(names, first, strict=True))
        header = names
    else:
        raise EdgekitError(f"{source}: the first row names none of the columns and has "
                           f"{len(header)} fields, not {len(names)}; expected a header row "
                           f"naming: {', '.join(names)}")
    for fields in lines:
        if len(fields) != len(header):
            e = EdgekitError(f"line {reader.line_num} has {len(fields)} fields; the header has "
                             f"{len(header)}")
            if not skip_bad:
                raise EdgekitError(f"{source}: {e}")
            yield reader.line_num, e
            continue
        yield reader.line_num, dict(zip(header, fields, strict=True))


def _checked(reader, source: str) -> Iterator[list[str]]:
    """The reader's non-blank rows, its failures as one line naming the line."""
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            limit = csv.field_size_limit()
            why = (f"a field longer than {limit // 1024} KB (one field holds one value)"
                   if "field larger" in str(e) else f"text that is not CSV ({e})")
            raise EdgekitError(f"{source}: line {reader.line_num} holds {why}") from None
        except UnicodeDecodeError as e:
            raise EdgekitError(f"{source}: line {reader.line_num + 1} is not UTF-8 text "
                               f"({e.reason})") from None
        if any(fields):
            yield fields


CHUNK = 1024  # rows encoded at once when a table streams


def csv_to_array(f, spec: dict, source: str) -> np.ndarray:
    """Every row of a CSV -> (N, F) float32, encoded `CHUNK` rows at a time.

    Raises:
        EdgekitError: no rows, or the first bad row, named by its row and line number.
    """
    rows = csv_rows(f, spec, source)
    parts = []
    done = 0
    while chunk := list(itertools.islice(rows, CHUNK)):
        try:
            parts.append(rows_to_array([r for _, r in chunk], spec))
        except EdgekitError:
            for i, (line, r) in enumerate(chunk, done + 1):  # name the bad row
                try:
                    rows_to_array([r], spec)
                except EdgekitError as e:
                    raise EdgekitError(f"{source} row {i} (line {line}): {e}") from None
        done += len(chunk)
    if not parts:
        raise EdgekitError(f"{source}: a header but no rows to predict")
    return np.concatenate(parts)


class TabularKind(Kind):
    """One row: a .csv file (a header, then the row), a .json object, or a dict."""

    name = "tabular"
    keys = KEYS
    suffixes = (".csv", ".json")
    media_types = ("text/csv", "application/json")

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

    def prepare_many(self, raw, spec: dict, media_type: str | None = None) -> np.ndarray:
        """A CSV body of many rows is encoded as it is parsed, `CHUNK` rows at a time: the
        features (F floats a row) are what stays in memory, not a dict per row."""
        if isinstance(raw, (bytes, bytearray, memoryview)) and self.accepts(media_type) \
                and not (media_type or "").endswith("json") \
                and not bytes(raw[:64]).lstrip(b"\xef\xbb\xbf \t\r\n").startswith((b"{", b"[")):
            # Decoded as it is parsed: no str copy of the body (4 bytes a character in a
            # StringIO), only the rows of one chunk at a time.
            return csv_to_array(open_csv(None, io.BytesIO(raw)), spec, "body")
        return super().prepare_many(raw, spec, media_type)

    def to_batch(self, value, spec: dict) -> np.ndarray:
        rows = [value] if isinstance(value, dict) else value
        if not (isinstance(rows, list) and rows and all(isinstance(r, dict) for r in rows)):
            raise EdgekitError("tabular input is rows (column -> value)")
        return rows_to_array(rows, spec)  # (B, F)

    def to_array(self, value, spec: dict) -> np.ndarray:
        rows = [value] if isinstance(value, dict) else value
        if not (isinstance(rows, list) and len(rows) == 1 and isinstance(rows[0], dict)):
            n = len(rows) if isinstance(rows, list) else 0
            raise EdgekitError(f"tabular input is one row (column -> value); got {n} rows "
                               "(`edgekit predict MODEL FILE` predicts every row of a table)")
        return rows_to_array(rows, spec)[0]  # (F,)

    def example(self, spec: dict) -> dict:
        return {c["name"]: c["values"][0] if c["type"] == "category" else c["mean"]
                for c in spec["columns"]}


KINDS.register("tabular")(TabularKind())
