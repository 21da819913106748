"""int8 that keeps its accuracy, measured on the failing case (issue 18).

The model is tests/test_int8_fallback.py's OutlierLeNet: LeNet-5 whose conv1 output gets one
activation raised by 1000 in every input, on the offline digits (360 held out). Three exports,
every int8 format, timed on this machine (`--target local`):

    plain int8        --no-int8-fallback --allow-degraded: what int8 loses
    mixed precision   the default: calibration search, then the fewest layers kept fp32
    QAT               `qat.epochs` of quantization-aware training from the same run, exported

    .venv/bin/python benchmarks/int8_accuracy.py [--qat-epochs 5] [--out FILE.json]

Prints a markdown table and writes the JSON (every figure, the machine). Latencies are batch 1
on this machine's threads, from export's own timing; they are noisy on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import warnings
from pathlib import Path

FORMATS = ["onnx", "onnx-int8", "torchscript", "torchscript-int8", "pte", "pte-int8"]
INT8 = {"onnx-int8": "model.int8.onnx", "torchscript-int8": "model.int8.ts",
        "pte-int8": "model.int8.pte"}
FP32 = {"onnx-int8": "model.onnx", "torchscript-int8": "model.ts", "pte-int8": "model.pte"}


def main(argv: list[str] | None = None) -> dict:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--qat-epochs", type=int, default=5)
    args.add_argument("--out", type=Path, default=Path("runs/bench/int8_accuracy.json"))
    opts = args.parse_args(argv)
    warnings.simplefilter("ignore")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from test_int8_fallback import OutlierLeNet

    from edgekit.exporting import export
    from edgekit.machine import machine_info
    from edgekit.models import MODELS
    from edgekit.recipe import load_recipe
    from edgekit.training import train

    MODELS._entries["test-outlier-lenet"] = lambda input_shape, num_outputs, dropout=0.0: \
        OutlierLeNet(num_outputs)
    work = Path(tempfile.mkdtemp(prefix="int8-accuracy-"))
    model = ["model.name=test-outlier-lenet", "train.threads=1"]
    base = train(load_recipe("lenet5", [*model, "train.epochs=8"]), work / "base", False)
    plain = export(base, FORMATS, target="local", int8_fallback=False, allow_degraded=True)
    _keep(base, work / "plain")
    mixed = export(base, FORMATS, target="local")
    run = train(load_recipe("lenet5", [*model, f"qat.epochs={opts.qat_epochs}",
                                       f"qat.base={base}"]), work / "qat", False)
    qat = export(run, [f for f in FORMATS if not f.startswith("torchscript")], target="local")
    result = {"machine": machine_info(), "qat_epochs": opts.qat_epochs,
              "reports": {"plain": plain, "mixed": mixed, "qat": qat}}
    opts.out.parent.mkdir(parents=True, exist_ok=True)
    opts.out.write_text(json.dumps(result, indent=1, default=str))  # before any summary
    result["rows"] = rows(plain, mixed, qat)
    opts.out.write_text(json.dumps(result, indent=1, default=str))
    print(markdown(result))
    return result


def rows(plain: dict, mixed: dict, qat: dict) -> list[dict]:
    """One row per int8 format: fp32, plain int8, mixed precision and QAT figures."""
    def by_file(report):  # a best-effort format that failed is a candidate, not an artifact
        found = {c["artifact"]: c for c in report["candidates"] if c.get("chosen")}
        for c in report["candidates"]:
            found.setdefault(c["artifact"], c)
        return {**found, **{a["file"]: a for a in report["artifacts"]}}

    p, m, q = by_file(plain), by_file(mixed), by_file(qat)
    for file in INT8.values():  # dropped altogether (best effort): its note has the drop
        lost = re.search(rf"{re.escape(file)} loses (\d+\.\d+)", " ".join(plain["notes"]))
        if file not in p and lost:
            p[file] = {"accuracy_drop_points": float(lost.group(1)), "passed": False}
    out = []
    for fmt, file in INT8.items():
        fix = (mixed.get("int8_accuracy") or {}).get(fmt, {}).get("fallback") or {}
        lat = fix.get("latency_ms") or {}
        qrow = next((r for r in (qat.get("qat") or {}).get("int8", []) if r["file"] == file),
                    None)
        out.append({
            "format": fmt, "fp32_accuracy": p[FP32[fmt]]["accuracy"],
            "plain_drop": p[file]["accuracy_drop_points"], "plain_passed": p[file]["passed"],
            "mixed_drop": m[file]["accuracy_drop_points"], "mixed_passed": m[file]["passed"],
            "mixed_layout": m[file].get("layout"),
            "fp32_layers": [x["module"] or x["node"] for x in fix.get("fp32_layers") or []],
            "ms_mixed": lat.get("mixed"), "ms_full_int8": lat.get("full_int8"),
            "ms_fp32": lat.get("fp32"),
            "qat_drop_vs_base": qrow["drop_vs_base_points"] if qrow else None,
            "qat_passed": q[file]["passed"] if file in q else None,
            "qat_ms": q[file].get("latency_ms") if file in q else None})
    return out


def markdown(result: dict) -> str:
    def num(v, spec=".2f"):
        return "-" if v is None else format(v, spec)

    mach = result["machine"]
    isa = ", ".join(k for k, v in (mach.get("isa") or {}).items() if v)
    lines = [f"CPU: {mach.get('cpu')} ({mach.get('arch')}; {isa}); {mach.get('usable_cores')} "
             f"usable cores; QAT {result['qat_epochs']} epochs", "",
             "| format | fp32 acc | plain int8 drop | mixed drop | fp32 layers | ms mixed / "
             "full int8 / fp32 | QAT drop vs fp32 | QAT ms |",
             "| --- | ---: | ---: | ---: | --- | --- | ---: | ---: |"]
    for r in result["rows"]:
        lines.append(
            f"| {r['format']} | {100 * r['fp32_accuracy']:.2f}% | {num(r['plain_drop'])} | "
            f"{num(r['mixed_drop'])} | {len(r['fp32_layers'])} ({', '.join(r['fp32_layers'])})"
            f" | {num(r['ms_mixed'], '.4f')} / {num(r['ms_full_int8'], '.4f')} / "
            f"{num(r['ms_fp32'], '.4f')} | {num(r['qat_drop_vs_base'])} | "
            f"{num(r['qat_ms'], '.4f')} |")
    return "\n".join(lines)


def _keep(run: Path, to: Path) -> None:
    """The plain export's folder, before the mixed export replaces it."""
    import shutil

    shutil.copytree(run / "export", to)


if __name__ == "__main__":
    main()
