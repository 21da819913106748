"""edgekit on an emulated Raspberry Pi: aarch64 Python under qemu-user, -cpu cortex-a72 (Pi 4)
and cortex-a76 (Pi 5), against the same artifacts on this x86 machine.

`make test-arm` (tools/test-arm.sh) builds the environment and runs these; without it they skip.
The emulated side runs edgekit's installed wheel (the base install) from the aarch64 python;
torch 2.9.1 (aarch64 CPU wheel) is added only where TorchScript or ExecuTorch (.pte, on
executorch 1.0.1: the aarch64 release built against torch 2.9) is under test. Emulated timings
are not Pi timings: the bench JSON says `"emulated": true`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import textwrap
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from conftest import edgekit

from edgekit.runtime import load


def _host_saturates() -> bool:
    """An x86 host without VNNI: its u8s8 int8 kernels overflow on the full-range int8 weights
    of an ARM (pi4/pi5) export, so its outputs of those files are not a reference for ARM."""
    from edgekit.machine import machine_info

    m = machine_info()
    return m["arch"] == "x86_64" and not (m.get("isa") or {}).get("vnni")


HOST_SATURATES = pytest.mark.xfail(
    _host_saturates(), strict=False,
    reason="known defect (found 2026-12-03 on an AMD EPYC Zen 3, AVX2 without VNNI): the x86 "
           "host's outputs of the pi export's S8S8 int8 ONNX saturate (2 of 16 samples flip), "
           "so they are no reference for ARM (nor for tune's check on the device); not "
           "resolved yet")

pytestmark = [
    pytest.mark.arm, pytest.mark.slow,
    pytest.mark.skipif(not os.environ.get("EDGEKIT_ARM_ENV"), reason="no emulated aarch64 "
                       "environment: `make test-arm` builds one and runs these"),
]

CPUS = {"cortex-a72": "Cortex-A72", "cortex-a76": "Cortex-A76"}  # qemu -cpu -> core name
ONNX = ["model.onnx", "model.int8.onnx"]
TORCHSCRIPT = ["model.ts", "model.int8.ts"]
PTE = ["model.pte", "model.int8.pte"]  # ExecuTorch 1.0.1 + torch 2.9.1 (tools/arm-env.sh)
# executorch 1.0.1's XNNPACK reads torch 2.9.1's cpuinfo table 4 bytes off (its `dot` is
# torch's `aes`): on the emulated Cortex-A72 (AES, no dot product) edgekit refuses
# model.int8.pte, and runs it with this opt-in correction (edgekit.runtime.cpuinfo_layout).
FIX_ENV = "EDGEKIT_PTE_FIX_CPUINFO"
REFUSES_INT8_PTE = {"cortex-a72"}
FP32_RTOL = 1e-4  # of the logits' range
INT8_MIN_AGREEMENT = 0.99


class Emulator:
    """Runs the aarch64 python of an environment built by tools/arm-env.sh."""

    def __init__(self, env: Path, edgekit_site: Path, out: Path):
        self.env, self.site, self.out = env, edgekit_site, out
        self.info = json.loads((env / "env.json").read_text())

    def python(self, cpu: str, *args, torch: str | None = None, extra_env: dict | None = None,
               timeout: float = 1800) -> subprocess.CompletedProcess:
        """Run `python ARGS` on core `cpu`; torch: None, "torch" (2.9.1), "torch-sigill"
        (2.10.0, with the pure-Python dependencies from torch/) or "pte" (ExecuTorch 1.0.1 on
        torch 2.9.1)."""
        dirs = {None: [], "torch": ["torch"], "torch-sigill": ["torch-sigill", "torch"],
                "pte": ["pte", "torch"]}[torch]
        path = [str(self.site)] + [str(self.env / d) for d in dirs]
        env = {**{k: v for k, v in os.environ.items() if k != FIX_ENV}, "QEMU_CPU": cpu,
               "PYTHONPATH": os.pathsep.join(path), **(extra_env or {})}
        return subprocess.run([str(self.env / "bin" / "python3"), *map(str, args)], env=env,
                              capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def emu() -> Emulator:
    out = Path(os.environ["EDGEKIT_ARM_OUT"])
    out.mkdir(parents=True, exist_ok=True)
    return Emulator(Path(os.environ["EDGEKIT_ARM_ENV"]), Path(os.environ["EDGEKIT_ARM_SITE"]),
                    out)


@pytest.fixture(scope="session")
def pi_run(tmp_path_factory) -> Path:
    """lenet5 as tiny_run trains it, exported for a Pi: `edgekit export --target pi4` (int8
    TorchScript on the qnnpack engine, ARM's int8 ONNX layout). tiny_run is not reused: its
    export (--target local) would be thrown away, and nothing else in `make test-arm` uses it.
    The pi4 and pi5 presets are the same today, so both emulated cores and x86 run these."""
    run = tmp_path_factory.mktemp("pi") / "tiny-pi4"
    edgekit("train", "lenet5", "--set", "train.epochs=2", "--out", run, "--no-progress")
    edgekit("export", run, "--onnx", "--torchscript", "--pte", "--int8", "--target", "pi4",
            "--max-int8-drop", "5", "--keep-candidates")  # candidates for `edgekit tune`
    return run


@pytest.fixture(scope="session")
def export(pi_run) -> Path:
    return pi_run / "export"


@pytest.fixture(scope="session")
def artifacts(export) -> list[str]:
    return [a for a in ONNX + TORCHSCRIPT + PTE if (export / a).is_file()]


@pytest.fixture(scope="session")
def x86_logits(emu, export, artifacts) -> dict[str, np.ndarray]:
    """(N, 10) logits over the held-out samples, from each artifact on this x86 machine."""
    x = held_out(export)[0]
    logits = {a: load(export / a, threads=1).run(x) for a in artifacts}
    np.savez(emu.out / "logits-x86_64.npz", **logits)  # for tools/arm_report.py
    return logits


# The emulated side: one aarch64 process per core computes every artifact's logits.
LOGITS = textwrap.dedent("""
    import sys
    import numpy as np
    from edgekit.runtime import load
    export, out, names = sys.argv[1], sys.argv[2], sys.argv[3:]
    with np.load(f"{export}/samples.npz", allow_pickle=False) as z:
        x = z["x"]  # (N, 1, 32, 32)
    np.savez(out, **{n: load(f"{export}/{n}", threads=1).run(x) for n in names})
""")


# `edgekit tune` on the base install (.onnx only, a short budget), then `edgekit predict
# EXPORT_DIR` and `edgekit serve EXPORT_DIR` in the same process: one qemu start-up, not three.
# A client thread asks the server what it serves, then stops it with SIGTERM.
PREDICT_MARK, SERVE_MARK = "=== edgekit predict", "=== edgekit serve"
TUNE_THEN_PREDICT = textwrap.dedent(f"""
    import json, os, signal, socket, sys, threading, time, urllib.request
    from edgekit.cli import main
    export, image = sys.argv[1], sys.argv[2]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    def client():
        for _ in range(600):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{{port}}/metadata") as r:
                    print({SERVE_MARK!r}, json.dumps(json.loads(r.read())["serving"]),
                          flush=True)
                break
            except OSError:
                time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGTERM)

    for args in (["tune", export, "--threads", "1", "--seconds", "0.2"],
                 ["predict", export, image, "-k", "3"],
                 ["serve", export, "--port", str(port), "--workers", "1"]):
        if args[0] == "predict":
            print({PREDICT_MARK!r}, flush=True)
        if args[0] == "serve":
            threading.Thread(target=client, daemon=True).start()
        try:
            main.main(args, prog_name="edgekit", standalone_mode=False)
        except SystemExit as e:
            if e.code:
                raise
""")


@pytest.fixture(scope="session", params=list(CPUS))
def cpu(request) -> str:
    return request.param


@pytest.fixture(scope="session")
def emulated(emu, pi_run, export, artifacts, x86_bench, x86_logits) -> dict[tuple, Future]:
    """Every emulated command of the session, started at once on two workers.

    A qemu process keeps one core busy for seconds to a minute; two at a time halve the
    wall time on a 2-core machine. Tests wait for the result they need. The x86 bench and
    logits come first, so two busy qemu processes do not slow the x86 timings.
    """
    # ExecuTorch's programs run in processes of their own: the int8 one is refused on the
    # Cortex-A72 as installed (its own job, through `edgekit predict`), and run with the fix.
    plain = [a for a in artifacts if a not in PTE]
    ts = "torch" if any(a.endswith(".ts") for a in plain) else None
    # The torch wheel pi/README.md recommends: import + one conv on each core (~20 s each), first
    # so that `-k torch_wheel` waits for little else.
    jobs = {("torch", cpu): (cpu, ["-m", "edgekit.selftest", "torch"], "torch") for cpu in CPUS}
    for cpu in CPUS:  # each core tunes its own copy of the export, then predicts with it
        folder = emu.out / f"tune-{cpu}"
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(export, folder)
        jobs["tune", cpu] = (cpu, ["-c", TUNE_THEN_PREDICT, folder, pi_run / "sample.png"], None)
    for cpu in CPUS:  # the longest first
        jobs["logits", cpu] = (cpu, ["-c", LOGITS, export, emu.out / f"logits-{cpu}.npz",
                                     *plain], ts)
        for name in PTE:
            fix = {FIX_ENV: "1"} if name == "model.int8.pte" and cpu in REFUSES_INT8_PTE else {}
            jobs["logits", cpu, name] = (cpu, ["-c", LOGITS, export,
                                               emu.out / f"logits-{cpu}-{name}.npz", name], "pte",
                                         fix)
        jobs["bench", cpu] = (cpu, ["-m", "edgekit", "bench", *(export / a for a in plain),
                                    "--runs", "30", "--warmup", "5", "--threads", "1",
                                    "--out", emu.out / f"bench-{cpu}.json"], ts)
    jobs["pte refused"] = ("cortex-a72", ["-m", "edgekit", "predict", export / "model.int8.pte",
                                          pi_run / "sample.png"], "pte")
    # torch 2.9.1 on the Cortex-A76 is already under test above: its doctor runs without it;
    # on the Cortex-A72 with ExecuTorch too, to show the same diagnosis as the refusal.
    for cpu in CPUS:
        jobs["doctor", cpu] = (cpu, ["-m", "edgekit", "doctor", "--json"],
                               "pte" if cpu == "cortex-a72" else None)
    jobs["sigill"] = ("cortex-a72", ["-m", "edgekit", "doctor"], "torch-sigill")
    for cpu in CPUS:
        for name in ONNX:
            jobs["predict", cpu, name] = (cpu, ["-m", "edgekit", "predict", export / name,
                                                pi_run / "sample.png", "-k", "3"], None)
    seconds = {}

    def timed(key, cpu, args, torch, extra_env=None):
        start = time.perf_counter()
        try:
            return emu.python(cpu, *args, torch=torch, extra_env=extra_env)
        finally:
            seconds[" ".join(key)] = round(time.perf_counter() - start, 1)

    pool = ThreadPoolExecutor(max_workers=2)
    yield {key: pool.submit(timed, (key,) if isinstance(key, str) else key, *job)
           for key, job in jobs.items()}
    pool.shutdown(cancel_futures=True)
    (emu.out / "jobs.json").write_text(json.dumps(seconds, indent=2) + "\n")  # wall s per job


@pytest.fixture(scope="session")
def x86_bench(emu, export, artifacts) -> Path:
    """The same artifacts and settings on this machine, for `edgekit bench compare`."""
    out = emu.out / "bench-x86_64.json"
    edgekit("bench", *(export / a for a in artifacts), "--runs", "30", "--warmup", "5",
            "--threads", "1", "--out", out)
    return out


def finished(proc: subprocess.CompletedProcess, what: str) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, f"emulated {what} failed ({proc.returncode}):\n" \
        f"{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="session")
def arm_logits(emu, emulated, artifacts, cpu) -> dict:
    """name -> logits on `cpu`; for a .pte whose process failed, the CompletedProcess."""
    finished(emulated["logits", cpu].result(), f"logits on {cpu}")
    with np.load(emu.out / f"logits-{cpu}.npz") as z:
        out = {a: z[a] for a in artifacts if a not in PTE}
    for name in PTE:
        proc = emulated["logits", cpu, name].result()
        if proc.returncode:
            out[name] = proc
            continue
        with np.load(emu.out / f"logits-{cpu}-{name}.npz") as z:
            out[name] = z[name]
    return out


def ran(got, name: str, cpu: str) -> np.ndarray:
    """The logits; a process that failed (a signal included) fails the test."""
    if not isinstance(got, subprocess.CompletedProcess):
        return got
    finished(got, f"{name} on {cpu}")


def held_out(export: Path) -> tuple[np.ndarray, np.ndarray]:
    with np.load(export / "samples.npz", allow_pickle=False) as z:
        return z["x"], z["y"]


def test_pte_is_exported_for_the_pi(artifacts):
    assert set(PTE) <= set(artifacts)  # so the .pte checks below run, not skip


@pytest.mark.parametrize("name", ["model.onnx", "model.ts", "model.pte"])
def test_fp32_logits_match_x86(name, cpu, arm_logits, x86_logits, export):
    if name not in x86_logits:
        pytest.skip(f"{name} not exported")
    ref, got = x86_logits[name], ran(arm_logits[name], name, cpu)
    assert got.shape == ref.shape == (len(held_out(export)[1]), 10)
    tol = FP32_RTOL * float(ref.max() - ref.min())
    diff = float(np.abs(got - ref).max())
    print(f"{name} on {cpu}: max |arm - x86| = {diff:.2e} (tolerance {tol:.2e})")
    assert diff <= tol, f"{name} on emulated {cpu} differs from x86 by {diff:.3g} > {tol:.3g}"


@HOST_SATURATES
@pytest.mark.parametrize("name", ["model.int8.onnx", "model.int8.ts", "model.int8.pte"])
def test_int8_top1_agrees_with_x86(name, cpu, arm_logits, x86_logits, export):
    if name not in x86_logits:
        pytest.skip(f"{name} not exported")
    y = held_out(export)[1]
    ref, got = x86_logits[name].argmax(1), ran(arm_logits[name], name, cpu).argmax(1)
    flips = [f"sample {i} (label {y[i]}): x86 {ref[i]} -> arm {got[i]}"
             for i in np.flatnonzero(ref != got)]
    agreement = 1 - len(flips) / len(y)
    print(f"{name} on {cpu}: top-1 agreement {agreement:.2%}; flips: {flips or 'none'}")
    assert agreement >= INT8_MIN_AGREEMENT, \
        f"{name} on emulated {cpu}: {agreement:.2%} top-1 agreement; flips: {flips}"


def test_int8_pte_is_refused_not_killed_on_the_cortex_a72(emulated):
    """As installed (executorch 1.0.1, torch 2.9.1), XNNPACK would read torch's `aes` as its
    `dot` and run SDOT on a core without it: edgekit refuses the file in one line, before the
    first call, and doctor prints the same line. (With EDGEKIT_PTE_FIX_CPUINFO=1 the same file
    runs: test_int8_top1_agrees_with_x86 on the Cortex-A72.)"""
    proc = emulated["pte refused"].result()
    assert proc.returncode == 1, f"expected edgekit's refusal (exit 1), got " \
        f"{proc.returncode}:\n{proc.stderr[-3000:]}"
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, proc.stderr[-3000:]
    why = errors[0].removeprefix("error: model.int8.pte: ")
    assert why.startswith("int8 .pte would die with SIGILL here: executorch 1.0.1's XNNPACK "
                          "reads this CPU's features from torch 2.9.1's cpuinfo"), errors[0]
    assert "its `dot` from torch's `aes`" in why and "lacks asimddp" in why, why
    assert "EDGEKIT_PTE_FIX_CPUINFO=1" in why
    doctor = json.loads(finished(emulated["doctor", "cortex-a72"].result(),
                                 "doctor on cortex-a72").stdout)
    assert why in doctor["diagnosis"], doctor["diagnosis"]


@pytest.mark.parametrize("name", ONNX)
def test_predict_cli_matches_x86(name, cpu, emulated, pi_run, export):
    x86 = load(export / name).classify_image(pi_run / "sample.png", k=3)
    proc = finished(emulated["predict", cpu, name].result(), f"predict {name} on {cpu}")
    ranked = [line.split()[1] for line in proc.stdout.splitlines()[1:]]  # "  1. 7  0.9981"
    assert ranked[0] == x86[0][0], proc.stdout


@HOST_SATURATES
def test_tune_checks_the_shipped_files_and_predict_and_serve_follow_it(cpu, emu, emulated,
                                                                       pi_run):
    """Emulated timings decide nothing about a Pi: this checks the mechanism and the output
    checks (every shipped .onnx computes the host's outputs on the emulated core), not which
    file won."""
    proc = finished(emulated["tune", cpu].result(), f"tune and predict on {cpu}")
    folder = emu.out / f"tune-{cpu}"
    doc = json.loads((folder / "tuned.json").read_text())
    assert doc["machine"]["emulated"] is True and doc["machine"]["cpu"] == CPUS[cpu]
    manifest = json.loads((folder / "manifest.json").read_text())
    shipped = [*manifest["artifacts"], *manifest["candidates"]]
    onnx = [f for f in shipped if f.endswith(".onnx")]
    assert any(f.startswith("candidates/") for f in onnx), shipped
    assert sorted(r["file"] for r in doc["table"]) == sorted(onnx)
    assert doc["refused"] == [] and all(r["check"]["passed"] for r in doc["table"])
    skipped = [line.split(": ")[1] for line in proc.stderr.splitlines()
               if line.startswith("skipped: ")]  # the base install: no torch, no executorch
    assert sorted(skipped) == sorted(f for f in shipped if not f.endswith(".onnx"))
    choice = doc["choice"]
    assert f"using {choice['file']} with 1 thread(s)" in proc.stderr
    x86 = load(folder / choice["file"]).classify_image(pi_run / "sample.png", k=3)
    predicted = proc.stdout.split(PREDICT_MARK, 1)[1].split(SERVE_MARK)[0].strip().splitlines()
    assert predicted[0].endswith(f"-> {Path(choice['file']).name}"), predicted
    assert predicted[1].split()[1] == x86[0][0], predicted
    served = json.loads(proc.stdout.split(SERVE_MARK, 1)[1])
    assert served["artifact"] == Path(choice["file"]).name
    assert f"{served['artifact']} (onnxruntime, cpu, 1 worker(s), 1 model thread(s)" in \
        proc.stderr  # the tuned count per lane


def test_bench_json_is_marked_emulated(cpu, emu, emulated, artifacts):
    finished(emulated["bench", cpu].result(), f"bench on {cpu}")
    report = json.loads((emu.out / f"bench-{cpu}.json").read_text())
    m = report["machine"]
    assert m["arch"] == "aarch64" and m["emulated"] is True
    assert m["cpu"] == CPUS[cpu]
    assert m["isa"]["neon"] and m["isa"]["dotprod"] == (cpu == "cortex-a76")
    assert [r["file"] for r in report["results"]] == [a for a in artifacts if a not in PTE]
    assert all(r["p50_ms"] > 0 for r in report["results"])


def test_x86_bench_for_comparison(x86_bench):
    report = json.loads(x86_bench.read_text())
    assert report["machine"]["emulated"] is False and report["machine"]["arch"] == "x86_64"


def test_bench_compare_labels_the_emulated_machines(emu, emulated, x86_bench, artifacts):
    """x86 and both emulated cores through `edgekit bench compare`, x86 the baseline."""
    for cpu in CPUS:
        finished(emulated["bench", cpu].result(), f"bench on {cpu}")
    files = [x86_bench] + [emu.out / f"bench-{cpu}.json" for cpu in CPUS]
    proc = edgekit("bench", "compare", *files, "--chart", emu.out / "compare.png")
    table = json.loads(edgekit("bench", "compare", *files, "--no-chart", "--json").stdout)
    assert (emu.out / "compare.png").stat().st_size > 0
    text = json.dumps(table)
    assert "Cortex-A72" in text and "Cortex-A76" in text
    assert proc.stdout.lower().count("emulated") >= 2, proc.stdout
    for artifact in artifacts:
        if artifact not in PTE:  # .pte is run, not benched, under emulation
            assert artifact in proc.stdout


def test_doctor_under_emulation(cpu, emulated):
    proc = finished(emulated["doctor", cpu].result(), f"doctor on {cpu}")
    report = json.loads(proc.stdout)
    checks = {c["name"]: c for c in report["checks"]}
    assert report["ok"], proc.stdout
    assert report["machine"]["cpu"] == CPUS[cpu] and report["machine"]["emulated"]
    assert checks["emulation"]["status"] == "warn"
    assert checks["onnxruntime"]["status"] == "ok" and checks["onnxruntime"]["max_error_steps"] <= 1
    if cpu == "cortex-a72":  # with ExecuTorch 1.0.1: int8 .pte refused (test above)
        assert checks["executorch"]["status"] == "warn", checks["executorch"]
        assert checks["torch"]["status"] == "ok"
        assert "qnnpack" in checks["torch"]["quantized_engines"]
        assert checks["torch"]["version"].startswith("2.9.1")
    else:
        assert checks["torch"]["status"] == "skip"


def test_doctor_names_the_wheel_that_dies_on_a_pi4(emulated):
    """torch 2.10.0's aarch64 wheel really dies with SIGILL on a Cortex-A72 (a Pi 4)."""
    proc = emulated["sigill"].result()
    assert proc.returncode == 1, proc.stdout + proc.stderr
    diagnosis = [line for line in proc.stdout.splitlines() if line.startswith("diagnosis:")]
    assert diagnosis == [
        'diagnosis: torch 2.10.0 dies with "Illegal instruction" (SIGILL) at `import torch` on '
        "this Cortex-A72: the wheel was built for instructions this CPU lacks; versions known to "
        "work on Cortex-A72: 2.9.1 (pip install 'torch==2.9.1' --index-url "
        "https://download.pytorch.org/whl/cpu), or build one with pi/build_pytorch.sh; the .onnx "
        "artifacts need no torch."]
    assert "[  ok] onnxruntime" in proc.stdout  # the crash stayed in its child process


def test_recommended_torch_wheel_runs_on_both_cores(cpu, emu, emulated):
    """The aarch64 CPU wheel that doctor, pi/install.sh and the Dockerfile recommend imports
    and runs a conv on this emulated core (qemu faults on instructions the core lacks)."""
    from edgekit import doctor

    assert any(w.startswith(f"torch/torch-{doctor.TORCH_FOR_PI}-")
               for w in emu.info["wheels"]), emu.info["wheels"]  # tools/arm-requirements.txt
    proc = finished(emulated["torch", cpu].result(), f"import torch + conv on {cpu}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["ok"] and result["version"].split("+")[0] == doctor.TORCH_FOR_PI
    assert CPUS[cpu] in doctor.TORCH_ON_ARM and \
        doctor.TORCH_FOR_PI in doctor.TORCH_ON_ARM[CPUS[cpu]]["works"]
