"""`edgekit bench` through the real CLI: sweeps, a run directory, JSON, and the suite's JSON.

Timings themselves are never asserted (the machine is shared); their shape and bookkeeping are.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import edgekit

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
FIELDS = {"label", "model", "artifact", "file", "backend", "format", "precision", "bytes",
          "input", "batch", "threads", "runs", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms",
          "min_ms", "max_ms", "cv", "ci95_ms", "throughput_per_s", "noisy"}


def bad(*args) -> str:
    proc = edgekit(*args, check=False)
    assert proc.returncode == 1, proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_a_run_directory_over_threads_and_batches_as_json(tiny_run, tmp_path):
    out = tmp_path / "b.json"
    proc = edgekit("bench", tiny_run, "--threads", "1,all", "--batch", "1,4", "--runs", "10",
                   "--warmup", "1", "--out", out, "--json")
    report = json.loads(proc.stdout)  # stdout is the JSON alone; warnings go to stderr
    assert report == json.loads(out.read_text())
    assert report["kind"] == "edgekit-bench" and report["schema"] == 2
    cores = report["machine"]["usable_cores"]
    assert report["settings"]["threads"] == list(dict.fromkeys([1, cores]))
    assert report["settings"]["batch"] == [1, 4]
    results = report["results"]
    # Every verified artifact of the export, at every setting.
    rows = json.loads((tiny_run / "export" / "report.json").read_text())["artifacts"]
    files = {r["file"] for r in rows if r["passed"]}
    assert {"model.onnx", "model.int8.onnx", "model.ts"} <= files
    assert {r["file"] for r in results} == files
    assert len(results) == len(files) * 2 * len(report["settings"]["threads"])
    for r in results:
        assert set(r) >= FIELDS and r["model"] == "lenet5" and r["runs"] == 10
        assert r["min_ms"] <= r["ci95_ms"][0] <= r["p50_ms"] <= r["ci95_ms"][1] <= r["max_ms"]
        assert r["throughput_per_s"] == pytest.approx(r["batch"] * 1e3 / r["mean_ms"])
        assert r["noisy"] == (r["cv"] > 0.10)
        assert r["input"] == "held-out samples"
    # One verdict per (batch, threads): a named winner or an explicit tie, never both.
    assert len(report["comparisons"]) == len(results) // len(files)
    for c in report["comparisons"]:
        assert (c["fastest"] is None) == bool(c["tied"])
    assert len(report["warnings"]) == sum(r["noisy"] for r in results)


def test_table_time_budget_and_noise_summary(tiny_run, tmp_path):
    proc = edgekit("bench", tiny_run / "export" / "model.onnx", tiny_run / "export" / "model.ts",
                   "--seconds", "0.2", "--out", tmp_path / "b.json")
    head, header = proc.stdout.splitlines()[:2]
    assert "0.2 s per artifact" in head and "interleaved in 5 rounds" in head
    assert header.split()[:6] == ["artifact", "precision", "batch", "threads", "runs", "p50"]
    verdict = proc.stdout.splitlines()[-2]
    assert verdict.startswith("lenet5, batch 1, ") and (
        "fastest: " in verdict or "no clear winner: " in verdict)
    report = json.loads((tmp_path / "b.json").read_text())
    assert all(r["runs"] >= 5 for r in report["results"])
    assert report["settings"]["runs"] is None and report["settings"]["seconds"] == 0.2
    # Noise goes to stderr, one line per noisy result (folded into one line past three).
    warnings = [x for x in proc.stderr.splitlines() if x.startswith("warning: ")]
    noisy = len(report["warnings"])
    assert len(warnings) == (noisy if noisy <= 3 else 1)


def test_a_run_directory_skips_artifacts_that_failed_their_check(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    report_path = run / "export" / "report.json"
    report = json.loads(report_path.read_text())
    for row in report["artifacts"]:
        row["passed"] = row["file"] != "model.int8.onnx"
    report_path.write_text(json.dumps(report))
    # "run" is a directory here, not a subcommand: only `compare` is one.
    proc = edgekit("bench", "run", "--runs", "5", "--warmup", "0", cwd=tmp_path)
    assert "model.int8.onnx" not in proc.stdout and "model.onnx" in proc.stdout
    assert "skipped: run/export/model.int8.onnx: failed its export check" in proc.stderr
    assert (run / "export" / "bench.json").is_file()  # beside the artifacts, for `summary`


def test_bad_settings_get_one_line_before_any_timing(tiny_run, tmp_path):
    onnx = tiny_run / "export" / "model.onnx"
    assert bad("bench", onnx, "--threads", "0") == (
        "error: --threads '0': expected positive whole numbers separated by commas, e.g. 1,8, "
        "or 'all'")
    assert bad("bench", onnx, "--batch", "1,x") == (
        "error: --batch '1,x': expected positive whole numbers separated by commas, e.g. 1,8")
    assert bad("bench", onnx, "--runs", "5", "--seconds", "1") == (
        "error: give --runs or --seconds, not both")
    assert bad("bench", onnx, "--seconds", "0") == "error: --seconds 0: expected a time budget > 0"
    empty = tmp_path / "run"
    (empty / "export").mkdir(parents=True)
    (empty / "export" / "report.json").write_text(json.dumps({"artifacts": []}))
    assert bad("bench", empty) == f"error: '{empty}' has no verified artifact to benchmark"


def test_the_suite_json_and_a_bench_json_compare_into_a_table_and_a_png(tiny_run, tmp_path):
    """Done when: `make bench` JSON + an `edgekit bench --json` file -> table and PNG."""
    suite = tmp_path / "suite.json"
    # Not an xdist worker's variables: pytest-benchmark would take the child for a worker and
    # disable itself (make test runs this suite on pytest-xdist workers).
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST")},
           "EDGEKIT_BENCH_MODELS": "lenet5",
           "EDGEKIT_BENCH_RUNS": f"lenet5={tiny_run}"}  # the session's run: no training here
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", str(ROOT / "benchmarks"), "-q", "-p", "no:cacheprovider",
         "-k", "lenet5-onnx-b1 or lenet5-onnx-int8-b1", "--benchmark-only",
         f"--benchmark-json={suite}", "--benchmark-max-time=0.02", "--benchmark-min-rounds=5"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads(suite.read_text())
    facts = data["machine_info"]["edgekit"]  # the conftest hook put the machine facts there
    assert {"arch", "cpu", "isa", "emulated", "versions"} <= set(facts)
    assert "onnxruntime" in facts["versions"]
    names = {b["name"] for b in data["benchmarks"]}
    assert "test_latency[lenet5-onnx-b1-tall]" in names  # "all", not this machine's count

    # Another machine's file: the same suite, its facts those of an emulated aarch64.
    other = tmp_path / "arm.json"
    data["machine_info"]["edgekit"] = {**facts, "arch": "aarch64", "cpu": "Cortex-A72",
                                       "cores": 4, "usable_cores": 4, "emulated": True}
    for b in data["benchmarks"]:
        b["stats"]["median"] *= 40
        if b["extra_info"]["threads"] > 1:
            b["extra_info"]["threads"] = 4
    other.write_text(json.dumps(data))
    proc = subprocess.run([Path(sys.executable).with_name("pytest-benchmark"), "compare",
                           suite, other], capture_output=True, text=True)
    assert proc.returncode == 0 and "test_latency[lenet5-onnx-b1-tall] (" in proc.stdout

    bench_json = tmp_path / "bench.json"
    edgekit("bench", tiny_run, "--runs", "20", "--warmup", "2", "--json", "--out", bench_json)
    png = tmp_path / "x86-vs-arm.png"
    out = edgekit("bench", "compare", suite, bench_json, other, "--chart", png).stdout
    lines = out.splitlines()
    assert lines[0].startswith("A: x86_64 ") and "(pytest-benchmark, baseline)" in lines[0]
    assert "(edgekit bench)" in lines[1]
    assert lines[2].startswith("C: aarch64 Cortex-A72, 4 cores, EMULATED (qemu-user)")
    table = "\n".join(lines[lines.index("") + 1:])
    for artifact in ("model.onnx", "model.int8.onnx"):
        row = next(x for x in table.splitlines() if f" {artifact} " in x and " all " in x)
        assert row.split()[-1] == "40x"  # C over A, both from the suite
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
