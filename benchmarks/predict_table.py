"""Does `edgekit predict MODEL table.csv` stream a big table in bounded memory? (issue 19)

Trains the adult-tabular recipe briefly on a generated file in the UCI adult.data format
(tests/uci_files.py), exports it to ONNX, writes a CSV of ROWS people (default 925,000, about
100 MB, rows of the generated file repeated), then runs

    /usr/bin/time -v edgekit predict model.onnx big.csv --batch BATCH --out preds.csv  (BATCH 256)

and reports the peak RSS, the wall time and how many predictions preds.csv holds.
Goal: peak RSS under 300 MB with every row predicted.

    .venv/bin/python benchmarks/predict_table.py [--rows 925000] [--work /tmp/predict-table]

Writes WORK/predict_table.json (the figures, the command and the CPU).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=925_000)
    ap.add_argument("--work", type=Path, default=Path("/tmp/predict-table"))
    ap.add_argument("--batch", type=int, default=256)
    args = ap.parse_args()
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    edgekit = [sys.executable, "-m", "edgekit"]
    model = work / "run" / "export" / "model.onnx"
    if not model.is_file():
        sys.path.insert(0, str(ROOT / "tests"))
        from uci_files import write_adult

        data = write_adult(work / "adult.data", rows=3000)
        subprocess.run([*edgekit, "train", "adult-tabular", "--set", f"data.path={data}",
                        "--set", "train.epochs=3", "--out", work / "run", "--no-progress"],
                       check=True)
        subprocess.run([*edgekit, "export", work / "run", "--onnx"], check=True)
    table = work / "big.csv"
    write_table(model, work / "adult.data", table, args.rows)
    preds = work / "preds.csv"
    cmd = ["/usr/bin/time", "-v", *edgekit, "predict", str(model), str(table), "--out",
           str(preds), "--batch", str(args.batch)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(proc.stderr)
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)[1])
    wall = re.search(r"Elapsed \(wall clock\) time .*: (\S+)", proc.stderr)[1]
    with open(preds) as f:
        predictions = sum(1 for _ in f) - 1  # the header
    from edgekit.machine import machine_info

    result = {"rows": args.rows, "csv_bytes": table.stat().st_size, "predictions": predictions,
              "peak_rss_mb": round(rss_kb / 1024, 1), "wall": wall, "batch": args.batch,
              "command": " ".join(cmd[2:]), "cpu": machine_info().get("cpu"),
              "goal": "peak RSS < 300 MB and every row predicted",
              "met": rss_kb / 1024 < 300 and predictions == args.rows}
    (work / "predict_table.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


def write_table(model: Path, uci: Path, out: Path, rows: int) -> None:
    """`rows` people with a header naming the model's columns (the UCI rows, repeated)."""
    manifest = json.loads((model.parent / "manifest.json").read_text())
    names = [c["name"] for c in manifest["preprocess"]["columns"]]
    people = [",".join(line.split(", ")[:len(names)])
              for line in uci.read_text().splitlines() if line.strip()]
    with open(out, "w") as f:
        f.write(",".join(names) + "\n")
        for i in range(rows):
            f.write(people[i % len(people)] + "\n")


if __name__ == "__main__":
    main()
