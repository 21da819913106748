"""`edgekit bench compare`: the same artifacts timed on several machines, side by side.

Reads the JSON of `edgekit bench` and of the pytest-benchmark suite (`make bench`), matches
results by (model, artifact, batch, threads) and gives each machine's median latency and its
ratio to a baseline machine. Threads match as a count, or as "all" when a run used every core
of its machine, so a 2-core x86 host at 2 threads and a 4-core Pi at 4 threads line up.
A machine whose facts say `emulated` is labelled EMULATED everywhere: qemu times show that
the ARM code path runs, never how fast a Pi is. A file from before results named their model
(bench JSON schema 1) makes every file match by artifact file name alone.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from edgekit.benchmark.stats import NOISY_CV, ms_text
from edgekit.errors import EdgekitError
from edgekit.fileio import not_a_file
from edgekit.table import flagged, table

Key = tuple[str, str, str, str]  # (model, artifact file, batch, threads: "1".."N" or "all")


@dataclass
class Machine:
    """One result file: whose machine, and its median latency per artifact key."""

    path: Path
    kind: str  # "edgekit bench" or "pytest-benchmark"
    facts: dict
    entries: dict[Key, dict] = field(default_factory=dict)  # key -> {"ms", "cv", "runs"}
    label: str = ""  # from the machine facts
    name: str = ""  # the label, made unique with the file name where labels repeat
    letter: str = ""

    @property
    def emulated(self) -> bool:
        return bool(self.facts.get("emulated"))


def compare(paths: list[str | Path], baseline: str | Path | None = None,
            match_threads: bool = True) -> dict:
    """Match the results of several bench files and compute ratios to a baseline machine.

    Args:
        paths: two or more JSON files from `edgekit bench` or the pytest-benchmark suite.
        baseline: the file whose machine the ratios divide by (default the first).
        match_threads: match results only at the same thread count ("all" matching "all");
            False matches by model, artifact and batch alone, taking each file's result with
            the most threads (the row then lists each machine's thread count).

    Returns:
        {"baseline": letter, "machines": [{letter, label, file, kind, emulated, facts}],
         "rows": [{model, file, batch, threads, "ms": {letter: ms or None},
                   "ratio": {letter: ms / baseline ms or None}, "gmacs": {letter: GMAC/s or
                   None}, "pct_of_peak": {letter: % of that machine's GEMM peak or None},
                   "noisy": [letters]}]}.

    Raises:
        EdgekitError: fewer than two files, a file that is not a bench result, an unknown
            baseline, or a file with no artifact in common with the baseline.
    """
    if len(paths) < 2:
        raise EdgekitError(f"bench compare needs at least two result files, got {len(paths)}")
    machines = [load_result(p) for p in paths]
    if any(not any(k[0] for k in m.entries) for m in machines):
        # A file from before results named their model: match by artifact file name alone.
        for m in machines:
            m.entries = _rekey(m.entries, lambda k: ("", *k[1:]))
    if not match_threads:
        for m in machines:
            m.entries = _most_threads(m.entries)
    _name(machines)
    base = machines[0]
    if baseline is not None:
        matches = [m for m in machines if m.path == Path(baseline) or m.letter == str(baseline)]
        if not matches:
            raise EdgekitError(f"--baseline {str(baseline)!r} is not one of the compared files "
                               f"({', '.join(str(m.path) for m in machines)}) or their letters")
        base = matches[0]
    for m in machines:
        if m is not base and not set(m.entries) & set(base.entries):
            raise EdgekitError(
                f"no artifact in common between {str(base.path)!r} ({_some(base)}) and "
                f"{str(m.path)!r} ({_some(m)}); compare results of the same exported models "
                "at the same batch and threads")
    keys = [k for k in base.entries if sum(k in m.entries for m in machines) > 1]
    order = {k: i for i, k in enumerate(base.entries)}
    keys.sort(key=lambda k: (k[0], _num(k[2]), _threads_order(k[3]), order[k]))
    rows = []
    for k in keys:
        ms = {m.letter: m.entries[k]["ms"] if k in m.entries else None for m in machines}
        ref = ms[base.letter]
        threads = k[3] if match_threads else "/".join(
            m.entries[k]["threads"] if k in m.entries else "-" for m in machines)
        rows.append({"model": k[0], "file": k[1], "batch": k[2], "threads": threads, "ms": ms,
                     "ratio": {letter: v / ref if v is not None and ref else None
                               for letter, v in ms.items()},
                     # each machine against its own GEMM peak (None: not counted)
                     "gmacs": {m.letter: m.entries[k].get("gmacs") if k in m.entries else None
                               for m in machines},
                     "pct_of_peak": {m.letter: m.entries[k].get("pct_of_peak")
                                     if k in m.entries else None for m in machines},
                     "noisy": [m.letter for m in machines
                               if k in m.entries and m.entries[k]["cv"] > NOISY_CV]})
    return {"baseline": base.letter,
            "machines": [{"letter": m.letter, "label": m.label, "name": m.name,
                          "file": str(m.path),
                          "kind": m.kind, "emulated": m.emulated, "facts": m.facts}
                         for m in machines],
            "rows": rows}


def format_compare(report: dict) -> str:
    """The comparison as text: a legend of machines, then one row per artifact."""
    base = report["baseline"]
    machines = report["machines"]
    lines = []
    for m in machines:
        tags = [m["kind"]] + (["baseline"] if m["letter"] == base else [])
        lines.append(f"{m['letter']}: {m['label']}  ({', '.join(tags)})  {m['file']}")
    if any(m["emulated"] for m in machines):
        lines.append("EMULATED = an aarch64 Python under qemu-user on another CPU: shows that "
                     "the ARM code path runs, not how fast a real ARM board is")
    lines.append(f"ms = median latency per call; x = ms / ms on {base} (above 1.00x: slower "
                 f"than {base}); ! = noisy (CV > {NOISY_CV:.0%})")
    others = [m for m in machines if m["letter"] != base]
    head = ["model", "artifact", "batch", "threads"]
    head += [f"{m['letter']} ms" + (" EMULATED" if m["emulated"] else "") for m in machines]
    rows = report["rows"]
    columns = [[r["model"] or "-" for r in rows], [r["file"] for r in rows],
               [r["batch"] for r in rows], [r["threads"] for r in rows]]
    for m, title in zip(machines, head[4:], strict=False):
        values = [None if r["ms"][m["letter"]] is None else ms_text(r["ms"][m["letter"]])
                  for r in rows]
        columns.append(flagged(values, [m["letter"] in r["noisy"] for r in rows], title))
    for m in machines:  # each machine's share of its own int8/fp32 GEMM peak, where known
        if any(r.get("pct_of_peak", {}).get(m["letter"]) is not None for r in rows):
            head.append(f"{m['letter']} % peak")
            columns.append([_pct(r["pct_of_peak"][m["letter"]]) for r in rows])
    if len(head) > 4 + len(machines):
        lines.append("% peak = GMAC/s at the median latency / that machine's own GEMM peak of "
                     "the artifact's precision (int8 or fp32), measured by `edgekit bench`")
    head += [f"{m['letter']}/{base}" for m in others]
    for m in others:
        columns.append([_ratio(r["ratio"][m["letter"]]) for r in rows])
    return "\n".join([*lines, "", table([tuple(head), *zip(*columns, strict=True)])])


def load_result(path: str | Path) -> Machine:
    """Read one result file, `edgekit bench` JSON or pytest-benchmark JSON.

    Raises:
        EdgekitError: missing, unreadable, not a bench result, or without any timing.
    """
    path = Path(path)
    if not path.is_file():
        raise EdgekitError(f"bench result {str(path)!r} {not_a_file(path)}")
    expected = "expected the JSON written by `edgekit bench` or by pytest-benchmark " \
               "(`make bench`, --benchmark-json)"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise EdgekitError(f"{str(path)!r} is not a bench result (not JSON); {expected}") \
            from None
    if isinstance(data, dict) and isinstance(data.get("results"), list) \
            and isinstance(data.get("machine"), dict):
        machine = _from_edgekit(path, data)
    elif isinstance(data, dict) and isinstance(data.get("benchmarks"), list) \
            and isinstance(data.get("machine_info"), dict):
        machine = _from_pytest_benchmark(path, data)
    else:
        raise EdgekitError(f"{str(path)!r} is not a bench result; {expected}")
    if not machine.entries:
        raise EdgekitError(f"{str(path)!r} holds no latency results")
    for key, entry in machine.entries.items():  # a ratio of 0, NaN or -5 ms means nothing
        if not (math.isfinite(entry["ms"]) and entry["ms"] > 0):
            raise EdgekitError(f"{str(path)!r}: {_key_text(key)} has a median latency of "
                               f"{entry['ms']!r} ms; expected a positive finite number "
                               "(a damaged or hand-edited result file)")
    return machine


def threads_label(threads, facts: dict) -> str:
    """"all" for a run on every core of its machine, else the count ("1")."""
    if threads is None:
        return "-"
    if threads in (facts.get("usable_cores"), facts.get("cores")):
        return "all"
    return str(threads)


def machine_label(facts: dict) -> str:
    """"aarch64 Raspberry Pi 5 Model B Rev 1.0 (Cortex-A76), 4 cores" and the like."""
    from edgekit.machine import cpu_label

    cpu = cpu_label(facts) if facts.get("cpu") else "unknown CPU"
    board = facts.get("board")
    label = f"{facts.get('arch', '?')} {board} ({cpu})" if board else \
        f"{facts.get('arch', '?')} {cpu}"
    if facts.get("cores"):
        label += f", {facts['cores']} cores"
    if facts.get("emulated"):
        label += ", EMULATED (qemu-user)"
    return label


def _from_edgekit(path: Path, data: dict) -> Machine:
    facts = data["machine"]
    settings = data.get("settings", {})
    machine = Machine(path, "edgekit bench", facts)
    try:
        for r in data["results"]:
            # schema 1 (before sweeps) kept batch and threads in the settings only
            batch = r.get("batch", settings.get("batch"))
            threads = r.get("threads", settings.get("threads"))
            key = (r.get("model", ""), r["file"], str(batch), threads_label(threads, facts))
            machine.entries.setdefault(key, {"ms": float(r["p50_ms"]), "cv": _cv(r),
                                             "runs": r.get("runs"), "threads": key[3],
                                             "threads_n": threads, "gmacs": r.get("gmacs"),
                                             "pct_of_peak": r.get("pct_of_peak")})
    except (KeyError, TypeError, ValueError):
        raise EdgekitError(f"{str(path)!r} is not a bench result: its results lack file or "
                           "p50_ms; expected the JSON written by `edgekit bench`") from None
    return machine


def _from_pytest_benchmark(path: Path, data: dict) -> Machine:
    info = data["machine_info"]
    # benchmarks/conftest.py stores edgekit's machine facts under "edgekit"; a foreign file
    # still says which CPU it ran on through pytest-benchmark's own fields.
    facts = info.get("edgekit") or {
        "arch": info.get("machine", "?"),
        "cpu": (info.get("cpu") or {}).get("brand_raw") or info.get("processor") or "?",
        "cores": (info.get("cpu") or {}).get("count"), "emulated": False}
    machine = Machine(path, "pytest-benchmark", facts)
    try:
        for b in data["benchmarks"]:
            extra = b.get("extra_info") or {}
            stats = b["stats"]
            if "file" in extra:
                key = (extra.get("model", ""), extra["file"], str(extra.get("batch")),
                       threads_label(extra.get("threads"), facts))
            else:  # a benchmark edgekit did not write: matched by its test name
                key = (b.get("group") or "", b["name"], "-", "-")
            mean = float(stats["mean"])
            machine.entries.setdefault(key, {
                "ms": float(stats["median"]) * 1e3,
                "cv": float(stats["stddev"]) / mean if mean > 0 else 0.0,
                "runs": stats.get("rounds"), "threads": key[3],
                "threads_n": extra.get("threads")})
    except (KeyError, TypeError, ValueError):
        raise EdgekitError(f"{str(path)!r} is not a bench result: a benchmark lacks stats "
                           "(median, mean, stddev); expected pytest-benchmark JSON") from None
    return machine


def _rekey(entries: dict[Key, dict], key) -> dict[Key, dict]:
    """Entries under new keys; where several fall on one key, the first one stays."""
    out: dict[Key, dict] = {}
    for k, entry in entries.items():
        out.setdefault(key(k), entry)
    return out


def _most_threads(entries: dict[Key, dict]) -> dict[Key, dict]:
    """Entries keyed without threads, keeping per (model, file, batch) the most threads."""
    ranked = sorted(entries.items(), key=lambda item: -(item[1]["threads_n"] or 0))
    return _rekey(dict(ranked), lambda k: (*k[:3], "any"))


def _name(machines: list[Machine]) -> None:
    """Letters A, B, C ... and labels, made unique with the file name where they repeat."""
    labels = [machine_label(m.facts) for m in machines]
    for i, m in enumerate(machines):
        m.letter = chr(ord("A") + i) if i < 26 else f"M{i + 1}"
        m.label = labels[i]
        m.name = labels[i] + (f" [{m.path.name}]" if labels.count(labels[i]) > 1 else "")


def _some(m: Machine, n: int = 3) -> str:
    keys = list(m.entries)
    shown = ", ".join(_key_text(k) for k in keys[:n])
    return shown + (f" and {len(keys) - n} more" if len(keys) > n else "")


def _key_text(k: Key) -> str:
    model, file, batch, threads = k
    return f"{model + '/' if model else ''}{file} (batch {batch}, threads {threads})"


def _cv(r: dict) -> float:
    if "cv" in r:
        return float(r["cv"])
    return float(r.get("std_ms", 0.0)) / float(r["mean_ms"]) if r.get("mean_ms") else 0.0


def _num(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return float("inf")


def _threads_order(text: str) -> float:
    return float("inf") if text == "all" else _num(text)


def _ratio(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}x" if value < 10 else f"{value:.0f}x"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}%"
