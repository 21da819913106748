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

    x86 = facts("x86_64-amd-epyc-zen4.txt", "x86_64", 4)
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
    from edgekit.benchmark.abuse import abuse, send
    from edgekit.benchmark.loadtest import served

    # a 1 MB limit and 2 MB bodies: the refused bodies drain well within the server's 5 s for
    # that on a loaded machine (16 MB ones raced it)
    with served(table_model, "--max-body", str(1024 * 1024)) as server:
        report = abuse(server.url, b"age,sex\n50,Male\n", "text/csv", clients=4,
                       requests=100, big_repeats=2, big=2 * 1024 * 1024)
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

    from edgekit.benchmark.loadtest import served

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


# -- issue 24: idle, slow and half-closed connections; work past its deadline ----------------

def connect(url: str):
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return socket.create_connection((parts.hostname, parts.port), timeout=30)


def closed_by_server(s) -> bytes:
    """What the server sent before closing `s` (b"" if nothing); fails if it never closes."""
    got = b""
    while chunk := s.recv(65536):
        got += chunk
    return got


def test_health_answers_while_a_thousand_idle_connections_are_open(table_model):
    from edgekit.benchmark.abuse import send
    from edgekit.benchmark.loadtest import served

    with served(table_model) as server:
        idle = [connect(server.url) for _ in range(1000)]
        try:
            assert send(server.url + "/health", "GET", b"", "", 30) == 200
            status, body = post(server.url, b"age,sex\n50,Male\n", "text/csv")
            assert status == 200 and body["label"] == "high"
        finally:
            for s in idle:
                s.close()
        assert send(server.url + "/health", "GET", b"", "", 30) == 200


def test_over_max_connections_the_oldest_idle_one_is_closed(table_model):
    from edgekit.benchmark.abuse import send
    from edgekit.benchmark.loadtest import served

    with served(table_model, "--max-connections", "4") as server:
        oldest = connect(server.url)
        time.sleep(0.2)
        others = [connect(server.url) for _ in range(3)]
        # a fifth connection (urllib's) makes room by closing the one idle the longest
        assert send(server.url + "/health", "GET", b"", "", 30) == 200
        assert closed_by_server(oldest) == b""
        for s in others:
            s.close()


def test_a_slowloris_head_gets_a_408_and_an_idle_client_is_closed(table_model):
    from edgekit.benchmark.abuse import send
    from edgekit.benchmark.loadtest import served

    with served(table_model, "--header-timeout", "1") as server:
        idle, slow = connect(server.url), connect(server.url)
        slow.sendall(b"GET /health HTTP/1.1\r\n")
        for byte in b"Host: x\r\nX-Slow: " + b"a" * 40:  # a byte at a time, never ending
            try:
                slow.sendall(bytes([byte]))
            except OSError:
                break
            time.sleep(0.05)
        answer = closed_by_server(slow)
        assert answer.startswith(b"HTTP/1.1 408 ")
        assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["status"] == 408
        assert closed_by_server(idle) == b""
        assert send(server.url + "/health", "GET", b"", "", 30) == 200


@pytest.mark.parametrize("request_bytes", [
    b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n",
    b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\nContent-Length: 16\r\n\r\n"
    b"age,sex\n50,Male\n"])
def test_a_half_closed_client_gets_its_answer(table_model, request_bytes):
    import socket

    from edgekit.benchmark.loadtest import served

    with served(table_model) as server:
        s = connect(server.url)
        s.sendall(request_bytes)
        s.shutdown(socket.SHUT_WR)
        answer = closed_by_server(s)
        assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
        assert b'"status"' in answer or b'"label"' in answer


def test_work_past_its_deadline_keeps_at_most_the_workers_and_not_the_process(tmp_path):
    """Four jobs that never end on two workers: each request times out, the two queued jobs
    never start, and the process still exits (the threads are daemons). A deadline of 5 s: the
    two running jobs must start within it, which a loaded machine still does (0.5 s raced)."""
    script = tmp_path / "stuck.py"
    script.write_text(textwrap.dedent("""
        import asyncio, threading
        from edgekit.runtime.connections import Workers

        started = []
        forever = threading.Event()

        def stuck(i):
            started.append(i)
            forever.wait()

        async def main():
            workers = Workers(2)
            for outcome in await asyncio.gather(
                    *(workers.run(5, stuck, i) for i in range(4)), return_exceptions=True):
                assert isinstance(outcome, TimeoutError), outcome
            print(sorted(started))

        asyncio.run(main())
    """))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[0, 1]"


# -- issue 24: a million-column header, a line without end ------------------------------------

def test_a_million_column_header_is_refused_at_its_first_line(tmp_path, table_model):
    f = tmp_path / "wide.csv"
    f.write_text("age,sex," + ",".join(f"c{i}" for i in range(1_000_000)) + "\n1,Male\n")
    code, _, err = run_cli("predict", table_model, f)
    assert code == 1 and err.startswith(f"error: {f}: line 1 is longer than 384.0 KB")
    assert len(err.splitlines()) == 1


def test_a_wide_header_naming_a_column_twice_is_found_in_one_pass():
    """40,000 names (under the line limit): a count per name, not a scan per name."""
    import io

    from edgekit.runtime.preprocess import tabular

    names = ["age", "sex", *(f"c{i}" for i in range(40_000)), "age"]
    text = ",".join(names) + "\n" + ",".join("1" for _ in names) + "\n"
    with pytest.raises(EdgekitError, match="names column 'age' 2 times"):
        list(tabular.csv_rows(io.StringIO(text), TABULAR, "body"))


def test_a_line_without_end_is_refused_after_reading_its_bound(tmp_path):
    """A 512 MB file of zeros and no newline (sparse on disk): refused once the line limit has
    been read, not held whole."""
    import io

    from edgekit.runtime.preprocess import tabular
    from edgekit.runtime.rows import Counting

    f = tmp_path / "big.csv"
    with open(f, "wb") as out:
        out.truncate(512 * 1024 * 1024)
    with open(f, "rb") as raw:
        counted = Counting(raw)
        with pytest.raises(EdgekitError, match="line 1 is longer than 384.0 KB"):
            list(tabular.csv_rows(tabular.open_csv(f, io.BufferedReader(counted, 1 << 16)),
                                   TABULAR, str(f)))
    assert counted.read_bytes < 4 * tabular.line_limit(TABULAR)


# -- issue 24: a YAML alias bomb in a recipe or a --set value -----------------------------------

def alias_bomb() -> str:
    """Nine levels of ten aliases: 10**9 strings once expanded, 300 bytes as text."""
    levels = ["a0: &a0 [l, l, l, l, l, l, l, l, l, l]"]
    levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    return "\n".join(levels)


def test_a_yaml_alias_bomb_in_a_recipe_is_refused_before_it_expands(tmp_path):
    import resource

    f = tmp_path / "bomb.yaml"
    f.write_text("name: lenet5\ndescription:\n  " + alias_bomb().replace("\n", "\n  ") + "\n")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    code, _, err = run_cli("train", f, "--out", tmp_path / "run")
    assert code != 0 and "line 4 uses a YAML alias (*a0)" in err, err
    assert len(err.splitlines()) == 1 and len(err) < 300
    # under 100 MB: the bomb would be gigabytes; ru_maxrss is in KB
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100 * 1024
    assert not (tmp_path / "run").exists()


def test_a_yaml_alias_bomb_in_a_set_value_is_refused():
    from edgekit.recipe import load_recipe

    value = "{" + alias_bomb().replace("\n", ", ") + "}"
    with pytest.raises(EdgekitError, match=r"--set 'description': line 1 uses a YAML alias"):
        load_recipe("lenet5", ["description=" + value])


# -- issue 24: sizes, counts and threads have an upper bound ------------------------------------

@pytest.mark.parametrize("setting, says", [
    ("data.image_size=100000", "data.image_size: expected at most 4096, got 100000"),
    ("train.epochs=10000000000000000000000",
     "train.epochs: expected at most 100000, got 10000000000000000000000"),
    ("qat.epochs=1000000", "qat.epochs: expected at most 100000, got 1000000"),
    ("data.batch_size=1000000", "data.batch_size: expected at most 65536, got 1000000")])
def test_a_size_over_its_bound_is_one_line_before_training(tmp_path, setting, says):
    code, _, err = run_cli("train", "lenet5", "--set", setting, "--out", tmp_path / "run")
    assert code == 1 and err == f"error: {says}\n"
    assert not (tmp_path / "run").exists()


def test_a_batch_too_big_for_this_machine_is_refused_before_training(tmp_path, monkeypatch):
    from edgekit import machine

    monkeypatch.setattr(machine, "memory_bytes", lambda: 1 << 30)  # a 1 GB machine
    code, _, err = run_cli("train", "lenet5", "--set", "data.image_size=1024", "--out",
                           tmp_path / "run")
    assert code == 1 and err.startswith("error: data.image_size 1024 with data.batch_size 64: "
                                        "one batch of inputs is 768.0 MB")
    assert "this machine has 1.0 GB" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("command", ["predict", "bench", "train", "serve", "tune"])
def test_threads_above_the_usable_cores_are_one_line(tmp_path, table_model, monkeypatch,
                                                     command):
    from edgekit import machine

    monkeypatch.setattr(machine, "usable_cores", lambda: 2)
    rows = tmp_path / "people.csv"
    rows.write_text("age,sex\n50,Male\n")
    args = {"predict": ["predict", table_model, rows, "--threads", "999"],
            "bench": ["bench", table_model, "--threads", "999"],
            "train": ["train", "lenet5", "--set", "train.threads=999", "--out", tmp_path / "r"],
            "serve": ["serve", table_model, "--threads", "999", "--port", "0"],
            "tune": ["tune", table_model.parent, "--threads", "1,999"]}
    code, _, err = run_cli(*args[command])
    source = "train.threads" if command == "train" else "--threads"
    assert code == 1 and err == (f"error: {source} 999: this machine has 2 usable core(s); "
                                 "expected 1 to 2\n")


# -- issue 24: two exports of one run; a symlinked folder in the export ------------------------

def test_a_second_holder_of_the_export_lock_waits_and_says_so(tmp_path):
    from edgekit.fileio import exclusive

    lock = tmp_path / ".export.lock"
    code = ("import sys; from edgekit.fileio import exclusive\n"
            "with exclusive(sys.argv[1], 'an export of r'):\n    print('got it', flush=True)\n")
    with exclusive(lock, "an export of r"):
        proc = subprocess.Popen([sys.executable, "-c", code, str(lock)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        assert proc.stderr.readline() == "waiting: an export of r is running in another process\n"
        assert proc.poll() is None  # still waiting while the lock is held
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0 and out == "got it\n"


def test_two_exports_of_one_run_keep_both_and_follow_no_symlink(tmp_path, tiny_run):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.onnx").write_bytes(b"not yours")
    (run / "export" / "linked").symlink_to(outside, target_is_directory=True)
    (run / "export" / "model.link.onnx").symlink_to(outside / "secret.onnx")
    exports = [subprocess.Popen([sys.executable, "-m", "edgekit", "export", str(run), *flags],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
               for flags in (["--torchscript"], ["--onnx", "--fp16"])]
    for proc in exports:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
    listed = json.loads((run / "export" / "manifest.json").read_text())["artifacts"]
    assert {"model.ts", "model.onnx", "model.fp16.onnx", "model.int8.onnx"} <= set(listed)
    assert all((run / "export" / f).is_file() for f in listed)
    assert not (run / "export" / "linked").exists()
    assert not (run / "export" / "model.link.onnx").exists()
    assert (outside / "secret.onnx").read_bytes() == b"not yours"


# -- issue 24: verify checks every listed file; manifest names, tuned.json, small ones ---------

@pytest.fixture
def shipped(tmp_path, table_model) -> Path:
    """An export folder: model.onnx, candidates/model.int8.x.onnx and references.npz, each
    listed in manifest.json with its sha256."""
    import shutil

    from edgekit.fileio import sha256

    folder = tmp_path / "export"
    (folder / "candidates").mkdir(parents=True)
    shutil.copy(table_model, folder / "model.onnx")
    shutil.copy(table_model, folder / "candidates" / "model.int8.x.onnx")
    np.savez(folder / "references.npz", a=np.zeros(2, np.float32))
    manifest = mf.with_files(embedded(folder / "model.onnx"), folder,
                             {"model.onnx": {"format": "onnx", "precision": "fp32"}})
    entry = lambda name: {"bytes": (folder / name).stat().st_size,  # noqa: E731
                          "sha256": sha256(folder / name)}
    manifest["candidates"] = {"candidates/model.int8.x.onnx":
                              entry("candidates/model.int8.x.onnx")}
    manifest["references"] = {"file": "references.npz", **entry("references.npz")}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def embedded(path: Path) -> dict:
    import onnx

    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    return json.loads(props[mf.EMBED_KEY])


@pytest.mark.parametrize("damaged", ["candidates/model.int8.x.onnx", "references.npz"])
def test_verify_checks_candidates_and_references(shipped, damaged):
    code, out, _ = run_cli("verify", shipped)
    assert code == 0 and "ok: 3 artifact(s) match" in out
    with open(shipped / damaged, "r+b") as f:
        f.seek(100)
        f.write(b"\xff")
    code, _, err = run_cli("verify", shipped)
    assert code == 1 and f"{damaged} (mismatch)" in err


@pytest.mark.parametrize("name", ["../x.onnx", "/etc/passwd", "candidates/../../x.onnx"])
def test_verify_refuses_a_listed_path_without_building_it(shipped, name):
    manifest = json.loads((shipped / "manifest.json").read_text())
    manifest["artifacts"][name] = manifest["artifacts"]["model.onnx"]
    (shipped / "manifest.json").write_text(json.dumps(manifest))
    code, out, err = run_cli("verify", shipped)
    assert code == 1 and f"{name} (mismatch)" in err and len(err.splitlines()) == 1
    assert "listed name is a path, not a file in this folder" in out


@pytest.mark.parametrize("how", ["fifo", "dangling link"])
def test_a_manifest_that_is_not_a_file_stops_loading(shipped, how):
    rows = shipped / "people.csv"
    rows.write_text("age,sex\n50,Male\n")
    (shipped / "manifest.json").unlink()
    if how == "fifo":
        os.mkfifo(shipped / "manifest.json")
    else:
        (shipped / "manifest.json").symlink_to(shipped / "gone.json")
    code, _, err = run_cli("predict", shipped / "model.onnx", rows)
    assert code == 1 and "manifest.json' beside model.onnx " in err
    assert "pass --no-verify" in err and len(err.splitlines()) == 1


def retuned(folder: Path, **choice) -> None:
    """A tuned.json choosing model.onnx, changed by `choice` (and `machine`), re-hashed."""
    from edgekit import tuned
    from edgekit.machine import machine_info

    machine = choice.pop("machine", machine_info())
    doc = tuned.write(folder, {"kind": tuned.KIND, "schema": tuned.SCHEMA, "machine": machine,
                               "choice": {"file": "model.onnx", "threads": 1}})
    doc["choice"].update(choice)
    doc["sha256"] = tuned.digest(doc)
    (folder / tuned.FILE).write_text(json.dumps(doc))


@pytest.mark.parametrize("change, says", [
    ({"file": "../x.onnx"}, "chooses '../x.onnx', a path, not a file of"),
    ({"file": "/etc/passwd"}, "chooses '/etc/passwd', a path, not a file of"),
    ({"threads": 3000}, "chooses 3000 threads; this machine has 2 usable core(s)"),
    ({"machine": "x"}, "names the machine it was tuned on as 'x'; expected the object")])
def test_a_rehashed_tuned_json_is_still_refused(shipped, monkeypatch, change, says):
    from edgekit import machine

    monkeypatch.setattr(machine, "usable_cores", lambda: 2)
    retuned(shipped)
    rows = shipped / "people.csv"
    rows.write_text("age,sex\n50,Male\n")
    code, out, _ = run_cli("predict", shipped, rows)
    assert code == 0 and "high" in out
    retuned(shipped, **change)
    code, _, err = run_cli("predict", shipped, rows)
    assert code == 1 and says in err and len(err.splitlines()) == 1


def test_a_header_only_csv_is_one_line_not_an_empty_answer(tmp_path, table_model):
    rows = tmp_path / "header.csv"
    rows.write_text("age,sex\n")
    out_file = tmp_path / "out.jsonl"
    code, out, err = run_cli("predict", table_model, rows, "--out", out_file)
    assert code == 1 and err == f"error: {str(rows)!r}: a header but no rows to predict\n"
    assert not out_file.exists()


def test_a_raw_pickle_is_refused_in_one_line_without_torch_warning(tmp_path):
    import pickle

    raw = tmp_path / "weights.pth"
    raw.write_bytes(pickle.dumps({"conv1.weight": Evil()}, protocol=4))
    out = subprocess.run([sys.executable, "-m", "edgekit", "train", "lenet5", "--set",
                          f"model.pretrained={raw}", "--out", str(tmp_path / "run")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 1 and len(out.stderr.splitlines()) == 1, out.stderr
    assert "Warning" not in out.stderr and str(raw) in out.stderr


# -- issue 24: the GEMM peak is stored unrounded ------------------------------------------------

def test_a_slow_machines_gemm_peak_keeps_its_relation(monkeypatch):
    """A loaded (or Pi) machine's calls of 8.6 ms: the stored GMAC/s is the measured one, not
    one rounded to 0.0 or 3.8, so gmacs == size**3 / best_ms / 1e6 exactly."""
    from edgekit.benchmark import peak, stats

    monkeypatch.setattr(stats, "measure", lambda *a, **kw: np.array([8.63331, 9.1, 9.7]))
    k = peak.measure_gemm("fp32", 1, size=32)
    assert k["best_ms"] == 8.63331 and k["ms"] == 9.1
    assert k["gmacs"] == 32 ** 3 / 8.63331 / 1e6


# -- issue 24: a QAT run never ends worse than its calibrated start ----------------------------

def test_a_qat_run_that_only_gets_worse_keeps_its_calibrated_start(tiny_run, tmp_path):
    """qat.lr=50 wrecks the weights in one epoch: the run keeps epoch 0 (the base's ranges
    calibrated: plain int8, simulated), says so, and its metric is that of epoch 0."""
    pytest.importorskip("executorch")  # the XNNPACK quantizer QAT prepares with
    from edgekit.summary import summarize

    run = tmp_path / "qat"
    code, _, err = run_cli("train", "lenet5", "--set", "qat.epochs=1", "--set", "qat.lr=50",
                           "--set", f"qat.base={tiny_run}", "--set", "train.threads=1",
                           "--out", run, "--no-progress")
    assert code == 0, err
    metrics = json.loads((run / "metrics.json").read_text())
    qat = metrics["qat"]
    assert metrics["history"][0]["test_accuracy"] < qat["start_test_accuracy"]  # wrecked
    assert qat["kept_epoch"] == 0 and metrics["epoch"] == 0
    assert metrics["test_accuracy"] == qat["start_test_accuracy"] == qat["kept_test_accuracy"]
    assert qat["why_kept"].startswith("no QAT epoch beat the calibrated start")
    (run / "export").mkdir()
    (run / "export" / "report.json").write_text(json.dumps(
        {"task": "classification", "pytorch": {"score": 1.0}, "artifacts": [],
         "test_samples": 1}))
    assert "QAT: no QAT epoch beat the calibrated start" in summarize(run)


def test_the_export_report_says_which_qat_epoch_was_kept():
    from edgekit.exporting.int8.qat import markdown
    from edgekit.tasks import get_task

    task = get_task("classification")
    entry = {"base": "runs/demo", "base_accuracy": 1.0, "epochs": 3, "ranges": "learned",
             "int8": [], "kept_epoch": 2, "start_test_accuracy": 0.98,
             "kept_test_accuracy": 0.995}
    line = markdown(entry, task)[1]
    assert "Kept epoch 2: 99.50% held out, simulated int8, against 98.00% for plain int8" in line
    line = markdown({**entry, "kept_epoch": 0, "kept_test_accuracy": 0.98}, task)[1]
    assert "No QAT epoch beat plain int8 of that run (98.00%, simulated)" in line
