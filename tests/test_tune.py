"""`edgekit export --keep-candidates`, `edgekit tune`, and predict/serve of a tuned directory.

The slow tests share one lenet5 run exported for a Pi 5 with its candidates; each test that
changes files works on its own copy. Nothing here asserts a timing: which file wins depends on
the machine, so the tests check the mechanism, the output checks and the integrity rules.
"""

from __future__ import annotations

import json
import shutil
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from conftest import edgekit

from edgekit.errors import EdgekitError
from edgekit.fileio import sha256
from edgekit.tasks import get_task
from edgekit.tuning import INT8_RTOL, choose, compare

TUNE = ("--threads", "1", "--seconds", "0.05")


# Fast: the output check and the choice rule, on made-up numbers.

def test_fp32_must_match_tightly_and_int8_loosely():
    task = get_task("classification")
    ref = np.array([[4.0, 1.0, 0.0], [0.0, 1.0, 3.0]], dtype=np.float32)
    assert compare(ref + 1e-4, ref, "fp32", task)["passed"]
    off = compare(ref + 0.1, ref, "fp32", task)
    assert not off["passed"] and "2.5% of their range" in off["why"]
    assert compare(ref + 0.05 * 4, ref, "int8", task)["passed"]  # 5% of the range: rounding
    flipped = compare(ref[:, ::-1].copy(), ref, "int8", task)
    assert not flipped["passed"] and flipped["top1_agreement"] == 0.0
    assert "top-1 agrees on 0% of 2 samples" in flipped["why"]
    assert not compare(ref * (1 + 2 * INT8_RTOL), ref, "int8", task)["passed"]
    assert not compare(ref[:1], ref, "int8", task)["passed"]  # a wrong shape is refused
    nan = compare(np.full_like(ref, np.nan), ref, "fp32", task)
    assert not nan["passed"]


def row(file, threads, p50, low, high, published=False, size=100):
    return {"file": file, "threads": threads, "published": published, "bytes": size,
            "p50_ms": p50, "ci95_ms": [low, high], "check": {"passed": True}}


def test_a_clear_winner_is_chosen():
    choice, line = choose([row("a.onnx", 1, 10, 9, 11), row("b.onnx", 2, 5, 4.5, 5.5)])
    assert (choice["file"], choice["threads"]) == ("b.onnx", 2)
    assert line.startswith("fastest: b.onnx @ 2 threads")


@pytest.mark.parametrize("rows, expected", [
    # Within noise: fewer threads first ...
    ([row("a.onnx", 2, 5.0, 4, 6, published=True), row("a.onnx", 1, 5.2, 4, 6)], ("a.onnx", 1)),
    # ... then the published artifact over a candidate ...
    ([row("candidates/c.onnx", 1, 5.0, 4, 6, size=50), row("m.onnx", 1, 5.1, 4, 6,
                                                           published=True)], ("m.onnx", 1)),
    # ... then the smaller file.
    ([row("m.onnx", 1, 5.0, 4, 6, published=True, size=400),
      row("m.int8.onnx", 1, 5.1, 4, 6, published=True, size=100)], ("m.int8.onnx", 1)),
])
def test_within_noise_the_tie_rule_decides(rows, expected):
    choice, line = choose(rows)
    assert (choice["file"], choice["threads"]) == expected
    assert "no clear winner" in line and "tie rule" in line


def test_nothing_passing_is_an_error_naming_why():
    with pytest.raises(EdgekitError, match="no shipped artifact computes.*x.onnx .1 thread.: off"):
        choose([{"file": "x.onnx", "threads": 1, "refused": "x.onnx (1 thread): off"}])


# Slow: a real run, exported with its candidates.

@pytest.fixture(scope="module")
def shipped_run(tmp_path_factory) -> Path:
    """lenet5, exported for a Pi 5 with --keep-candidates (ONNX and TorchScript, int8)."""
    run = tmp_path_factory.mktemp("tune") / "tiny-pi5"
    edgekit("train", "lenet5", "--set", "train.epochs=2", "--out", run, "--no-progress")
    edgekit("export", run, "--onnx", "--torchscript", "--int8", "--target", "pi5",
            "--max-int8-drop", "5", "--keep-candidates")
    return run


@pytest.fixture
def export(shipped_run, tmp_path) -> Path:
    """A copy of the shipped export directory that a test may change."""
    out = tmp_path / "export"
    shutil.copytree(shipped_run / "export", out)
    return out


def manifest(export: Path) -> dict:
    return json.loads((export / "manifest.json").read_text())


@pytest.mark.slow
def test_export_ships_checked_candidates_with_references(shipped_run):
    export = shipped_run / "export"
    m, report = manifest(export), json.loads((export / "report.json").read_text())
    cands = m["candidates"]
    # The Pi preset's layout is published; the other ARM layout ships as a candidate.
    assert m["artifacts"]["model.int8.onnx"]["layout"] == "qdq-s8s8-pc"
    assert list(cands) == ["candidates/model.int8.qdq-u8s8-pc.onnx"]
    for name, entry in cands.items():
        assert entry["sha256"] == sha256(export / name) and entry["check"] == "passed"
    shipped = [r for r in report["candidates"] if r["passed"] and not r["chosen"]
               and r["format"] == "onnx"]
    assert len(shipped) == len(cands)
    refs = m["references"]
    assert refs["sha256"] == sha256(export / "references.npz")
    assert refs["inputs_sha256"] == sha256(export / "samples.npz")
    with np.load(export / "references.npz") as z, np.load(export / "samples.npz") as s:
        assert set(z.files) == set(refs["files"]) == {*m["artifacts"], *cands}
        assert all(len(z[f]) == len(s["x"]) for f in z.files)


@pytest.mark.slow
def test_tune_writes_tuned_json_that_predict_and_serve_follow(export, tiny_png):
    from edgekit.benchmark.loadtest import served

    out = edgekit("tune", export, "--threads", "1,2", "--seconds", "0.05").stdout
    doc = json.loads((export / "tuned.json").read_text())
    files = {*manifest(export)["artifacts"], *manifest(export)["candidates"]}
    assert {(r["file"], r["threads"]) for r in doc["table"]} == {(f, t) for f in files
                                                                 for t in (1, 2)}
    assert all(r["check"]["passed"] and "p50_ms" in r for r in doc["table"])
    choice = doc["choice"]
    assert choice["file"] in files and choice["threads"] in (1, 2)
    assert doc["machine"]["cpu"] and doc["rule"] and f"choice: {choice['file']}" in out
    proc = edgekit("predict", export, tiny_png)
    assert f"using {choice['file']} with {choice['threads']} thread(s)" in proc.stderr
    assert f"-> {Path(choice['file']).name}" in proc.stdout
    # An artifact path still runs exactly that artifact.
    assert "using" not in edgekit("predict", export / "model.onnx", tiny_png).stderr
    import edgekit as api  # the Python API follows tuned.json the same way

    runner = api.load(export)
    assert runner.path == export / choice["file"]
    assert runner.predict(tiny_png)["label"] == json.loads(
        edgekit("predict", export, tiny_png, "--json").stdout)["label"]
    assert api.load(export / "model.onnx").path == export / "model.onnx"
    with served(export, "--workers", "1") as server, \
            urllib.request.urlopen(f"{server.url}/metadata", timeout=30) as r:
        meta = json.loads(r.read())
    start = next(line for line in server.stderr if line.startswith("edgekit serve:"))
    assert f"{Path(choice['file']).name} (" in start
    assert f"1 worker(s), {choice['threads']} model thread(s)" in start
    assert meta["serving"]["artifact"] == Path(choice["file"]).name


@pytest.fixture(scope="module")
def tiny_png(shipped_run) -> Path:
    return shipped_run / "sample.png"


@pytest.mark.slow
def test_tune_refuses_a_candidate_that_computes_other_outputs(export):
    bad = "candidates/model.int8.qdq-u8s8-pc.onnx"
    with np.load(export / "references.npz") as z:
        refs = {k: z[k] for k in z.files}
    refs[bad] = refs[bad][:, ::-1].copy()  # every sample's classes in another order
    np.savez(export / "references.npz", **refs)
    m = manifest(export)
    m["references"]["sha256"] = sha256(export / "references.npz")  # only the outputs differ
    (export / "manifest.json").write_text(json.dumps(m))
    proc = edgekit("tune", export, *TUNE)
    refused = [line for line in proc.stderr.splitlines() if line.startswith("refused:")]
    assert len(refused) == 1 and refused[0].startswith(f"refused: {bad} (1 thread): outputs "
                                                       "differ from the host's by")
    assert "top-1 agrees on" in refused[0]
    doc = json.loads((export / "tuned.json").read_text())
    assert doc["choice"]["file"] != bad
    assert [r["file"] for r in doc["table"] if not r["check"]["passed"]] == [bad]


@pytest.mark.slow
def test_tune_refuses_a_damaged_shipped_file(export):
    (export / "candidates/model.int8.qdq-u8s8-pc.onnx").write_bytes(b"not a model")
    proc = edgekit("tune", export, *TUNE, check=False)
    assert proc.returncode == 1 and "qdq-u8s8-pc.onnx' does not match the sha256" in proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize("tamper, says", [
    ("threads", "was edited or is damaged"),
    ("choice", "was edited or is damaged"),
    ("not json", "was edited or is damaged"),
    ("artifact", "does not match the sha256 in tuned.json"),
    ("manifest", "was tuned against another export"),
])
def test_a_tampered_tuned_json_is_refused(export, tiny_png, tamper, says):
    edgekit("tune", export, *TUNE)
    path = export / "tuned.json"
    doc = json.loads(path.read_text())
    if tamper == "threads":
        doc["choice"]["threads"] += 1
    elif tamper == "choice":
        doc["choice"]["file"] = next(f for f in manifest(export)["artifacts"]
                                     if f != doc["choice"]["file"])
    if tamper in ("threads", "choice"):
        path.write_text(json.dumps(doc))
    elif tamper == "not json":
        path.write_text("{")
    elif tamper == "artifact":  # the chosen file replaced by another of the export
        other = next(f for f in manifest(export)["artifacts"] if f != doc["choice"]["file"]
                     and Path(f).suffix == Path(doc["choice"]["file"]).suffix)
        shutil.copy(export / other, export / doc["choice"]["file"])
    else:  # re-exported (or edited) since tuning
        m = manifest(export)
        m["note"] = "changed"
        (export / "manifest.json").write_text(json.dumps(m))
    proc = edgekit("predict", export, tiny_png, check=False)
    assert proc.returncode == 1 and says in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_a_directory_without_tuned_json_says_what_to_do(export, tiny_png):
    proc = edgekit("predict", export, tiny_png, check=False)
    assert proc.returncode == 1 and "has no tuned.json: run `edgekit tune" in proc.stderr
    proc = edgekit("serve", export, "--port", "0", check=False)
    assert proc.returncode == 1 and "has no tuned.json" in proc.stderr


@pytest.mark.slow
def test_tune_without_torch_skips_torchscript_and_says_why(export):
    from test_no_torch import cli_blocked

    proc = cli_blocked("tune", export, *TUNE)
    assert proc.returncode == 0, proc.stderr
    skipped = [line for line in proc.stderr.splitlines() if line.startswith("skipped:")]
    assert sorted(skipped) == [f"skipped: {f}: .ts needs torch on this machine: pip install "
                               "'edgekit[train]'; the .onnx artifacts need neither"
                               for f in ("model.int8.ts", "model.ts")]
    doc = json.loads((export / "tuned.json").read_text())
    assert all(r["file"].endswith(".onnx") for r in doc["table"])


@pytest.mark.slow
def test_tune_needs_an_export_directory_with_references(export, tmp_path):
    (tmp_path / "empty").mkdir()
    proc = edgekit("tune", tmp_path / "empty", check=False)
    assert proc.returncode == 1 and "is not an export directory" in proc.stderr
    assert edgekit("tune", tmp_path, *TUNE).returncode == 0  # a run directory: its export/
    m = manifest(export)
    del m["references"]  # as an export without --keep-candidates writes it
    (export / "manifest.json").write_text(json.dumps(m))
    proc = edgekit("tune", export, check=False)
    assert proc.returncode == 1 and "no reference outputs" in proc.stderr
    assert "--keep-candidates" in proc.stderr


@pytest.mark.slow
def test_predict_runs_a_chosen_candidate_with_the_exports_samples(export, tiny_png):
    """Which file wins is the machine's call; a tuned.json that chose a candidate (here
    rewritten with valid checksums, as tune would write it) runs that candidate."""
    from edgekit.machine import usable_cores
    from edgekit.tuned import digest

    edgekit("tune", export, *TUNE)
    doc = json.loads((export / "tuned.json").read_text())
    pick = "candidates/model.int8.qdq-u8s8-pc.onnx"
    doc["choice"].update(file=pick, threads=2,
                         sha256=manifest(export)["candidates"][pick]["sha256"])
    doc["sha256"] = digest(doc)
    (export / "tuned.json").write_text(json.dumps(doc))
    proc = edgekit("predict", export, "--sample", "0")
    assert f"using {pick} with 2 thread(s)" in proc.stderr
    assert "-> model.int8.qdq-u8s8-pc.onnx" in proc.stdout.splitlines()[0]
    proc = edgekit("predict", export, "--sample", "0", "--threads", "1")
    assert f"using {pick} with 1 thread(s)" in proc.stderr
    # Many inputs: the tuned count is one call's best latency; the cores run in lanes instead.
    photos = export.parent / "photos"
    photos.mkdir()
    for i in range(3):
        shutil.copy(tiny_png, photos / f"{i}.png")
    proc = edgekit("predict", export, photos)
    lanes = usable_cores()  # 2 or more: the tuned.json above chose 2 threads
    assert (f"using {pick} with 2 thread(s), as tuned.json chose on this machine; over many "
            f"inputs {lanes} lanes of 1 thread(s)") in proc.stderr
    assert len(proc.stdout.splitlines()) == 3
    assert f"in {lanes} lanes" in proc.stderr.splitlines()[-1]


@pytest.mark.slow
def test_a_re_export_drops_the_previous_candidates_and_tuning(shipped_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(shipped_run, run)
    edgekit("tune", run, *TUNE)
    assert (run / "export" / "tuned.json").is_file()
    edgekit("export", run, "--onnx", "--target", "pi5")  # model.onnx rebuilt, the rest kept
    export = run / "export"
    assert not any((export / f).exists() for f in ("tuned.json", "references.npz",
                                                   "candidates"))
    m = manifest(export)
    assert "candidates" not in m and "references" not in m
    assert "model.int8.onnx" in m["artifacts"]  # kept, as any re-export keeps it
    proc = edgekit("predict", export, "--sample", "0", check=False)
    assert proc.returncode == 1 and "has no tuned.json" in proc.stderr
