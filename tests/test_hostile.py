"""Hostile input, full disks and big files (issue 19): each gives one line, leaves nothing.

Fast and torch-free where it can be: the tabular model is a two-column ONNX graph built here
with onnx.helper; a full disk is a patched writer (and a small tmpfs where mounting one works).
"""

from __future__ import annotations

import errno
import json
import math
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgekit import manifest as mf
from edgekit.cli import main
from edgekit.errors import EdgekitError, excerpt
from edgekit.fileio import atomic_dir, atomic_path, remove_stale

TABULAR = {"kind": "tabular", "columns": [
    {"name": "age", "type": "numeric", "mean": 40.0, "std": 10.0},
    {"name": "sex", "type": "category", "values": ["Female", "Male"], "mean": 0.5, "std": 0.5}]}


def onnx_model(path: Path, node: str, shape: list, weights: list, manifest: dict) -> Path:
    """A one-node ONNX graph (MatMul by `weights`, or Identity) with `manifest` embedded."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    dims = ["batch", *shape[1:]]
    inputs = ["input"] + (["w"] if weights else [])
    init = [helper.make_tensor("w", TensorProto.FLOAT, [2, 2], weights)] if weights else []
    graph = helper.make_graph(
        [helper.make_node(node, inputs, ["output"])], "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, dims)], init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(model, {mf.EMBED_KEY: json.dumps(manifest)})
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def table_model(tmp_path_factory) -> Path:
    """model.onnx: (B, 2) features -> (B, 2) logits [0, age + sex], manifest embedded."""
    manifest = mf.make_manifest(recipe="t", model="m", task="classification",
                                input_name="input", input_shape=[None, 2], preprocess=TABULAR,
                                labels=["low", "high"])
    return onnx_model(tmp_path_factory.mktemp("table") / "model.onnx", "MatMul", [None, 2],
                      [0, 1, 0, 1], manifest)


@pytest.fixture(scope="module")
def text_model(tmp_path_factory) -> Path:
    """model.onnx: 5 characters of "helo", one-hot (B, 5, 4) -> the same as per-step scores."""
    from edgekit.runtime.preprocess.text import text_spec

    manifest = mf.make_manifest(recipe="t", model="m", task="sequence_classification",
                                input_name="input", input_shape=[None, 5, 4],
                                preprocess=text_spec(list("helo"), 5), labels=list("helo"))
    return onnx_model(tmp_path_factory.mktemp("text") / "model.onnx", "Identity", [None, 5, 4],
                      [], manifest)


def run_cli(*args) -> tuple[int, str, str]:
    r = CliRunner().invoke(main, [str(a) for a in args])
    if r.exception and not isinstance(r.exception, SystemExit):
        raise r.exception
    return r.exit_code, r.stdout, r.stderr


# -- 1, 2: a full disk, a read-only folder, too many files; staging folders always removed ----

@pytest.mark.parametrize("code, says", [
    (errno.ENOSPC, "its disk is full"), (errno.EACCES, "permission denied"),
    (errno.EROFS, "read-only file system"), (errno.EMFILE, "too many open files")])
def test_a_failed_write_is_one_line_naming_the_folder_and_leaves_no_stage(tmp_path, code, says):
    out = tmp_path / "run" / "export"
    with pytest.raises(EdgekitError, match=says) as e, atomic_dir(out) as stage:
        (stage / "model.onnx").write_bytes(b"x" * 1000)
        raise OSError(code, os.strerror(code))
    assert str(out.parent) in str(e.value) and ".tmp" not in str(e.value)
    assert os.listdir(out.parent) == []
    with pytest.raises(EdgekitError, match=says), atomic_path(tmp_path / "a.json") as tmp:
        tmp.write_text("half")
        raise OSError(code, os.strerror(code))
    assert sorted(os.listdir(tmp_path)) == ["run"]


def test_a_library_failure_on_a_full_disk_names_the_disk_not_the_symptom(tmp_path, monkeypatch):
    from google.protobuf.message import DecodeError

    out = tmp_path / "export"
    with pytest.raises(DecodeError), atomic_dir(out):  # plenty of space: a real bug, kept
        raise DecodeError("Wire format was corrupt")
    monkeypatch.setattr("edgekit.diskfull.free_bytes", lambda folder: 12)
    with pytest.raises(EdgekitError, match=r"disk is full \(12 bytes free.*DecodeError"), \
            atomic_dir(out):
        raise DecodeError("Wire format was corrupt")
    # A failure inside the stage (torch's c10::Error) names the user's folder, not the stage.
    with pytest.raises(EdgekitError, match="disk is full") as e, atomic_dir(out) as stage, \
            atomic_path(stage / "model.ts"):
        raise RuntimeError("[enforce fail at inline_container.cc:672] unexpected pos")
    assert f"cannot write into {str(tmp_path)!r}" in str(e.value) and ".tmp" not in str(e.value)
    assert os.listdir(tmp_path) == []


def test_stale_stages_of_dead_processes_are_removed_and_live_ones_kept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    live = str(os.getppid())
    for name in (f".export.{dead}.abc.tmp", f".export.{live}.abc.tmp", f".export.old-{dead}"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.onnx").write_bytes(b"partial")
    (tmp_path / f".report.json.{dead}.xyz.tmp").write_text("half")
    (tmp_path / ".export.notes").write_text("not ours")
    with atomic_dir(tmp_path / "export") as stage:
        (stage / "manifest.json").write_text("{}")
    assert set(os.listdir(tmp_path)) == {".export.notes", f".export.{live}.abc.tmp",
                                         f".report.json.{dead}.xyz.tmp", "export"}
    assert remove_stale(tmp_path / "report.json") == [tmp_path / f".report.json.{dead}.xyz.tmp"]
    # Killed after moving the previous export aside, before moving the new one in: put back.
    (tmp_path / "export").rename(tmp_path / f".export.old-{dead}")
    remove_stale(tmp_path / "export")
    assert (tmp_path / "export" / "manifest.json").is_file()


def test_torchscript_is_written_from_python_so_a_full_disk_raises_not_aborts(tmp_path):
    """torch's own writer aborts the process (c10::Error, exit 134) on a full disk."""
    pytest.importorskip("torch")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)],
                      capture_output=True).returncode:
        pytest.skip("mounting a small tmpfs needs root")
    try:
        code = textwrap.dedent(f"""
            import torch
            from edgekit.exporting.formats.torchscript import export_torchscript
            model = torch.nn.Linear(200, 200)  # 160 KB of weights: over the 64 KB disk
            try:
                export_torchscript(model, torch.zeros(2, 200), {str(mnt / 'model.ts')!r}, {{}})
            except OSError as e:
                print("errno", e.errno)
        """)
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=300)
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
    assert proc.returncode == 0, proc.stderr[-500:]
    assert proc.stdout.strip() == f"errno {errno.ENOSPC}"


# -- 5: bounded excerpts ---------------------------------------------------------------------

def test_excerpt_bounds_what_an_error_quotes():
    assert excerpt("hello") == "'hello'"
    long = excerpt("x" * 20_000_000)
    assert len(long) < 140 and "(20000000 characters)" in long
    assert "(300 bytes)" in excerpt(b"\x00" * 300)
    assert excerpt(5) == "5"


def test_a_long_text_gives_a_short_error(tmp_path, text_model):
    code, out, err = run_cli("predict", text_model, "--text", "hello")
    assert code == 0 and out.strip() == "hello"
    code, _, err = run_cli("predict", text_model, "--text", "h" * 10_000)
    assert code == 1 and len(err) < 300 and "10000 characters" in err
    big = tmp_path / "big.txt"
    big.write_text("hel" * 7_000_000 + "x")  # 20 MB
    code, _, err = run_cli("predict", text_model, big)
    assert code == 1 and len(err) < 400 and "21000001 characters" in err


# -- 3, 9, 10: CSV fields, huge one-row inputs, duplicate columns, the file named --------------

def test_a_field_over_the_csv_limit_is_one_line(tmp_path, table_model):
    f = tmp_path / "big.csv"
    f.write_text("age,sex\n" + "1" * 200_000 + ",Male\n")
    code, out, err = run_cli("predict", table_model, f)
    assert code == 1 and err.startswith(f"error: {f}: line 2 holds a field longer than 128 KB")
    assert len(err) < 300


def test_a_many_row_csv_as_one_input_is_refused_after_two_rows(tmp_path, table_model,
                                                               monkeypatch):
    from edgekit.runtime import load
    from edgekit.runtime.preprocess import tabular

    f = tmp_path / "many.csv"
    f.write_text("age,sex\n" + "30,Male\n" * 10_000)
    parsed = []
    monkeypatch.setattr(tabular, "csv_rows", counting(tabular.csv_rows, parsed))
    with pytest.raises(EdgekitError, match="holds more than 1 row"):
        load(table_model).predict(f)
    assert len(parsed) == 2  # not 10,000


def test_a_json_table_too_big_to_parse_whole_is_refused(tmp_path, table_model, monkeypatch):
    from edgekit.runtime.preprocess import tabular

    monkeypatch.setattr(tabular, "JSON_LIMIT", 1000)
    f = tmp_path / "people.json"
    f.write_text(json.dumps([{"age": 30, "sex": "Male"}] * 100))
    code, _, err = run_cli("predict", table_model, f)
    assert code == 1 and "is a JSON table of 2.7 KB; JSON is read whole" in err


def counting(gen, seen: list):
    def wrapped(*a, **kw):
        for item in gen(*a, **kw):
            seen.append(item)
            yield item
    return wrapped


@pytest.mark.parametrize("text, says", [
    ("age,sex,age\n30,Male,50\n", "names column 'age' 2 times"),
    ('{"age": 30, "sex": "Male", "age": 50}', "column 'age' is given twice")])
def test_a_column_given_twice_is_refused(tmp_path, table_model, text, says):
    f = tmp_path / ("dup.json" if text.startswith("{") else "dup.csv")
    f.write_text(text)
    code, _, err = run_cli("predict", table_model, f)
    assert code == 1 and says in err


def test_errors_name_the_file_when_several_are_given(tmp_path, table_model):
    from edgekit.runtime import load
    from edgekit.runtime.preprocess.array import ArrayKind

    good, bad = tmp_path / "a.json", tmp_path / "b.json"
    good.write_text('{"age": 30, "sex": "Male"}')
    bad.write_text('{"age": "old", "sex": "Male"}')
    code, _, err = run_cli("predict", table_model, good, bad)
    assert code == 1 and "b.json" in err and "expected a number, got 'old'" in err
    with pytest.raises(EdgekitError, match=r"c.json.*expected numbers of shape"):
        (tmp_path / "c.json").write_text("[1, 2, 3]")
        ArrayKind().prepare(tmp_path / "c.json", {"kind": "array", "shape": [2]})
    assert load(table_model).predict({"age": 50, "sex": "Male"})["label"] == "high"


# -- 8: many-row tables ---------------------------------------------------------------------

def write_people(path: Path, n: int, bad: dict[int, str] | None = None) -> Path:
    bad = bad or {}
    with open(path, "w") as f:
        f.write("age,sex\n")
        for i in range(1, n + 1):
            f.write(bad.get(i, f"{20 + i % 50},{'Male' if i % 3 else 'Female'}") + "\n")
    return path


def test_predict_writes_every_row_of_a_table_in_order(tmp_path, table_model):
    people = write_people(tmp_path / "people.csv", 1000)
    code, out, err = run_cli("predict", table_model, people, "--out", tmp_path / "p.csv",
                             "--batch", "64")
    assert code == 0, err
    lines = (tmp_path / "p.csv").read_text().splitlines()
    assert lines[0] == "input,row,label,probability,error" and len(lines) == 1001
    assert [int(line.split(",")[1]) for line in lines[1:]] == list(range(1, 1001))
    assert "1000 input(s)" in err and "wrote 1000 result(s)" in err
    code, out, _ = run_cli("predict", table_model, people, "--json")
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["row"] for r in rows] == list(range(1, 1001))
    x = np.array([[(20 + i % 50 - 40) / 10, ((i % 3 > 0) - 0.5) / 0.5] for i in range(1, 1001)])
    high = x.sum(1) > 0
    assert [r["label"] == "high" for r in rows] == high.tolist()


def test_a_bad_row_is_named_and_stops_or_is_skipped_and_counted(tmp_path, table_model):
    people = write_people(tmp_path / "people.csv", 100, {7: "seven,Male", 50: "30,Robot",
                                                         60: "30"})
    code, out, err = run_cli("predict", table_model, people)
    assert code == 1
    assert err.strip() == (f"error: {str(people)!r} row 7 (line 8): column 'age': expected a "
                           "number, got 'seven'")
    code, out, err = run_cli("predict", table_model, people, "--skip-bad", "--json")
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert len(rows) == 100 and [r["row"] for r in rows if "error" in r] == [7, 50, 60]
    assert "unseen category 'Robot'" in rows[49]["error"]
    assert "line 61 has 1 fields" in rows[59]["error"]
    assert "97 input(s), 3 skipped" in err


def test_a_table_streams_in_bounded_memory(tmp_path, table_model):
    """Rows are read a batch at a time: after the first result, the reader has taken one
    buffer's worth (64 KB) of a 500 KB table, not the table."""
    from edgekit.runtime import load
    from edgekit.runtime.rows import predict_rows
    from edgekit.runtime.throughput import Throughput

    people = write_people(tmp_path / "people.csv", 60_000)
    stats = Throughput(100)
    results = predict_rows(load(table_model), [people], batch=100, stats=stats)
    assert next(results)["row"] == 1
    assert 0 < stats.bytes_read <= 2 * 65536 < people.stat().st_size // 3
    assert sum(1 for _ in results) == 59_999
    assert stats.bytes_read == people.stat().st_size and stats.inputs == 60_000


def test_the_progress_bar_of_a_table_follows_its_bytes(tmp_path, table_model):
    from edgekit.cli.predict import _progress
    from edgekit.runtime.batch import predict

    class Bar:
        pos = 0

        def update(self, n):
            assert n >= 0
            self.pos += n

    people = [write_people(tmp_path / f"p{i}.csv", 3000) for i in range(2)]
    run = predict(table_model, people, batch=100)
    bar = Bar()
    for _ in run.results:
        _progress(bar, run)
    assert run.count is None and bar.pos == run.total_bytes == sum(
        p.stat().st_size for p in people)


# -- 4: pixel bombs -------------------------------------------------------------------------

SPEC = {"kind": "image", "mode": "L", "size": [32, 32], "resample": "bilinear",
        "scale": 1 / 255, "mean": [0.5], "std": [0.5]}


def test_a_pixel_bomb_is_refused_before_it_is_decoded(tmp_path):
    from PIL import Image

    from edgekit.runtime.preprocess import get_kind

    bomb = tmp_path / "bomb.png"
    Image.new("L", (12000, 12000)).save(bomb)  # ~140 KB on disk, 144 MB decoded
    assert bomb.stat().st_size < 500_000
    script = textwrap.dedent(f"""
        import re
        from edgekit.runtime.preprocess import get_kind
        spec = {SPEC!r}
        try:
            get_kind(spec).prepare({str(bomb)!r}, spec)
        except ValueError as e:
            print(e)
        status = open("/proc/self/status").read()  # VmHWM: this process's peak RSS (kB)
        print(int(re.search(r"VmHWM:\\s+(\\d+)", status)[1]) // 1024)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    message, peak_mb = proc.stdout.strip().splitlines()
    assert "is 12000x12000 pixels (144.0 megapixels); this model takes 32x32" in message
    assert proc.stderr == ""  # no DecompressionBombWarning
    assert int(peak_mb) < 144
    jpeg = tmp_path / "big.jpg"
    Image.new("L", (8000, 6000), 128).save(jpeg)  # 48 MP: decoded at 1/8 scale
    x = get_kind(SPEC).prepare(jpeg, SPEC)
    assert x.shape == (1, 32, 32) and abs(float(x.mean())) < 0.05


# -- 6: a hidden state of the wrong shape ---------------------------------------------------

def test_a_state_of_the_wrong_shape_names_the_expected_one():
    from test_runtime_kinds import ARRAY, Accumulator, manifest

    m = manifest(task="sequence_regression", pre=ARRAY, labels=["y"], shape=(None, 10, 1),
                 state={"input": "state", "output": "state_out", "shape": [1, None, 1]})
    runner = Accumulator(m)
    x = np.ones((1, 10, 1), np.float32)
    for bad in (np.zeros(16, np.float32), np.zeros((2, 1, 1), np.float32), "zeros",
                np.zeros((1, 1, 1), np.int64)):
        runner.state = bad
        with pytest.raises(EdgekitError, match=r"state must be a float32 array of shape "
                                               r"\(1, B, 1\)"):
            runner.run(x)
    runner.state = np.full((1, 1, 1), 5.0)  # float64 of the right shape: taken
    assert runner.run(x)[0, -1, 0] == 15


# -- 7: impossible latencies ----------------------------------------------------------------

@pytest.mark.parametrize("p50", [0, math.nan, -5])
def test_bench_compare_refuses_impossible_latencies(tmp_path, p50):
    from test_bench_compare import edgekit_json, facts

    x86 = facts("x86_64-amd-epyc-zen5.txt", "x86_64", 4)
    a = edgekit_json(tmp_path / "a.json", x86, {("model.onnx", 1, 1): 2.0})
    b = edgekit_json(tmp_path / "b.json", x86, {("model.onnx", 1, 1): 2.0})
    data = json.loads(b.read_text())
    data["results"][0]["p50_ms"] = p50  # NaN is written as NaN, which json reads back
    b.write_text(json.dumps(data))
    code, out, err = run_cli("bench", "compare", a, b, "--no-chart")
    assert code == 1 and out == ""
    assert f"{str(b)!r}: lenet5/model.onnx (batch 1, threads 1) has a median latency of" in err


# -- 5, 11: serve drains what it refuses, takes many rows, survives an abuse run ------------

def test_serve_answers_hostile_requests_and_many_rows(table_model, text_model):
    """A short abuse run (loopback, bounded): no connection error, each bad request its 4xx."""
    from edgekit.bench.abuse import abuse, send
    from edgekit.bench.loadtest import served

    with served(table_model) as server:
        report = abuse(server.url, b"age,sex\n50,Male\n", "text/csv", clients=4,
                       requests=100, big_repeats=2)
        assert report["ok"], report
        rows = "age,sex\n" + "".join(f"{20 + i % 50},Male\n" for i in range(3000))
        status, body = post(server.url, rows.encode(), "text/csv")
        assert status == 200 and body["count"] == 3000
        assert [r["row"] for r in body["results"]] == list(range(1, 3001))
        # ages 29, 30, 31 (Male): age + sex standardized is < 0, 0, > 0
        assert [r["label"] for r in body["results"][9:12]] == ["low", "low", "high"]
        status, body = post(server.url, rows.replace("45,Male", "45,Robot").encode(),
                            "text/csv")
        assert status == 400 and body["error"].startswith("body row 26 (line 27): column 'sex'")
        assert send(server.url + "/health", "GET", b"", "", 10) == 200
    with served(text_model, "--max-body", str(11 * 1024 * 1024)) as server:
        status, body = post(server.url, b"h" * 10_000_000, "text/plain")
        assert status == 400 and len(body["error"]) < 300
        assert "10000000 characters" in body["error"]


def test_serve_bounds_the_bodies_it_holds_at_once(table_model):
    """Four bodies of 90 KB in progress (sent in part) hold 360 KB of the 400 KB that
    --max-body 100000 allows at once: a fifth gets 503, and once they go, it is served."""
    import socket
    from urllib.parse import urlsplit

    from edgekit.bench.loadtest import served

    body = b"age,sex\n" + b"50,Male\n" * 11_000  # 88 KB
    with served(table_model, "--max-body", "100000") as server:
        parts = urlsplit(server.url)
        held = []
        for _ in range(4):
            s = socket.create_connection((parts.hostname, parts.port), timeout=10)
            s.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\n"
                      + f"Content-Length: {len(body)}\r\n\r\n".encode() + body[:1000])
            held.append(s)
        status, answer = 0, {}
        for _ in range(50):  # until the server has read the four requests' headers
            status, answer = post(server.url, body, "text/csv")
            if status == 503:
                break
            time.sleep(0.1)
        assert status == 503 and "bytes of request bodies in progress" in answer["error"]
        for s in held:
            s.close()
        for _ in range(50):
            status, answer = post(server.url, body, "text/csv")
            if status == 200:
                break
            time.sleep(0.1)
        assert status == 200 and answer["count"] == 11_000


def post(url: str, body: bytes, content_type: str) -> tuple[int, dict]:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url + "/predict", data=body,
                                     headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


# -- export without RUN; torch's advice not passed on ---------------------------------------

def test_export_without_run_takes_the_latest_finished_run(tmp_path, monkeypatch):
    from edgekit.rundir import latest_run

    monkeypatch.chdir(tmp_path)
    with pytest.raises(EdgekitError, match="no finished run under 'runs'.*edgekit train RECIPE"):
        latest_run()
    for name, files in (("a", ["recipe.yaml", "model.safetensors", "metrics.json"]),
                        ("b", ["recipe.yaml", "model.safetensors", "metrics.json"]),
                        ("c", ["recipe.yaml", "checkpoint.pt"])):  # c: stopped mid-training
        (tmp_path / "runs" / name).mkdir(parents=True)
        for f in files:
            (tmp_path / "runs" / name / f).write_text("x")
    os.utime(tmp_path / "runs" / "b" / "metrics.json", (1, 1))  # b finished long ago
    assert latest_run() == Path("runs") / "a"
    for f in ("a", "b"):
        (tmp_path / "runs" / f / "metrics.json").unlink()
    with pytest.raises(EdgekitError, match=r"edgekit train --resume runs/c"):
        latest_run()
    code, _, err = run_cli("export", "--onnx")
    assert code == 1 and err.startswith("error: no finished run under 'runs' to export")


def test_torch_load_errors_drop_the_advice_to_unpickle(tmp_path):
    torch = pytest.importorskip("torch")
    from edgekit.checkpoint import load

    path = tmp_path / "checkpoint.pt"
    torch.save({"x": Evil()}, path)
    with pytest.raises(EdgekitError) as e:
        load(path)
    assert "it holds Python objects, not only tensors" in str(e.value)
    assert "weights_only" not in str(e.value) and "\x1b" not in str(e.value)


class Evil:
    """Not a tensor: what torch.load(weights_only=True) refuses to unpickle."""


def test_predict_and_serve_agree_on_the_default_top_k():
    from edgekit.cli.common import TOP_K
    from edgekit.runtime.serve import Limits

    defaults = {c.name: {p.name: p.default for p in c.params}
                for c in (main.commands["predict"], main.commands["serve"])}
    assert defaults["predict"]["k"] == defaults["serve"]["k"] == Limits().k == TOP_K
