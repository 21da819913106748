"""Issue 24's cases from the CLI: one line each, with the process's wall time and peak RSS.

    .venv/bin/python benchmarks/results/2026-12-03-amd-epyc-zen3-hostile/cases.py
(from the repository root; the table model is the one tests/test_hostile.py builds).
"""

import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, "tests")
import test_hostile as th  # noqa: E402

from edgekit import manifest as mf  # noqa: E402

W = Path("/tmp/edgekit-cases")
W.mkdir(parents=True, exist_ok=True)
EK = str(Path(".venv/bin/edgekit").resolve())


def run(title: str, *args) -> None:
    t = time.perf_counter()
    r = subprocess.run(["/usr/bin/time", "-f", "%M", EK, *map(str, args)], capture_output=True,
                       text=True)
    wall = time.perf_counter() - t
    lines = r.stderr.strip().splitlines()
    rss = int(lines[-1]) / 1024 if lines and lines[-1].isdigit() else float("nan")
    said = " / ".join(line for line in lines[:-1] if line.strip() and "Command exited" not in line)
    print(f"| {title} | exit {r.returncode} | {wall:.2f} s | {rss:.0f} MB | `{said[:260]}` |",
          flush=True)


def main() -> None:
    manifest = mf.make_manifest(recipe="t", model="m", task="classification",
                                input_name="input", input_shape=[None, 2],
                                preprocess=th.TABULAR, labels=["low", "high"])
    table = th.onnx_model(W / "table.onnx", "MatMul", [None, 2], [0, 1, 0, 1], manifest)
    wide = W / "wide.csv"
    wide.write_text("age,sex," + ",".join(f"c{i}" for i in range(1_000_000)) + "\n1,Male\n")
    run("2: 1,000,000-column header (9.9 MB)", "predict", table, wide)
    big = W / "big.csv"
    with open(big, "wb") as f:
        f.truncate(2 * 1024**3)  # sparse: 2 GB of zeros, no newline
    run("6: 2 GB CSV of one line", "predict", table, big)
    big.unlink()
    levels = ["a0: &a0 [l, l, l, l, l, l, l, l, l, l]"]
    levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    bomb = W / "bomb.yaml"
    bomb.write_text("name: lenet5\ndescription:\n  " + "\n  ".join(levels) + "\n")
    run("3: YAML alias bomb in a recipe", "train", bomb, "--out", W / "run")
    run("3: YAML alias bomb in --set", "train", "lenet5", "--set",
        "description={" + ", ".join(levels) + "}", "--out", W / "run2")
    run("4: data.image_size=100000", "train", "lenet5", "--set", "data.image_size=100000",
        "--out", W / "run3")
    run("4: train.epochs=10**22", "train", "lenet5", "--set", f"train.epochs={10**22}",
        "--out", W / "run4")
    run("5: predict --threads 999", "predict", table, "--threads", "999", W / "x.csv")
    header_only = W / "hdr.csv"
    header_only.write_text("age,sex\n")
    run("11: header-only CSV", "predict", table, header_only)


if __name__ == "__main__":
    main()
