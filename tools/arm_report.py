"""The table `make test-arm` ends with: x86 vs emulated Pi 4 / Pi 5 on the same artifacts.

    python tools/arm_report.py build/arm     # after tools/test-arm.sh; writes report.md there

Reads what tests/test_arm.py left in the folder: bench-<machine>.json (edgekit bench reports)
and logits-<machine>.npz (each artifact's logits over the held-out samples). Emulated
latencies are qemu's, not a Pi's: the table says so.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

MACHINES = ["x86_64", "cortex-a72", "cortex-a76"]


def report(folder: Path) -> str:
    bench = {m: json.loads((folder / f"bench-{m}.json").read_text()) for m in MACHINES
             if (folder / f"bench-{m}.json").is_file()}
    logits = {m: dict(np.load(folder / f"logits-{m}.npz")) for m in MACHINES
              if (folder / f"logits-{m}.npz").is_file()}
    p50 = {m: {r["file"]: r["p50_ms"] for r in b["results"]} for m, b in bench.items()}
    files = sorted({f for per in p50.values() for f in per} | {f for per in logits.values()
                                                                for f in per})
    head = ["artifact"] + [f"{m} p50 ms" for m in MACHINES] + \
        [f"{m} vs x86" for m in MACHINES[1:]]
    rows = []
    for f in files:
        row = [f] + [f"{p50[m][f]:.3f}" if f in p50.get(m, {}) else "-" for m in MACHINES]
        for m in MACHINES[1:]:
            row.append(agreement(f, logits.get("x86_64", {}).get(f), logits.get(m, {}).get(f)))
        rows.append(row)
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    machines = "; ".join(f"{m}: {b['machine']['cpu']}"
                         + (" (EMULATED by qemu-user: not Pi timings)"
                            if b["machine"]["emulated"] else "")
                         for m, b in bench.items())
    first = next(iter(bench.values()))["results"][0] if bench else {}
    return "\n".join(lines) + f"\n\n{machines}. Batch {first.get('batch', '?')}, " \
        f"{first.get('threads', '?')} threads, {first.get('runs', '?')} runs.\n"


def agreement(name: str, ref: np.ndarray | None, got: np.ndarray | None) -> str:
    """fp32: the largest difference relative to the logits' range; int8: top-1 agreement."""
    if ref is None or got is None:
        return "-"
    if ".int8." in name:
        same = float((ref.argmax(1) == got.argmax(1)).mean())
        return f"top-1 {same:.2%}"
    return f"max diff {np.abs(ref - got).max() / (ref.max() - ref.min()):.1e} of range"


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "build/arm")
    text = report(out)
    (out / "report.md").write_text(text)
    print(text)
