"""UCI tabular files the user downloads once and names with `--set data.path=FILE`.

    german-credit  Statlog German Credit, `german.data-numeric`: 1,000 rows of 24 integers and
                   a label (1 good, 2 bad), separated by runs of spaces.
    adult          Census income, `adult.data` (or `adult.test`): 14 columns and the label
                   (<=50K, >50K) separated by ", "; "?" marks a missing value.

Both become `tabular` inputs (edgekit/runtime/tabular.py): numeric columns standardized with
the training split's mean/std, category columns label-encoded over the file's vocabulary. The
rows go through the same `rows_to_array` the runtime uses on a CSV row on the Pi.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from edgekit.data.splits import ArraySplit, DataSplits, register_dataset
from edgekit.errors import EdgekitError
from edgekit.fileio import not_a_file
from edgekit.runtime.preprocess.tabular import category_column, numeric_column, rows_to_array

SOURCES = {
    "german-credit": ("german.data-numeric", "https://archive.ics.uci.edu/dataset/144 "
                      "(Statlog German Credit Data)"),
    "adult": ("adult.data", "https://archive.ics.uci.edu/dataset/2 (Adult)"),
}
ADULT_COLUMNS = ["age", "workclass", "fnlwgt", "education", "education-num", "marital-status",
                 "occupation", "relationship", "race", "sex", "capital-gain", "capital-loss",
                 "hours-per-week", "native-country"]
ADULT_CATEGORIES = {"workclass", "education", "marital-status", "occupation", "relationship",
                    "race", "sex", "native-country"}
ADULT_LABELS = ["<=50K", ">50K"]


def _lines(cfg, dataset: str) -> list[str]:
    """The data file's lines. Raises EdgekitError naming the path and where to get the file."""
    file, where = SOURCES[dataset]
    if not cfg.path:
        raise EdgekitError(f"{dataset} reads the UCI file {file}: download it once from {where} "
                           "and pass --set data.path=FILE")
    path = Path(cfg.path).expanduser()
    if not path.is_file():
        raise EdgekitError(f"data.path {cfg.path!r} {not_a_file(path)}; expected the UCI file "
                           f"{file} (download it from {where})")
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise EdgekitError(f"data.path {cfg.path!r} is not the text file {file}: {e}") from None


def _split(cfg, y: np.ndarray, dataset: str) -> tuple[np.ndarray, np.ndarray]:
    """A seeded split stratified by label: the test split keeps the classes' proportions."""
    rng = np.random.default_rng(cfg.split_seed)
    train, test = [], []
    for k in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == k))
        n_test = int(round(len(idx) * cfg.test_fraction))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    train, test = np.sort(np.concatenate(train)), np.sort(np.concatenate(test))
    if not len(train) or not len(test):
        raise EdgekitError(f"data.test_fraction={cfg.test_fraction} leaves no train or no test "
                           f"rows out of the {len(y)} in {dataset}")
    return train, test


def _tabular(cfg, rows: list[dict], y: np.ndarray, labels: list[str], columns: list[str],
             categories: set[str], dataset: str) -> DataSplits:
    train, test = _split(cfg, y, dataset)
    spec_cols = []
    for name in columns:
        values = [r[name] for r in rows]
        if name in categories:
            vocab = sorted(set(values))  # the file's schema, so no test row has an unseen one
            code = {v: i for i, v in enumerate(vocab)}
            codes = np.array([code[values[i]] for i in train], np.float64)
            spec_cols.append(category_column(name, vocab, codes))
        else:  # statistics of the training rows only
            known = np.array([float(values[i]) for i in train if values[i] not in ("?", "")])
            spec_cols.append(numeric_column(name, known))
    spec = {"kind": "tabular", "columns": spec_cols}
    x = rows_to_array(rows, spec)  # (N, F) float32
    return DataSplits(train=ArraySplit(x[train], y[train]), test=ArraySplit(x[test], y[test]),
                      labels=labels, preprocess=spec)


@register_dataset("german-credit")
def german_credit(cfg) -> DataSplits:
    """`german.data-numeric`: 24 numeric columns a1..a24 -> good / bad credit risk."""
    rows, y = [], []
    for number, line in enumerate(_lines(cfg, "german-credit"), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 25 or fields[-1] not in ("1", "2"):
            raise EdgekitError(f"data.path {cfg.path!r} line {number}: expected 24 numbers and "
                               f"a label 1 or 2 separated by spaces (german.data-numeric), got "
                               f"{line[:80]!r}")
        try:
            [float(f) for f in fields[:24]]
        except ValueError:
            raise EdgekitError(f"data.path {cfg.path!r} line {number}: expected numbers, got "
                               f"{line[:80]!r}") from None
        rows.append({f"a{i + 1}": f for i, f in enumerate(fields[:24])})
        y.append(int(fields[24]) - 1)
    if not rows:
        raise EdgekitError(f"data.path {cfg.path!r} has no rows")
    return _tabular(cfg, rows, np.array(y, np.int64), ["good", "bad"],
                    [f"a{i}" for i in range(1, 25)], set(), "german-credit")


@register_dataset("adult")
def adult(cfg) -> DataSplits:
    """`adult.data` / `adult.test`: 6 numeric and 8 category columns -> income <=50K / >50K.

    Lines that are blank or start with "|" (adult.test's first line) are skipped, as is a
    header row; a label's trailing "." (adult.test) is dropped. "?" is a category of its own.
    """
    rows, y = [], []
    lines = _lines(cfg, "adult")
    for number, fields in enumerate(csv.reader(lines, skipinitialspace=True), 1):
        fields = [f.strip() for f in fields]
        if not any(fields) or fields[0].startswith("|") or fields[0] == "age":
            continue
        label = fields[-1].rstrip(".") if fields else ""
        if len(fields) != 15 or label not in ADULT_LABELS:
            raise EdgekitError(f"data.path {cfg.path!r} line {number}: expected 14 values and "
                               f"a label <=50K or >50K separated by ', ' (adult.data), got "
                               f"{lines[number - 1][:80]!r}")
        row = dict(zip(ADULT_COLUMNS, fields[:14], strict=True))
        for name in ADULT_COLUMNS:
            if name not in ADULT_CATEGORIES and row[name] != "?":
                try:
                    float(row[name])
                except ValueError:
                    raise EdgekitError(f"data.path {cfg.path!r} line {number}: column {name!r} "
                                       f"expects a number, got {row[name]!r}") from None
        rows.append(row)
        y.append(ADULT_LABELS.index(label))
    if not rows:
        raise EdgekitError(f"data.path {cfg.path!r} has no rows")
    return _tabular(cfg, rows, np.array(y, np.int64), ADULT_LABELS, ADULT_COLUMNS,
                    ADULT_CATEGORIES, "adult")
