"""The device runtime: integrity, bad inputs, batch/folder prediction, devices (issue 9).

CLI tests run the real click commands in-process (CliRunner: one line on stderr, exit status,
stdout), which is what `edgekit ...` runs, without paying a Python start-up per case.
"""

from __future__ import annotations

import json
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from edgekit import manifest as mf
from edgekit.cli import main
from edgekit.errors import EdgekitError, EdgekitWarning
from edgekit.runtime import load
from edgekit.runtime import onnx as ort_runner

pytestmark = pytest.mark.slow  # uses tiny_run (a trained and exported lenet5)


def cli(*args) -> tuple[int, str, str]:
    """Run `edgekit ARGS` in-process: (exit code, stdout, stderr)."""
    result = CliRunner().invoke(main, [str(a) for a in args])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def bad(*args) -> str:
    """Run a command that must fail: exit 1, nothing on stdout, one line on stderr."""
    code, out, err = cli(*args)
    assert code == 1, (code, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.fixture
def export(tiny_run, tmp_path) -> Path:
    """A private copy of tiny_run's export folder, free to damage."""
    return Path(shutil.copytree(tiny_run / "export", tmp_path / "export"))


@pytest.fixture(scope="module")
def runner(tiny_run):
    return load(tiny_run / "export" / "model.onnx")


def files_in(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


# -- integrity -------------------------------------------------------------------------------

def test_bit_flip_fails_with_one_sha256_line(export, tiny_run):
    model = export / "model.onnx"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF  # the case: one byte in the middle
    model.write_bytes(bytes(data))
    before = files_in(export)
    line = bad("predict", model, tiny_run / "sample.png")
    assert line == (f"error: '{model}' does not match the sha256 in manifest.json: the file is "
                    "damaged or was replaced; copy or export it again (or pass --no-verify to "
                    "load it anyway)")
    with pytest.raises(EdgekitError, match="does not match the sha256"):
        load(model)
    assert "sha256" not in " ".join(cli("predict", model, tiny_run / "sample.png",
                                        "--no-verify")[1:])  # the override loads it
    load(model, verify=False)
    assert files_in(export) == before  # nothing written, nothing "repaired"


def listed(export: Path) -> list[str]:
    return list(json.loads((export / "manifest.json").read_text())["artifacts"])


def test_verify_passes_on_a_fresh_export(tiny_run):
    code, out, err = cli("verify", tiny_run / "export")
    assert code == 0, err
    rows = {line.split()[0]: line.split()[2] for line in out.splitlines()[2:-1]}
    names = listed(tiny_run / "export")
    assert {"model.onnx", "model.int8.onnx", "model.ts"} <= set(names)
    assert rows == dict.fromkeys(names, "ok")
    assert out.splitlines()[-1].startswith(f"ok: {len(names)} artifact(s) match")
    assert cli("verify", tiny_run / "export" / "manifest.json")[0] == 0
    assert cli("verify", tiny_run / "export" / "model.ts")[0] == 0  # one artifact


def test_verify_fails_on_a_tampered_export(export):
    (export / "model.int8.onnx").write_bytes((export / "model.int8.onnx").read_bytes()[:-1] + b"x")
    (export / "model.ts").unlink()
    shutil.copy(export / "model.onnx", export / "extra.onnx")  # unlisted: reported, not failed
    code, out, err = cli("verify", export)
    assert code == 1
    names = listed(export)
    assert err.strip() == (f"error: 2 of {len(names)} listed artifact(s) failed verification: "
                           "model.int8.onnx (mismatch), model.ts (missing)")
    status = {line.split()[0]: line.split()[2] for line in out.splitlines()[2:]}
    want = {**dict.fromkeys(names, "ok"), "model.int8.onnx": "mismatch", "model.ts": "missing",
            "extra.onnx": "unlisted"}
    assert status == want
    assert {r["file"]: r["status"] for r in mf.verify_export(export)} == want


@pytest.mark.parametrize("damage, message", [
    ("missing", "has no manifest.json; expected an export directory"),
    ("empty", "manifest.json is empty; expected the JSON manifest `edgekit export` writes"),
    ("malformed", "manifest is not valid JSON"),
    ("not an object", "manifest must be a JSON object, got list"),
    ("no labels", "manifest is missing labels"),
    ("bad preprocess", "manifest preprocess size [32]; expected [height, width]"),
    ("no checksums", "manifest artifacts must map each file name to its sha256"),
])
def test_verify_names_a_bad_manifest(export, damage, message):
    path = export / "manifest.json"
    good = json.loads(path.read_text())
    if damage == "missing":
        path.unlink()
    elif damage == "empty":
        path.write_text("")
    elif damage == "malformed":
        path.write_text(path.read_text()[:-20])
    elif damage == "not an object":
        path.write_text("[1, 2]")
    else:
        if damage == "no labels":
            del good["labels"]
        elif damage == "bad preprocess":
            good["preprocess"]["size"] = [32]
        else:
            good["artifacts"] = {"model.onnx": "abc"}
        path.write_text(json.dumps(good))
    assert message in bad("verify", export)


@pytest.mark.parametrize("damage", ["empty", "malformed", "no labels"])
def test_a_bad_manifest_beside_the_model_stops_loading(export, tiny_run, damage):
    """Its checksum can't be checked, so the model is not trusted either (--no-verify skips)."""
    path = export / "manifest.json"
    good = json.loads(path.read_text())
    if damage == "empty":
        path.write_text("")
    elif damage == "malformed":
        path.write_text("{")
    else:
        del good["labels"]
        path.write_text(json.dumps(good))
    line = bad("predict", export / "model.onnx", tiny_run / "sample.png")
    assert line.startswith(f"error: {path}") and "pass --no-verify" in line
    code, out, _ = cli("predict", export / "model.onnx", tiny_run / "sample.png", "--no-verify")
    assert code == 0 and "1. " in out  # the embedded manifest still describes the model


def test_missing_manifest_everywhere(tiny_run, tmp_path):
    onnx = pytest.importorskip("onnx")
    proto = onnx.load(tiny_run / "export" / "model.onnx")
    del proto.metadata_props[:]  # no embedded manifest, and no manifest.json beside it
    onnx.save(proto, tmp_path / "model.onnx")
    line = bad("predict", tmp_path / "model.onnx", tiny_run / "sample.png")
    assert "carries no edgekit manifest (labels, preprocessing) and no manifest.json" in line
    assert load(tmp_path / "model.onnx").run(np.zeros((1, 1, 32, 32), np.float32)).shape \
        == (1, 10)  # raw arrays need no manifest
    assert "has no manifest.json" in bad("verify", tmp_path)


@pytest.mark.parametrize("damage, with_manifest, message", [
    ("empty", True, "is empty (0 bytes); expected a .onnx model"),
    ("truncated", True, "does not match the sha256 in manifest.json"),
    ("truncated", False, "is not a valid ONNX model"),
    ("text", False, "is not a valid ONNX model"),
])
def test_damaged_model_files(export, tiny_run, tmp_path, damage, with_manifest, message):
    model = export / "model.onnx"
    if not with_manifest:
        model = Path(shutil.copy(model, tmp_path / "alone.onnx"))
    data = model.read_bytes()
    model.write_bytes({"empty": b"", "truncated": data[:len(data) // 2],
                       "text": b"this is not a model\n"}[damage])
    assert message in bad("predict", model, tiny_run / "sample.png")
    assert message in bad("bench", model, "--runs", "1", "--out", tmp_path / "b.json")
    assert not (tmp_path / "b.json").exists()


# -- model inputs: shape, dtype, count, NaN ----------------------------------------------------

@pytest.mark.parametrize("shape, hint", [
    ((1, 3, 32, 32), ""),
    ((1, 1, 28, 28), ""),
    ((1, 32, 32), " (one input without its batch dimension: pass x[None])"),
    ((0, 1, 32, 32), " (an empty batch)"),
    ((2, 1, 1, 32, 32), ""),
])
def test_wrong_input_shape_is_one_line(runner, shape, hint):
    with pytest.raises(EdgekitError) as e:
        runner.run(np.zeros(shape, np.float32))
    assert str(e.value) == ("model.onnx takes input 'input' of shape (B, 1, 32, 32) float32; "
                            f"got shape {shape}{hint}")


@pytest.mark.parametrize("value, dtype", [
    (np.zeros((1, 1, 32, 32), np.complex64), "complex64"),
    (np.zeros((1, 1, 32, 32), bool), "bool"),
    (np.full((1, 1, 32, 32), "a"), "<U1"),
    (np.zeros((1, 1, 32, 32), object), "object"),
    (np.zeros((1, 1, 32, 32), "datetime64[s]"), "datetime64[s]"),
])
def test_wrong_input_dtype_is_one_line(runner, value, dtype):
    with pytest.raises(EdgekitError) as e:
        runner.run(value)
    assert str(e.value) == f"model.onnx takes float32 input (real numbers); got dtype {dtype}"


def test_real_number_dtypes_are_cast(runner):
    x = np.random.default_rng(0).integers(0, 3, (2, 1, 32, 32))
    want = runner.run(x.astype(np.float32))
    for dtype in (np.float64, np.float16, np.int64, np.uint8, np.int8):
        np.testing.assert_allclose(runner.run(x.astype(dtype)), want, rtol=1e-6)
    np.testing.assert_allclose(runner.run(x.tolist()), want, rtol=1e-6)  # nested lists too
    np.testing.assert_allclose(runner.run(np.asfortranarray(x, np.float32)), want, rtol=1e-6)


def _two_input_model(path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "h"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 4]),
         helper.make_tensor_value_info("h", TensorProto.FLOAT, ["b", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.save(model, path)


def test_wrong_number_of_inputs_is_one_line(tiny_run, tmp_path):
    _two_input_model(tmp_path / "two.onnx")
    line = bad("predict", tmp_path / "two.onnx", tiny_run / "sample.png")
    assert line == (f"error: '{tmp_path / 'two.onnx'}' takes (x: tensor(float), "
                    "h: tensor(float)); edgekit runs models with one float32 or int64 input "
                    "(and a hidden state when the manifest names one)")


def test_nan_and_inf_inputs_warn_and_still_run(runner, export):
    x = np.zeros((2, 1, 32, 32), np.float32)
    x[0, 0, 3, 4], x[1, 0, 0, 0] = np.nan, np.inf
    with pytest.warns(EdgekitWarning, match=r"the input holds 2 NaN/inf value\(s\) of 2048"):
        assert runner.run(x).shape == (2, 10)
    big = np.full((1, 1, 32, 32), 3e38, np.float32)  # finite, near float32's limit
    with warnings_as_errors():
        runner.run(big)  # no false alarm, no overflow warning from the check itself
    for value in (np.nan, np.inf, -np.inf):
        for i in (0, 511, 1023):  # wherever it sits
            y = np.zeros((1, 1, 32, 32), np.float32)
            y.reshape(-1)[i] = value
            with pytest.warns(EdgekitWarning, match=r"holds 1 NaN/inf"):
                runner.run(y)
    # Through the CLI: a held-out sample file holding NaN gives one warning line, exit 0.
    with np.load(export / "samples.npz") as z:
        xs, ys = z["x"].copy(), z["y"]
    xs[0, 0, 0, :5] = np.nan
    np.savez(export / "samples.npz", x=xs, y=ys)
    code, out, err = cli("predict", export / "model.onnx", "--sample", "0", "--json")
    assert code == 0
    assert err.strip() == ("warning: model.onnx: the input holds 5 NaN/inf value(s) of 1024; "
                           "the outputs may be meaningless")
    json.loads(out)  # still valid JSON (non-finite probabilities would be null)


class warnings_as_errors:
    def __enter__(self):
        import warnings

        self._cm = warnings.catch_warnings()
        self._cm.__enter__()
        warnings.simplefilter("error")

    def __exit__(self, *exc):
        return self._cm.__exit__(*exc)


# -- images: what gets converted, what is refused ---------------------------------------------

def _png16(path: Path, gray: np.ndarray) -> None:
    """Write a real 16-bit grayscale PNG (color type 0, bit depth 16) byte by byte."""
    h, w = gray.shape
    raw = b"".join(b"\x00" + gray[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 0, 0,
                                                                        0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def test_16bit_png_is_scaled_to_8_bits_not_clipped(runner, tiny_run, tmp_path):
    eight = np.asarray(Image.open(tiny_run / "sample.png").convert("L"))
    _png16(tmp_path / "sixteen.png", eight.astype(np.uint16) * 257)
    assert Image.open(tmp_path / "sixteen.png").mode.startswith("I")  # Pillow reads 16 bits
    np.testing.assert_array_equal(runner.prepare(tmp_path / "sixteen.png"),
                                  runner.prepare(tiny_run / "sample.png"))
    code, out, _ = cli("predict", runner.path, tmp_path / "sixteen.png", "--json")
    assert code == 0
    assert json.loads(out)["label"] == runner.predict(tiny_run / "sample.png")["label"]


def test_palette_png_is_converted_through_its_palette(runner, tiny_run, tmp_path):
    rgb = Image.open(tiny_run / "sample.png").convert("RGB")
    pal = rgb.quantize(colors=256)
    pal.info["transparency"] = 0  # a transparent index: alpha is ignored, colors are kept
    pal.save(tmp_path / "palette.png", transparency=0)
    assert Image.open(tmp_path / "palette.png").mode == "P"
    want = runner.prepare(pal.convert("RGB"))
    np.testing.assert_array_equal(runner.prepare(tmp_path / "palette.png"), want)


def test_images_with_no_range_are_refused(tiny_run, tmp_path):
    Image.fromarray(np.ones((8, 8), np.float32)).save(tmp_path / "float.tif")
    line = bad("predict", tiny_run / "export" / "model.onnx", tmp_path / "float.tif")
    assert line.endswith("is a 32-bit floating-point image; expected an 8- or 16-bit image "
                         "(PNG, JPEG, ...)")
    Image.fromarray(np.full((8, 8), 70000, np.int32)).save(tmp_path / "int32.tif")
    line = bad("predict", tiny_run / "export" / "model.onnx", tmp_path / "int32.tif")
    assert "values outside 0..65535" in line


def test_empty_and_fake_images(tiny_run, tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    line = bad("predict", tiny_run / "export" / "model.onnx", tmp_path / "empty.png")
    assert line == (f"error: image '{tmp_path / 'empty.png'}' is empty (0 bytes); expected an "
                    "image file (PNG, JPEG, ...)")
    (tmp_path / "half.png").write_bytes((tiny_run / "sample.png").read_bytes()[:60])
    line = bad("predict", tiny_run / "export" / "model.onnx", tmp_path / "half.png")
    assert line.startswith(f"error: '{tmp_path / 'half.png'}' is not an image Pillow can read")


# -- folders, batches, --json -----------------------------------------------------------------

@pytest.fixture(scope="module")
def folder(tiny_run, tmp_path_factory) -> Path:
    """Ten held-out digits as PNGs, one in a subfolder, plus files predict must skip."""
    from edgekit.runtime.preprocess import image as image_kind

    root = tmp_path_factory.mktemp("digits")
    manifest = json.loads((tiny_run / "export" / "manifest.json").read_text())
    spec = manifest["preprocess"]
    with np.load(tiny_run / "export" / "samples.npz") as z:
        xs = z["x"][:10]
    for i, x in enumerate(xs):  # undo the normalization: the 32x32 8-bit image training saw
        pixels = (x[0] * spec["std"][0] + spec["mean"][0]) * 255
        img = Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), "L")
        target = root / ("sub" if i == 9 else "") / f"d{i}.png"
        target.parent.mkdir(exist_ok=True)
        img.save(target)
    (root / "notes.txt").write_text("not an image; skipped because of its suffix")
    (root / ".hidden").mkdir()
    Image.new("L", (32, 32)).save(root / ".hidden" / "x.png")
    assert image_kind.SUFFIXES[0] == ".png"
    return root


def test_predict_a_folder_in_batches(runner, folder):
    code, out, err = cli("predict", runner.path, folder, "--batch", "4", "-k", "2")
    assert code == 0, err
    lines = out.splitlines()
    names = [Path(line.split()[0]).relative_to(folder).as_posix() for line in lines]
    assert names == [f"d{i}.png" for i in range(9)] + ["sub/d9.png"]  # sorted, recursive
    for line, name in zip(lines, names, strict=True):
        want = runner.predict(folder / name, k=2)
        got = line.split()[1:]
        assert got[0] == want["label"] and got[2] == want["top"][1]["label"]
        assert float(got[1]) == pytest.approx(want["probability"], abs=1e-4)
    assert err.startswith("10 input(s) in ") and "inputs/s end to end, batch 4" in err
    assert len(err.strip().splitlines()) == 1  # not a terminal: no progress bar, one line


def test_predict_warms_the_model_up_before_the_first_input(runner, folder, monkeypatch):
    """Lazy imports and first-run allocations are paid while loading, not by the run's clock:
    one prediction of the kind's example before any input is read."""
    from edgekit.runtime import Runner
    from edgekit.runtime.batch import predict

    events = []
    warm, prepare = Runner.warm_up, Runner.prepare
    monkeypatch.setattr(Runner, "warm_up", lambda self: (events.append("warm"), warm(self)))
    monkeypatch.setattr(Runner, "prepare", lambda self, raw, media_type=None: (
        events.append(str(raw) if isinstance(raw, Path) else "example"),
        prepare(self, raw, media_type))[1])
    p = predict(runner.path, [folder], batch=4)
    assert events == ["warm", "example"]  # set up: no input read yet
    inputs = [r["input"] for r in p.results]  # in input order; lanes read them in any order
    assert sorted(events[2:]) == sorted(inputs) and len(inputs) == 10


def test_batch_size_does_not_change_results(runner, folder):
    one = [json.loads(line) for line in cli("predict", runner.path, folder, "--json",
                                            "--batch", "1")[1].splitlines()]
    many = [json.loads(line) for line in cli("predict", runner.path, folder, "--json",
                                             "--batch", "7")[1].splitlines()]
    assert [r["input"] for r in one] == [r["input"] for r in many]
    for a, b in zip(one, many, strict=True):
        assert a["label"] == b["label"]
        assert a["probability"] == pytest.approx(b["probability"], abs=1e-5)


def test_json_for_one_input_and_for_many(runner, folder, tiny_run):
    code, out, err = cli("predict", runner.path, tiny_run / "sample.png", "--json", "-k", "3")
    assert code == 0 and err == ""
    result = json.loads(out)
    assert result["input"] == str(tiny_run / "sample.png")
    assert [t["label"] for t in result["top"]][0] == result["label"]
    assert len(result["top"]) == 3 and result == {"input": result["input"],
                                                  **runner.predict(tiny_run / "sample.png", 3)}
    code, out, err = cli("predict", runner.path, folder / "d0.png", folder / "sub", "--json")
    results = [json.loads(line) for line in out.splitlines()]
    assert [Path(r["input"]).name for r in results] == ["d0.png", "d9.png"]
    assert all(set(r) == {"input", "label", "probability", "top"} for r in results)
    code, out, _ = cli("predict", runner.path, "--sample", "2", "--json")
    assert json.loads(out)["input"] == "held-out sample 2" and "true_label" in json.loads(out)


def test_a_bad_file_in_a_folder(runner, folder, tmp_path):
    mixed = Path(shutil.copytree(folder, tmp_path / "mixed"))
    (mixed / "d3.png").write_text("not a png")
    line = bad("predict", runner.path, mixed, "--batch", "4")
    assert line.startswith(f"error: '{mixed / 'd3.png'}' is not an image Pillow can read")
    code, out, err = cli("predict", runner.path, mixed, "--batch", "4", "--skip-bad", "--json")
    assert code == 0
    results = [json.loads(line) for line in out.splitlines()]
    assert len(results) == 10
    assert results[3]["error"].startswith(f"'{mixed / 'd3.png'}' is not an image")
    assert all("label" in r for i, r in enumerate(results) if i != 3)
    assert err.startswith("9 input(s), 1 skipped in ")


def test_input_arguments(runner, tmp_path):
    line = bad("predict", runner.path)
    assert "give INPUT files or folders" in line and "--sample N" in line
    assert "does not exist; expected a file or a folder" in bad("predict", runner.path,
                                                               tmp_path / "nope")
    assert "holds no image files" in bad("predict", runner.path, tmp_path)
    assert "--batch" in bad_usage("predict", runner.path, tmp_path, "--batch", "0")


def bad_usage(*args) -> str:
    code, _, err = cli(*args)
    assert code == 2  # click's usage error
    return err


# -- devices -----------------------------------------------------------------------------------

def test_provider_selection():
    cpu, cuda = ort_runner.CPU, ort_runner.CUDA
    assert ort_runner.providers("cpu", None, [cuda, cpu]) == [cpu]
    assert ort_runner.providers("cuda", None, [cuda, cpu]) == [(cuda, {"device_id": 0}), cpu]
    assert ort_runner.providers("cuda", 1, [cuda, cpu]) == [(cuda, {"device_id": 1}), cpu]
    with pytest.raises(EdgekitError, match="pip uninstall onnxruntime && pip install "
                                           "onnxruntime-gpu"):
        ort_runner.providers("cuda", None, ["AzureExecutionProvider", cpu], "1.0")


def test_cuda_without_a_cuda_onnxruntime_says_what_to_install(runner, tiny_run):
    import onnxruntime as ort

    if ort_runner.CUDA in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA: the error path is not reachable here")
    line = bad("predict", runner.path, tiny_run / "sample.png", "--device", "cuda")
    assert line.startswith("error: --device cuda needs onnxruntime's CUDA execution provider")
    assert "pip install onnxruntime-gpu" in line
    assert "expected cpu, cuda or cuda:N" in bad("predict", runner.path, tiny_run / "sample.png",
                                                 "--device", "tpu")


@pytest.mark.filterwarnings("ignore:Specified provider 'CUDAExecutionProvider'")
def test_cuda_provider_that_falls_back_to_cpu_is_an_error(runner, monkeypatch):
    """onnxruntime-gpu without working CUDA libraries silently runs on the CPU: refuse that."""
    import onnxruntime as ort

    if ort_runner.CUDA in ort.get_available_providers():
        pytest.skip("a working CUDA provider would not fall back")
    monkeypatch.setattr(ort, "get_available_providers",
                        lambda: [ort_runner.CUDA, ort_runner.CPU])
    with pytest.raises(EdgekitError, match="could not start its CUDA provider"):
        load(runner.path, device="cuda")


def test_torchscript_on_cuda_without_a_gpu(tiny_run):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    line = bad("predict", tiny_run / "export" / "model.ts", tiny_run / "sample.png",
               "--device", "cuda")
    assert line.startswith(f"error: --device cuda: torch {torch.__version__} ")
    assert line.endswith("or use --device cpu")
