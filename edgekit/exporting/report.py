"""The export report: report.json (every check, candidate and timing) and report.md for people."""

from __future__ import annotations

from edgekit.exporting.choose import Candidate, fastest, speed_line
from edgekit.exporting.int8.qat import markdown as qat_markdown
from edgekit.exporting.int8.qat import report_entry


def build_report(prep, chosen: list[Candidate], cands: list[Candidate], tuning: dict,
                 kept_files: list[str], notes: list[str]) -> dict:
    """The report of one export.

    Args:
        prep: the export's edgekit.exporting.prepare.Prepared.
        chosen: the published artifacts, rebuilt and kept, in catalog order.
        cands: every candidate written by this export (int8 ones are listed with their fate).
    """
    metric = prep.held.task.metric
    return {
        "run": str(prep.run), "recipe": prep.recipe.name, "model": prep.recipe.model.name,
        "test_samples": len(prep.held.y),
        "task": prep.task_name, "metric": metric,
        "pytorch": {"score": prep.held.score, metric: prep.held.score},
        "reference": "onnxruntime on the imported ONNX" if prep.model is None else "PyTorch",
        "labeled": prep.held.labeled,
        "thresholds": prep.gate.to_dict(),
        "onnx_opset": prep.cfg.opset,
        "calibration": {"samples": len(prep.calibration),
                        "method": prep.cfg.calibration_method,
                        "per_channel": prep.cfg.per_channel},
        "target": prep.target.to_dict(),
        "int8": prep.plan.to_dict() if prep.plan else None,
        "candidates": [candidate_row(c, metric) for c in cands if c.fmt.precision == "int8"],
        "tuning": tuning,
        "fastest": fastest(chosen),
        "verdict": speed_line(chosen, prep.target, tuning),
        "artifacts": [artifact_row(c, metric) for c in chosen],
        "rebuilt": [f.file for f in prep.formats],
        "kept": kept_files,
        "notes": notes,
        "qat": report_entry(prep, chosen, metric),
    }


def artifact_row(c: Candidate, metric: str) -> dict:
    row = c.check.row(metric)
    row["file"] = c.fmt.file
    if "undelegated" in c.how:  # operators a delegate (XNNPACK) left to portable kernels
        row["undelegated"] = c.how["undelegated"]
    if c.fmt.deprecated:
        row["deprecated"] = c.fmt.deprecated
    if c.kept:
        row["kept"] = True  # not rebuilt by this export; checked again here
        if not row["passed"]:
            row["degraded"] = True
    return row


def candidate_row(c: Candidate, metric: str) -> dict:
    k = c.check
    return {"format": c.fmt.format, "artifact": c.fmt.file, "layout": c.how.get("name", ""),
            "bytes": k.bytes, "score": k.score, metric: k.score,
            "accuracy_drop_points": k.drop_points, "top1_agreement": k.top1_agreement,
            "passed": k.passed, "why": k.why, "latency_ms": k.latency_ms, "timing": k.timing,
            "chosen": c.chosen, "how": c.how}


def manifest_entry(c: Candidate) -> dict:
    """What manifest.json says of a published artifact (beside its size and sha256)."""
    entry = {"format": c.fmt.format, "precision": c.fmt.precision,
             **{k: c.check.details[k] for k in ("layout", "target", "quantized_engine")
                if c.check.details.get(k)}}
    entry["check"] = "passed" if c.check.passed else f"failed: {c.check.why}"
    return entry


def report_markdown(report: dict) -> str:
    """report.md: the artifacts table, the int8 candidates, the timing and the verdict."""
    from edgekit.tasks import get_task

    task = get_task(report.get("task", "classification"))
    lines = [f"# Export report: {report['recipe']} ({report['model']})", ""]
    reference = report.get("reference", "PyTorch")
    if report.get("labeled", True):
        lines += [f"Held-out samples: {report['test_samples']}; {reference} fp32 {task.metric} "
                  f"{task.format(report['pytorch']['score'])}.", ""]
    else:
        lines += [f"Held-out samples: {report['test_samples']}, unlabeled: every artifact is "
                  f"checked against {reference} fp32's own outputs ("
                  + ("top-1 agreement" if task.higher_is_better else task.metric.replace("_", " "))
                  + ").", ""]
    target = report.get("target") or {}
    if target:
        lines += [f"Target: {target['name']} ({target['description']}); torch quantized engine "
                  f"{target['quantized_engine']}.", ""]
    if report.get("int8"):
        int8 = report["int8"]
        excl = f"; kept in fp32: {', '.join(int8['exclude'])}" if int8["exclude"] else ""
        lines += [f"int8 method: {int8['why']}{excl}.", ""]
    lines += _artifact_table(report["artifacts"], task) + _candidate_table(report, task)
    tuning = report.get("tuning") or {}
    if tuning.get("timed"):
        lines += ["", f"Timed on this machine: batch 1, {tuning['threads']} threads, "
                      f"{tuning['rounds']} interleaved rounds, median of round medians; "
                      f"{tuning['seconds']:.1f} s of tuning."]
    lines += _delegation_lines(report["artifacts"])
    if report.get("verdict"):
        lines += ["", f"**{report['verdict']}**"]
    lines += qat_markdown(report.get("qat"), task)
    for note in report.get("notes", []):
        lines += ["", f"Note: {note}"]
    from edgekit.exporting import fastpath
    from edgekit.exporting.int8.report import markdown

    lines += fastpath.markdown(report.get("fast_preprocessing"))
    if report.get("stage_seconds"):
        cpu = report.get("stage_cpu_seconds") or {}
        lines += ["", f"Export time: {report.get('export_seconds', 0):.1f} s wall, "
                      f"{report.get('export_cpu_seconds', 0):.1f} s of CPU; by stage (wall / "
                      "CPU): " + ", ".join(f"{k} {v:.1f} / {cpu.get(k, 0):.1f} s"
                                           for k, v in report["stage_seconds"].items()) + "."]
    lines += markdown(report.get("int8_accuracy"))
    return "\n".join(lines) + "\n"


def _delegation_lines(rows: list[dict]) -> list[str]:
    """What each delegated artifact runs outside its delegate, and which paths are deprecated."""
    lines = []
    for r in rows:
        if "undelegated" in r:
            left = ", ".join(f"{op} x{n}" for op, n in r["undelegated"].items())
            lines += ["", f"{r['file']}: XNNPACK runs every operator" + (
                f" but {left} (ExecuTorch's portable kernels)" if left else "") + "."]
        if r.get("deprecated"):
            lines += ["", f"{r['file']}: {r['deprecated']}."]
    return lines


def _artifact_table(rows: list[dict], task) -> list[str]:
    lines = [f"| artifact | format | precision | layout | size KB | {task.metric} | drop (pts) "
             "| max abs diff | top-1 agree | p50 ms | check |",
             "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in rows:
        check = ("pass" if r["passed"] else "DEGRADED" if r.get("degraded") else "FAIL") \
            + (", kept" if r.get("kept") else "")
        lines.append(
            f"| {r['file']} | {r['format']} | {r['precision']} | {r.get('layout', '-')} "
            f"| {r['bytes'] / 1024:.1f} | {cell(r['score'], task.format)} "
            f"| {cell(r['accuracy_drop_points'], '.2f')} | {cell(r['max_abs_diff'], '.2e')} "
            f"| {cell(r['top1_agreement'], '.2%')} | {cell(r.get('latency_ms'), '.3f')} "
            f"| {check} |")
    return lines


def _candidate_table(report: dict, task) -> list[str]:
    if not report.get("candidates"):
        return []
    lines = ["", "int8 candidates:", "",
             f"| format | layout | size KB | {task.metric} | drop (pts) | p50 ms | check "
             "| chosen |",
             "| --- | --- | ---: | ---: | ---: | ---: | --- | --- |"]
    for c in report["candidates"]:
        lines.append(
            f"| {c['format']} | {c['layout']} | {c['bytes'] / 1024:.1f} "
            f"| {cell(c['score'], task.format)} | {cell(c['accuracy_drop_points'], '.2f')} "
            f"| {cell(c['latency_ms'], '.3f')} "
            f"| {'pass' if c['passed'] else 'FAIL: ' + c['why']} "
            f"| {'yes' if c['chosen'] else ''} |")
    return lines


def cell(value, spec) -> str:
    """`value` formatted by a format spec or a function (a task's format); None as "-"."""
    if value is None:
        return "-"
    return spec(value) if callable(spec) else format(value, spec)
