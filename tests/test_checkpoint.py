"""Checkpoints and --resume: atomic, weights-only, exact; signals and SIGKILL mid-write."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner

from edgekit import checkpoint as ckpt
from edgekit.cli import main
from edgekit.errors import EdgekitError

# Small enough to train in seconds, long enough (3 x 45 steps) to be interrupted mid-run.
RECIPE = ["lenet5", "--set", "train.epochs=3", "--set", "data.batch_size=32"]


def cli(*args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "edgekit", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, timeout: float = 600) -> tuple[int, str]:
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


def same_training(a: Path, b: Path) -> None:
    """Two finished runs reached the same model: identical per-epoch losses and metrics."""
    ha = json.loads((a / "metrics.json").read_text())["history"]
    hb = json.loads((b / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in ha] == [h["epoch"] for h in hb]
    for x, y in zip(ha, hb, strict=True):
        for key in ("train_loss", "train_accuracy", "test_loss", "test_accuracy", "lr"):
            assert x[key] == pytest.approx(y[key], rel=1e-6, abs=1e-9), (key, x, y)
    from safetensors.torch import load_file

    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The uninterrupted run every interrupted one must reproduce."""
    run = tmp_path_factory.mktemp("ref") / "run"
    code, err = finish(cli("train", *RECIPE, "--out", run, "--no-progress"))
    assert code == 0, err
    return run


def test_checkpoint_is_weights_only_and_restores_every_generator(tmp_path):
    import random

    import numpy as np

    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=10)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    sched.step()
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    torch.manual_seed(5), np.random.seed(5), random.seed(5)
    ckpt.save(tmp_path / "c.pt", {"model": model.state_dict(), "optimizer": opt.state_dict(),
                                  "scheduler": sched.state_dict(),
                                  "scaler": scaler.state_dict(), "progress": {"epoch": 1}})
    draws = (torch.rand(3), np.random.rand(3), random.random())
    raw = torch.load(tmp_path / "c.pt", weights_only=True)  # no unpickling of arbitrary code
    assert raw["format"] == "edgekit-checkpoint" and raw["progress"] == {"epoch": 1}
    content = ckpt.load(tmp_path / "c.pt")
    ckpt.set_rng_state(content["rng"])
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(draws[0], again[0]) and np.array_equal(draws[1], again[1])
    assert draws[2] == again[2]
    opt2 = torch.optim.AdamW(torch.nn.Linear(3, 2).parameters(), lr=0.1)
    opt2.load_state_dict(content["optimizer"])
    sched2 = torch.optim.lr_scheduler.OneCycleLR(opt2, max_lr=0.1, total_steps=10)
    sched2.load_state_dict(content["scheduler"])
    assert sched2.get_last_lr() == sched.get_last_lr()
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temporary file left


def test_to_cpu_copies_nested_tensors():
    t = torch.ones(2)
    out = ckpt.to_cpu({"a": [t, (t, 3)], "b": "x"})
    assert out["a"][1][1] == 3 and out["b"] == "x" and out["a"][0].device.type == "cpu"


@pytest.mark.parametrize("content, message", [
    (b"PK\x03\x04 torn zip", "is not a readable edgekit checkpoint"),
    (None, "is not an edgekit checkpoint"),
])
def test_unreadable_or_foreign_checkpoint_is_named(tmp_path, content, message):
    path = tmp_path / "checkpoint.pt"
    if content is None:
        torch.save({"model": {}}, path)
    else:
        path.write_bytes(content)
    with pytest.raises(EdgekitError, match=message):
        ckpt.load(path)


def resume_error(run) -> str:
    result = CliRunner().invoke(main, ["train", "--resume", str(run)])
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    return lines[0]


def snapshot(folder: Path) -> dict:
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in folder.iterdir()}


def test_resume_refuses_a_missing_finished_or_foreign_run(tmp_path):
    assert "does not exist" in resume_error(tmp_path / "nope")
    finished = tmp_path / "finished"
    finished.mkdir()
    (finished / "metrics.json").write_text("{}")
    (finished / "recipe.yaml").write_text("name: x\n")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    before = {f: snapshot(f) for f in (finished, foreign)}
    assert "is finished (it has metrics.json); nothing to resume" in resume_error(finished)
    assert "is not an unfinished edgekit run" in resume_error(foreign)
    (foreign / "checkpoint.pt").write_bytes(b"\x00" * 64)
    (foreign / "recipe.yaml").write_text("name: x\n")
    before[foreign] = snapshot(foreign)
    assert "is not a readable edgekit checkpoint" in resume_error(foreign)
    assert {f: snapshot(f) for f in (finished, foreign)} == before  # nothing changed


def test_resume_refuses_a_checkpoint_of_another_run(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    from edgekit.recipe import load_recipe

    ckpt.save(run / "checkpoint.pt", {"recipe": load_recipe("lenet5").to_dict(),
                                      "progress": {}})
    other = load_recipe("lenet5", ["train.epochs=7"]).to_dict()
    (run / "recipe.yaml").write_text(yaml.safe_dump(other))
    before = snapshot(run)
    assert "belongs to another run" in resume_error(run)
    assert snapshot(run) == before


def test_resume_takes_no_recipe():
    result = CliRunner().invoke(main, ["train", "lenet5", "--resume", "x"])
    assert result.exit_code == 1 and "give no RECIPE, --set or --out" in result.output
    result = CliRunner().invoke(main, ["train"])
    assert result.exit_code == 1 and "give a RECIPE to train" in result.output


@pytest.mark.slow
@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_checkpoints_and_resume_matches_the_unbroken_run(reference, tmp_path, sig, code):
    run = tmp_path / "run"
    proc = cli("train", *RECIPE, "--out", run, "--no-progress")
    deadline = time.monotonic() + 300
    while not (run / "checkpoint.pt").exists():  # epoch 1 is done: stop it during epoch 2
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
        time.sleep(0.01)
    proc.send_signal(sig)
    rc, err = finish(proc)
    assert rc == code, err
    assert f"interrupted by {sig.name} at " in err and f"--resume {run}" in err
    assert not (run / "metrics.json").exists()
    progress = ckpt.load(run / "checkpoint.pt")["progress"]
    assert (progress["epoch"], progress["step"]) != (3, 0)
    # An unfinished run is not exported; it is resumed.
    result = CliRunner().invoke(main, ["export", str(run), "--onnx"])
    assert result.exit_code == 1 and "is unfinished; continue it with" in result.output
    rc, err = finish(cli("train", "--resume", run, "--no-progress"))
    assert rc == 0, err
    same_training(run, reference)
    assert not (run / "checkpoint.pt").exists()


# Runs the CLI with torch.save replaced by one that writes the Nth checkpoint partly (or
# wholly, but never renamed into place) and then SIGKILLs its own process.
KILLER = textwrap.dedent("""
    import io, os, signal, sys
    import torch
    real, calls = torch.save, [0]
    KILL_AT, MODE = int(sys.argv[1]), sys.argv[2]

    def dying_save(obj, f, *args, **kwargs):
        calls[0] += 1
        if calls[0] != KILL_AT:
            return real(obj, f, *args, **kwargs)
        buf = io.BytesIO()
        real(obj, buf, *args, **kwargs)
        data = buf.getvalue()
        f.write(data if MODE == "written" else data[:len(data) // 2])
        f.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    torch.save = dying_save
    from edgekit.cli import main
    main(sys.argv[3:])
""")


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["half-written", "written"])
def test_sigkill_while_writing_a_checkpoint(reference, tmp_path, mode):
    run = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-c", KILLER, "2", mode, "train", *RECIPE,
                           "--out", str(run), "--no-progress"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    stale = list(run.glob(".checkpoint.pt.*.tmp"))
    assert len(stale) == 1  # the checkpoint being written when the process died
    content = torch.load(run / "checkpoint.pt", weights_only=True)  # the previous one, whole
    assert (content["progress"]["epoch"], content["progress"]["step"]) == (1, 0)
    rc, err = finish(cli("train", "--resume", run, "--no-progress"))
    assert rc == 0, err
    assert not list(run.glob(".checkpoint.pt.*.tmp"))
    same_training(run, reference)


@pytest.mark.slow
def test_diverging_loss_keeps_the_last_good_checkpoint(tmp_path):
    from edgekit.recipe import load_recipe
    from edgekit.training import train

    # lr x 1e8 after the first epoch: SGD blows up in epoch 2.
    recipe = load_recipe("lenet5", ["train.epochs=3", "train.optimizer=sgd", "train.lr=0.01",
                                    "train.schedule=step", "train.step_size=1",
                                    "train.gamma=1e8", "data.batch_size=64"])
    with pytest.raises(EdgekitError) as err:
        train(recipe, tmp_path / "run", progress=False)
    message = str(err.value)
    assert message.startswith("training diverged at epoch 2 step ")
    assert "the last good checkpoint is kept in" in message and "\n" not in message
    content = ckpt.load(tmp_path / "run" / "checkpoint.pt")
    assert content["progress"]["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in content["model"].values())
    assert not (tmp_path / "run" / "metrics.json").exists()
    # Diverging before any checkpoint leaves nothing behind.
    with pytest.raises(EdgekitError, match="training diverged at epoch 1"):
        train(load_recipe("lenet5", ["train.lr=1e30", "train.optimizer=sgd"]),
              tmp_path / "run2", progress=False)
    assert not (tmp_path / "run2").exists()
    assert os.listdir(tmp_path) == ["run"]
