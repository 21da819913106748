"""Data-parallel training under torchrun (gloo on CPU), and the device/AMP choices."""

import json
import subprocess
import sys

import pytest
import torch

from edgekit.distributed import World, select_amp, select_device
from edgekit.errors import EdgekitError
from edgekit.loop import epoch_order


def test_a_world_of_one_needs_no_process_group():
    world = World()
    assert world.main and world.any(True, False) == [True, False]
    assert world.broadcast("x") == "x" and world.gather(3) == [3]
    world.barrier()


def test_ranks_split_each_epoch_between_them():
    n = 11
    orders = [epoch_order(n, seed=0, epoch=1, world=World(rank, 2)) for rank in range(2)]
    assert set(orders[0]) | set(orders[1]) == set(range(n))
    assert len(orders[0]) == len(orders[1]) == 6  # padded to equal shares, as DDP needs
    single = epoch_order(n, seed=0, epoch=1, world=World())
    assert sorted(single) == list(range(n))
    assert single != epoch_order(n, seed=0, epoch=2, world=World())  # reshuffled per epoch
    assert single == epoch_order(n, seed=0, epoch=1, world=World())  # and reproducible


def test_device_auto_is_the_cpu_here_and_cuda_is_checked():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert select_device("auto").type == "cpu"
    assert select_device("cpu").type == "cpu"
    with pytest.raises(EdgekitError, match="'cuda' requested but no CUDA device is available"):
        select_device("cuda")


def test_mixed_precision_only_on_cuda_bf16_where_supported(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    assert select_amp(cpu, True) is None and select_amp(cuda, False) is None
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert select_amp(cuda, True) == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert select_amp(cuda, True) == torch.float16  # the loop pairs it with a GradScaler


def torchrun(*args, nproc: int = 2) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone",
         f"--nproc_per_node={nproc}", "-m", "edgekit", *map(str, args)],
        capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_two_gloo_processes_match_one_process(tmp_path):
    recipe = ["train", "lenet5", "--set", "train.epochs=10", "--no-progress"]
    proc = torchrun(*recipe, "--out", tmp_path / "ddp")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("run: ") == 1  # rank 0 reports, rank 1 stays quiet
    single = subprocess.run([sys.executable, "-m", "edgekit", *recipe, "--out",
                             tmp_path / "one"], capture_output=True, text=True, timeout=900)
    assert single.returncode == 0, single.stderr
    ddp = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    one = json.loads((tmp_path / "one" / "metrics.json").read_text())
    assert ddp["processes"] == 2 and one["processes"] == 1
    assert ddp["train_samples"] == one["train_samples"] == 1437
    assert abs(ddp["test_accuracy"] - one["test_accuracy"]) <= 0.01, (ddp["test_accuracy"],
                                                                      one["test_accuracy"])
    assert ddp["test_accuracy"] >= 0.95
    # Only rank 0 wrote: one run directory, nothing stray beside it.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp", "one"]
    assert not (tmp_path / "ddp" / "checkpoint.pt").exists()


@pytest.mark.slow
def test_a_global_batch_that_does_not_split_is_one_line(tmp_path):
    proc = torchrun("train", "lenet5", "--set", "data.batch_size=63", "--set", "train.epochs=1",
                    "--out", tmp_path / "run", "--no-progress")
    assert proc.returncode != 0
    assert "error: data.batch_size 63 is the global batch: it must divide evenly among 2 " \
           "processes" in proc.stderr
    assert not (tmp_path / "run").exists()
