"""`edgekit bench compare` on result files from two machines: an x86 host and an emulated Pi.

The files are written here in the two real formats (edgekit bench JSON, pytest-benchmark JSON)
with machine facts parsed from recorded /proc/cpuinfo; test_bench_cli.py compares files that
the real `edgekit bench` and the real benchmark suite wrote.
"""

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgekit import machine
from edgekit.benchmark import compare, format_compare
from edgekit.cli import main

CPUINFO = Path(__file__).parent / "data" / "cpuinfo"
# (artifact file, batch, threads) -> median ms, per machine
X86 = {("model.onnx", 1, 2): 0.5, ("model.int8.onnx", 1, 2): 0.25, ("model.onnx", 1, 1): 0.8,
       ("model.onnx", 8, 2): 3.0, ("model.ts", 1, 2): 1.0}
PI = {("model.onnx", 1, 4): 20.0, ("model.int8.onnx", 1, 4): 5.0, ("model.onnx", 1, 1): 40.0,
      ("pytorch eager", 1, 4): 99.0}


def facts(sample: str, arch: str, cores: int, emulated: bool = False) -> dict:
    text = (CPUINFO / sample).read_text()
    return {"arch": arch, "cpu": machine.cpu_name(text, arch), "cores": cores,
            "usable_cores": cores, "isa": machine.isa_features(text, arch),
            "board": None if emulated else machine.board_model(text), "pi": None,
            "os": "Linux 6.1", "emulated": emulated, "versions": {"python": "3.11.2"}}


def edgekit_json(path: Path, machine_facts: dict, times: dict, model="lenet5") -> Path:
    results = [{"label": f"{model}/{f}", "model": model, "artifact": f"runs/x/export/{f}",
                "file": f, "backend": "onnxruntime", "format": "onnx", "precision": "fp32",
                "bytes": 1000, "batch": b, "threads": t, "runs": 200, "p50_ms": ms,
                "p90_ms": ms * 1.1, "p99_ms": ms * 1.3, "mean_ms": ms, "std_ms": ms * 0.02,
                "min_ms": ms * 0.9, "max_ms": ms * 2, "cv": 0.02, "ci95_ms": [ms * 0.99, ms * 1.01],
                "throughput_per_s": b * 1e3 / ms, "noisy": False}
               for (f, b, t), ms in times.items()]
    path.write_text(json.dumps({"kind": "edgekit-bench", "schema": 2, "machine": machine_facts,
                                "settings": {"runs": 200, "warmup": 20}, "results": results}))
    return path


def pytest_benchmark_json(path: Path, machine_facts: dict, times: dict, model="lenet5") -> Path:
    benchmarks = []
    for (f, b, t), ms in times.items():
        s = ms / 1e3  # pytest-benchmark keeps seconds
        threads = "all" if t == machine_facts["cores"] else t
        name = f"test_latency[{model}-{f}-b{b}-t{threads}]"
        benchmarks.append({
            "group": f"{model} batch {b} threads {threads}", "name": name,
            "fullname": f"benchmarks/test_latency.py::{name}", "params": {"batch": b},
            "extra_info": {"model": model, "path": f, "batch": b, "threads": t, "file": f},
            "stats": {"min": s * 0.9, "max": s * 3, "mean": s * 1.05, "stddev": s * 0.05,
                      "rounds": 50, "median": s, "iqr": s * 0.1, "q1": s, "q3": s * 1.1,
                      "ops": 1 / s, "total": s * 50, "iterations": 1}})
    path.write_text(json.dumps({
        "machine_info": {"node": "pi", "processor": "", "machine": machine_facts["arch"],
                         "python_version": "3.11.2", "cpu": {"count": machine_facts["cores"]},
                         "edgekit": machine_facts},
        "commit_info": {}, "benchmarks": benchmarks, "datetime": "2026-11-26T10:00:00",
        "version": "5.3.1"}))
    return path


@pytest.fixture
def two_machines(tmp_path):
    x86 = edgekit_json(tmp_path / "x86.json",
                       facts("x86_64-amd-epyc-zen4.txt", "x86_64", cores=2), X86)
    pi = pytest_benchmark_json(tmp_path / "pi5-qemu.json",
                               facts("aarch64-raspberry-pi-5.txt", "aarch64", cores=4,
                                     emulated=True), PI)
    return x86, pi


def test_side_by_side_with_ratios_to_the_baseline(two_machines):
    x86, pi = two_machines
    report = compare([x86, pi])
    a, b = report["machines"]
    assert a["label"] == "x86_64 AMD EPYC, 2 cores" and a["kind"] == "edgekit bench"
    assert b["label"] == "aarch64 Cortex-A76, 4 cores, EMULATED (qemu-user)"
    assert b["kind"] == "pytest-benchmark" and b["emulated"]
    rows = {(r["file"], r["batch"], r["threads"]): r for r in report["rows"]}
    # "all" cores matches 2 threads on x86 and 4 on the Pi; 1 thread matches 1 thread. The
    # artifacts only one machine ran (model.ts, batch 8, torch eager) are left out.
    assert set(rows) == {("model.onnx", "1", "all"), ("model.int8.onnx", "1", "all"),
                         ("model.onnx", "1", "1")}
    row = rows[("model.int8.onnx", "1", "all")]
    assert row["ms"] == {"A": 0.25, "B": pytest.approx(5.0)}
    assert row["ratio"]["B"] == pytest.approx(20.0) and row["ratio"]["A"] == 1.0

    text = format_compare(report)
    assert "A: x86_64 AMD EPYC, 2 cores  (edgekit bench, baseline)" in text
    assert "B: aarch64 Cortex-A76, 4 cores, EMULATED (qemu-user)  (pytest-benchmark)" in text
    assert "B ms EMULATED" in text  # the column says it too
    line = next(li for li in text.splitlines() if "model.int8.onnx" in li)
    assert line.split() == ["lenet5", "model.int8.onnx", "1", "all", "0.25", "5", "20x"]


def test_baseline_by_letter_or_file(two_machines):
    x86, pi = two_machines
    for baseline in ("B", str(pi)):
        report = compare([x86, pi], baseline=baseline)
        assert report["baseline"] == "B"
        row = next(r for r in report["rows"] if r["file"] == "model.int8.onnx")
        assert row["ratio"]["A"] == pytest.approx(0.05)
    with pytest.raises(Exception, match="--baseline 'C' is not one of the compared files"):
        compare([x86, pi], baseline="C")


def test_any_threads_matches_each_files_run_with_the_most_threads(tmp_path):
    x86 = edgekit_json(tmp_path / "x86.json", facts("x86_64-amd-epyc-zen4.txt", "x86_64", 2),
                       {("model.onnx", 1, 2): 0.5, ("model.onnx", 1, 1): 0.8})
    one = edgekit_json(tmp_path / "x86-1.json", facts("x86_64-amd-epyc-zen4.txt", "x86_64", 2),
                       {("model.onnx", 1, 1): 0.9})
    two = edgekit_json(tmp_path / "x86-2.json", facts("x86_64-amd-epyc-zen4.txt", "x86_64", 2),
                       {("model.onnx", 1, 2): 0.6})
    with pytest.raises(Exception, match="no artifact in common"):
        compare([two, one])
    report = compare([x86, one], match_threads=False)
    [row] = report["rows"]
    assert row["threads"] == "all/1" and row["ms"] == {"A": 0.5, "B": 0.9}
    # Same machine twice: the labels are told apart by file name on the chart.
    assert [m["name"] for m in report["machines"]] == [
        "x86_64 AMD EPYC, 2 cores [x86.json]", "x86_64 AMD EPYC, 2 cores [x86-1.json]"]


def test_a_result_file_from_before_sweeps_still_compares(tmp_path, two_machines):
    x86, _ = two_machines
    old = tmp_path / "old.json"  # what `edgekit bench` wrote before batch/threads sweeps
    old.write_text(json.dumps({
        "edgekit_version": "0.1.0", "machine": facts("aarch64-raspberry-pi-4.txt", "aarch64", 4),
        "settings": {"runs": 200, "warmup": 20, "threads": 4, "batch": 1},
        "results": [{"artifact": "e/model.onnx", "file": "model.onnx", "backend": "onnxruntime",
                     "precision": "fp32", "bytes": 1, "runs": 200, "p50_ms": 30.0,
                     "p90_ms": 31.0, "p99_ms": 40.0, "mean_ms": 30.5, "std_ms": 6.1,
                     "min_ms": 29.0}]}))
    report = compare([x86, old], match_threads=True)
    [row] = [r for r in report["rows"] if r["ms"]["B"] is not None]
    assert (row["model"], row["file"], row["threads"]) == ("", "model.onnx", "all")
    assert report["machines"][1]["label"] == (
        "aarch64 Raspberry Pi 4 Model B Rev 1.1 (Cortex-A72), 4 cores")
    assert row["noisy"] == ["B"]  # CV 20% from std / mean


def test_chart_names_the_machines_and_labels_the_emulated_one(two_machines, tmp_path):
    pytest.importorskip("matplotlib")
    from edgekit.benchmark.chart import bar_chart, legend_label

    report = compare(list(two_machines))
    out = bar_chart(report, tmp_path / "charts" / "cmp.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    a, b = (legend_label(m, report["baseline"]) for m in report["machines"])
    assert a == "A: x86_64 AMD EPYC, 2 cores (baseline)"
    assert b.startswith("B: aarch64 Cortex-A76, 4 cores, EMULATED (qemu-user)\n(qemu-user")


def run_cli(*args, cwd: Path):
    result = CliRunner().invoke(main, ["bench", "compare", *map(str, args)],
                                catch_exceptions=False, env={"PWD": str(cwd)})
    return result


def test_cli_prints_the_table_and_writes_the_png(two_machines, tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    monkeypatch.chdir(tmp_path)
    result = run_cli(*two_machines, cwd=tmp_path)
    assert result.exit_code == 0, result.output
    assert "B/A" in result.stdout and "EMULATED" in result.stdout
    assert result.stdout.rstrip().endswith("wrote bench-compare.png")
    assert (tmp_path / "bench-compare.png").read_bytes()[:4] == b"\x89PNG"
    result = run_cli(*two_machines, "--json", "--no-chart", cwd=tmp_path)
    assert json.loads(result.stdout)["baseline"] == "A"


def one_line_error(*args) -> str:
    result = CliRunner().invoke(main, ["bench", "compare", *map(str, args), "--no-chart"])
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_files_that_are_not_bench_results_get_one_line(two_machines, tmp_path):
    x86, pi = two_machines
    text = tmp_path / "notes.json"
    text.write_text("not json at all")
    assert one_line_error(x86, text) == (
        f"error: '{text}' is not a bench result (not JSON); expected the JSON written by "
        "`edgekit bench` or by pytest-benchmark (`make bench`, --benchmark-json)")
    other = tmp_path / "manifest.json"
    other.write_text(json.dumps({"format_version": 1, "labels": ["0", "1"]}))
    assert one_line_error(x86, other).startswith(f"error: '{other}' is not a bench result; ")
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"machine": {}, "results": []}))
    assert one_line_error(x86, empty) == f"error: '{empty}' holds no latency results"
    assert one_line_error(x86, tmp_path / "gone.json") == (
        f"error: bench result '{tmp_path / 'gone.json'}' does not exist")
    assert one_line_error(x86) == "error: bench compare needs at least two result files, got 1"


def test_results_with_no_artifact_in_common_get_one_line(two_machines, tmp_path):
    x86, _ = two_machines
    resnet = edgekit_json(tmp_path / "resnet.json",
                          facts("aarch64-raspberry-pi-4.txt", "aarch64", 4),
                          {("model.onnx", 1, 4): 120.0}, model="resnet18")
    line = one_line_error(x86, resnet)
    assert line.startswith(f"error: no artifact in common between '{x86}' (lenet5/model.onnx "
                           "(batch 1, threads all), ")
    assert f"and '{resnet}' (resnet18/model.onnx (batch 1, threads all))" in line
