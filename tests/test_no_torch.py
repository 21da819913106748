"""The Pi path: edgekit.runtime, predict and bench on .onnx with torch impossible to import."""

import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.slow

# An import hook that makes the training stack unimportable, as on a Pi with the base install.
BLOCK = textwrap.dedent("""
    import importlib.abc, sys
    BLOCKED = {"torch", "torchvision", "onnx", "onnxscript", "sklearn", "safetensors",
               "matplotlib", "tqdm"}
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)",
                                          name=name)
            return None
    sys.meta_path.insert(0, Block())
""")


def run_blocked(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCK + textwrap.dedent(code)],
                          capture_output=True, text=True, timeout=300)


def cli_blocked(*args) -> subprocess.CompletedProcess:
    code = f"sys.argv = ['edgekit', *{[str(a) for a in args]!r}]\n" \
           "from edgekit.cli import main\nmain()\n"
    return run_blocked(code)


def test_the_hook_really_blocks_torch():
    proc = run_blocked("import torch")
    assert proc.returncode != 0 and "blocked by the test" in proc.stderr


def test_runtime_classifies_without_torch(tiny_run):
    proc = run_blocked(f"""
        import edgekit.runtime
        runner = edgekit.runtime.load({str(tiny_run / 'export' / 'model.int8.onnx')!r})
        top = runner.classify_image({str(tiny_run / 'sample.png')!r}, k=2)
        assert len(top) == 2 and top[0][1] >= top[1][1], top
        assert not any(m.split('.')[0] in BLOCKED for m in sys.modules), sorted(sys.modules)
        print("ok", top[0][0])
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ok ")


def test_predict_and_bench_cli_without_torch(tiny_run, tmp_path):
    export = tiny_run / "export"
    proc = cli_blocked("predict", export / "model.int8.onnx", tiny_run / "sample.png")
    assert proc.returncode == 0, proc.stderr
    assert "1. " in proc.stdout
    proc = cli_blocked("predict", export / "model.onnx", "--sample", "3")
    assert proc.returncode == 0, proc.stderr
    proc = cli_blocked("bench", export / "model.onnx", export / "model.int8.onnx",
                       "--runs", "5", "--warmup", "1", "--out", tmp_path / "bench.json")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "bench.json").is_file()


def test_torchscript_without_torch_says_what_to_do(tiny_run):
    proc = cli_blocked("predict", tiny_run / "export" / "model.ts", tiny_run / "sample.png")
    assert proc.returncode == 1
    assert proc.stderr.strip() == ("error: model.ts is TorchScript, which needs torch; install "
                                   "it, or run the .onnx artifact instead")


def test_training_commands_name_the_missing_extra(tiny_run, tmp_path):
    proc = cli_blocked("train", "lenet5", "--out", tmp_path / "run")
    assert proc.returncode == 1
    assert proc.stderr.strip() == ("error: `edgekit train` needs the training extra "
                                   "(pip install 'edgekit[train]'): no module named 'torch'")
    assert not (tmp_path / "run").exists()
    proc = cli_blocked("export", tiny_run, "--onnx")
    assert proc.returncode == 1 and "`edgekit export` needs the training extra" in proc.stderr
