"""The real CLI in subprocesses: train -> export -> predict -> bench -> summary, and bad input."""

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import edgekit

pytestmark = pytest.mark.slow


def test_version_and_help_on_every_command():
    assert edgekit("--version").stdout.strip().startswith("edgekit, version ")
    script = Path(sys.executable).with_name("edgekit")  # the installed console script
    out = subprocess.run([script, "--version"], capture_output=True, text=True, check=True)
    assert out.stdout == edgekit("--version").stdout
    for cmd in ("recipes", "train", "export", "predict", "bench", "summary"):
        out = edgekit(cmd, "--help").stdout
        assert out.startswith(f"Usage: python -m edgekit {cmd}"), out


def test_recipes_lists_the_bundled_recipes():
    out = edgekit("recipes").stdout
    assert "lenet5" in out and "digits" in out


def test_train_writes_a_complete_run(tiny_run):
    names = {p.name for p in tiny_run.iterdir()}
    assert {"recipe.yaml", "model.safetensors", "metrics.json", "curves.png", "train.log",
            "sample.png", "export"} <= names
    resolved = yaml.safe_load((tiny_run / "recipe.yaml").read_text())
    assert resolved["train"]["epochs"] == 2  # the --set override, saved
    assert resolved["export"]["opset"] == 18  # and the defaults, filled in
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    assert len(metrics["history"]) == 2
    assert 0.5 < metrics["test_accuracy"] <= 1.0
    assert (tiny_run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_export_writes_verified_artifacts_and_manifest(tiny_run):
    out = tiny_run / "export"
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest["artifacts"]) == {"model.onnx", "model.int8.onnx", "model.ts",
                                          "model.int8.ts"}
    for name, entry in manifest["artifacts"].items():
        assert entry["sha256"] == hashlib.sha256((out / name).read_bytes()).hexdigest()
    report = json.loads((out / "report.json").read_text())
    rows = {r["file"]: r for r in report["artifacts"]}
    assert all(r["passed"] for r in rows.values())
    assert rows["model.onnx"]["max_abs_diff"] <= 1e-3
    assert rows["model.int8.onnx"]["bytes"] < rows["model.onnx"]["bytes"] / 2
    assert "| model.int8.onnx | onnx | int8 |" in (out / "report.md").read_text()
    with np.load(out / "samples.npz", allow_pickle=False) as z:
        assert z["x"].shape == (16, 1, 32, 32) and z["y"].shape == (16,)


@pytest.mark.parametrize("artifact", ["model.onnx", "model.int8.onnx", "model.ts"])
def test_predict_an_image(tiny_run, artifact):
    out = edgekit("predict", tiny_run / "export" / artifact, tiny_run / "sample.png", "-k", "3")
    lines = out.stdout.strip().splitlines()
    assert lines[0].endswith(f"-> {artifact}")
    assert len(lines) == 4 and lines[1].lstrip().startswith("1. ")
    probs = [float(line.split()[-1]) for line in lines[1:]]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0001


def test_predict_a_shipped_sample(tiny_run):
    out = edgekit("predict", tiny_run / "export" / "model.onnx", "--sample", "0", "-k", "1")
    assert "held-out sample 0 (label " in out.stdout


def test_bench_writes_stats_and_machine(tiny_run, tmp_path):
    export = tiny_run / "export"
    out = edgekit("bench", export / "model.onnx", export / "model.int8.onnx", export / "model.ts",
                  "--runs", "20", "--warmup", "2", "--out", tmp_path / "b.json")
    assert "p50 ms" in out.stdout and "model.int8.onnx" in out.stdout
    report = json.loads((tmp_path / "b.json").read_text())
    assert report["machine"]["arch"] and report["machine"]["cores"] >= 1
    assert "onnxruntime" in report["machine"]["versions"]
    for r in report["results"]:
        assert r["runs"] == 20
        assert 0 < r["min_ms"] <= r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"]
    assert [r["backend"] for r in report["results"]] == ["onnxruntime"] * 2 + ["torchscript"]


def test_summary_prints_one_table(tiny_run):
    edgekit("bench", tiny_run / "export" / "model.onnx", "--runs", "5", "--warmup", "1")
    out = edgekit("summary", tiny_run).stdout
    for name in ("pytorch (trained)", "model.onnx", "model.int8.onnx", "model.ts", "p50 ms"):
        assert name in out


def bad(*args, cwd=None):
    proc = edgekit(*args, check=False, cwd=cwd)
    assert proc.returncode != 0, proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_unknown_recipe(tmp_path):
    line = bad("train", "lenet6", "--out", tmp_path / "r")
    assert line.startswith("error: unknown recipe 'lenet6'; expected one of:") and "lenet5" in line
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("override, message", [
    ("train.epoch=3", "error: unknown recipe key 'train.epoch'"),
    ("train.epochs=three", "error: train.epochs: expected int, got 'three'"),
])
def test_bad_set_writes_nothing(tmp_path, override, message):
    line = bad("train", "lenet5", "--set", override, "--out", tmp_path / "r")
    assert line.startswith(message)
    assert list(tmp_path.iterdir()) == []


def test_train_refuses_an_existing_run(tiny_run):
    line = bad("train", "lenet5", "--out", tiny_run)
    assert "already exists" in line


def test_missing_run_directory(tmp_path):
    assert "does not exist" in bad("export", tmp_path / "nope", "--onnx")
    assert "does not exist" not in bad("export", tmp_path, "--onnx")  # exists, but not a run
    assert "is not a run directory" in bad("export", tmp_path, "--onnx")
    assert not (tmp_path / "export").exists()


def test_export_needs_a_format(tiny_run):
    assert "nothing to export" in bad("export", tiny_run)
    assert "--int8 quantizes the ONNX and/or TorchScript and/or ExecuTorch model: add --onnx " \
        "and/or --torchscript and/or --pte" in bad("export", tiny_run, "--int8")


def test_artifact_that_is_not_a_model(tiny_run, tmp_path):
    fake = tmp_path / "model.onnx"
    fake.write_bytes(b"\x00garbage" * 100)
    assert "is not a valid ONNX model" in bad("predict", fake, tiny_run / "sample.png")
    fake_ts = tmp_path / "model.ts"
    fake_ts.write_bytes(b"PK\x03\x04nope")
    assert "is not a valid TorchScript model" in bad("predict", fake_ts, "--sample", "0")
    weights = tiny_run / "model.safetensors"
    assert "unknown format '.safetensors'" in bad("predict", weights, tiny_run / "sample.png")
    assert "does not exist" in bad("bench", tmp_path / "missing.onnx")


def test_image_that_is_not_an_image(tiny_run, tmp_path):
    text = tmp_path / "digit.png"
    text.write_text("this is not a PNG")
    line = bad("predict", tiny_run / "export" / "model.onnx", text)
    assert line.startswith(f"error: '{text}' is not an image")
    assert "does not exist" in bad("predict", tiny_run / "export" / "model.onnx",
                                   tmp_path / "missing.png")
    empty = tmp_path / "empty"  # a folder is searched for images; this one has none
    empty.mkdir()
    line = bad("predict", tiny_run / "export" / "model.onnx", empty)
    assert line.startswith(f"error: folder '{empty}' holds no image files; expected files "
                           "ending in .png, .jpg")


def test_folders_where_files_are_expected(tmp_path):
    line = bad("train", tmp_path, "--out", tmp_path / "r")
    assert line == f"error: recipe file '{tmp_path}' is not a file; expected a .yaml recipe"
    folder = tmp_path / "model.onnx"
    folder.mkdir()
    line = bad("bench", folder)  # a folder is fine for bench if it is a run: this one is not
    assert line == (f"error: '{folder}' is a directory but not a run or export directory (no "
                    "export/report.json); expected an artifact file (.onnx, .ts) or a run "
                    "exported with `edgekit export`")


def test_predict_argument_errors(tiny_run):
    onnx = tiny_run / "export" / "model.onnx"
    line = bad("predict", onnx)
    assert "give INPUT files or folders" in line and "--sample N" in line
    assert "--sample 99: expected 0 to 15" in bad("predict", onnx, "--sample", "99")


def test_failed_check_keeps_the_previous_export(tiny_run, tmp_path):
    """An export whose parity check fails leaves the old export untouched and no temp files."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    before = {p.name: p.read_bytes() for p in (run / "export").iterdir()}
    recipe = yaml.safe_load((run / "recipe.yaml").read_text())
    recipe["export"]["parity_atol"] = 0.0  # onnxruntime's fp32 is never bit-exact with torch
    (run / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    line = bad("export", run, "--onnx", "--torchscript")
    assert line.startswith("error: export check failed: model.onnx differs from PyTorch by")
    assert "nothing was written" in line
    assert {p.name: p.read_bytes() for p in (run / "export").iterdir()} == before
    # No staging folder is left; the export lock (an empty file that flock holds) stays.
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(".")
                  and p.name != ".export.lock") == []


def test_out_that_cannot_be_a_directory_fails_before_training(tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("")
    line = bad("train", "lenet5", "--out", blocker / "run")
    assert line.startswith("error: ") and "afile" in line
    assert "epoch=" not in line


def test_bench_out_that_is_a_directory_fails_before_timing(tiny_run, tmp_path):
    line = bad("bench", tiny_run / "export" / "model.onnx", "--out", tmp_path)
    assert line == f"error: --out '{tmp_path}' is a directory; expected a .json file path"


def test_bench_out_that_cannot_be_written_fails_before_timing(tiny_run, tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("")
    proc = edgekit("bench", tiny_run / "export" / "model.onnx", "--out", blocker / "b.json",
                   check=False)
    assert proc.returncode == 1 and proc.stdout == ""  # no timing table: nothing was measured
    assert proc.stderr.startswith("error: cannot write there (a file stands where its folder")
    assert proc.stderr.rstrip().endswith(f"'{blocker / 'b.json'}'")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_decompression_bomb_is_refused(tiny_run, tmp_path):
    from PIL import Image

    bomb = tmp_path / "bomb.png"
    Image.new("1", (20000, 20000)).save(bomb)  # 400 M pixels, a few KB on disk
    line = bad("predict", tiny_run / "export" / "model.onnx", bomb)
    assert line.startswith(f"error: '{bomb}' has more than 179 megapixels; edgekit decodes at "
                           "most 16.8 megapixels for this model: resize the image first")


@pytest.mark.parametrize("damage", ["metrics.json", "model.safetensors", "recipe.yaml"])
def test_damaged_run_is_named(tiny_run, tmp_path, damage):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / damage).write_bytes(b"\x00\x01 not what it should be {")
    line = bad("export", run, "--onnx")
    assert line.startswith(f"error: run '{run}'")
    assert sorted(p.name for p in (run / "export").iterdir()) == sorted(
        p.name for p in (tiny_run / "export").iterdir())


def test_export_refuses_data_that_differ_from_training(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    recipe = yaml.safe_load((run / "recipe.yaml").read_text())
    recipe["data"]["split_seed"] = 3  # another held-out split: "test" accuracy would be inflated
    (run / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    line = bad("export", run, "--onnx")
    assert "differ from those the run was trained and tested on" in line


def test_artifacts_carry_their_own_manifest(tiny_run, tmp_path):
    """A model file copied alone (no manifest.json beside it) still predicts."""
    for name in ("model.onnx", "model.int8.onnx", "model.ts"):
        shutil.copy(tiny_run / "export" / name, tmp_path / name)
        out = edgekit("predict", tmp_path / name, tiny_run / "sample.png", "-k", "1").stdout
        with_manifest = edgekit("predict", tiny_run / "export" / name, tiny_run / "sample.png",
                                "-k", "1").stdout
        assert out.splitlines()[1:] == with_manifest.splitlines()[1:]


def test_manifest_beside_a_foreign_or_changed_model(tiny_run, tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    export = tmp_path / "export"
    shutil.copytree(tiny_run / "export", export)
    # A model of someone else's, with int32 input, dropped beside an edgekit manifest.
    graph = helper.make_graph(
        [helper.make_node("Cast", ["ids"], ["out"], to=TensorProto.FLOAT)], "g",
        [helper.make_tensor_value_info("ids", TensorProto.INT32, ["b", 4])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["b", 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.save(model, export / "ids.onnx")
    line = bad("predict", export / "ids.onnx", tiny_run / "sample.png")
    assert "takes (ids: tensor(int32)); edgekit runs models with one float32 or int64 input" \
        in line
    # An edgekit model whose bytes no longer match manifest.json and carry no manifest inside.
    stripped = onnx.load(export / "model.onnx")
    del stripped.metadata_props[:]
    onnx.save(stripped, export / "model.onnx")
    line = bad("predict", export / "model.onnx", tiny_run / "sample.png")
    assert "does not match the sha256 in manifest.json" in line


def test_wrong_input_shape_is_one_line(tiny_run):
    proc = subprocess.run(
        [sys.executable, "-c",
         "import numpy as np, edgekit.runtime as rt\n"
         f"r = rt.load({str(tiny_run / 'export' / 'model.onnx')!r})\n"
         "r.run(np.zeros((1, 3, 28, 28), np.float32))"],
        capture_output=True, text=True)
    assert ("edgekit.errors.EdgekitError: model.onnx takes input 'input' of shape "
            "(B, 1, 32, 32) float32; got shape (1, 3, 28, 28)") in proc.stderr
