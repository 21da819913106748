"""Data-parallel training under torchrun: who this process is, its device, the few collectives.

    torchrun --nproc_per_node=2 -m edgekit train lenet5

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; without them this is a world of one and every
method is a local no-op, so the training loop has a single code path. Rank 0 alone writes
files and prints; the others train their shard and join the collectives.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

from edgekit.errors import EdgekitError


@dataclass
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """True on the process that writes files and reports (rank 0)."""
        return self.rank == 0

    def broadcast(self, obj):
        """Rank 0's `obj` on every rank."""
        if self.size == 1:
            return obj
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def any(self, *flags: bool) -> list[bool]:
        """For each flag, True if it is True on any rank (one all-reduce for all of them)."""
        if self.size == 1:
            return [bool(f) for f in flags]
        import torch
        import torch.distributed as dist

        t = torch.tensor([float(f) for f in flags], device=self._device())
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return [bool(v) for v in t.tolist()]

    def gather(self, obj) -> list:
        """Every rank's `obj`, in rank order, on every rank."""
        if self.size == 1:
            return [obj]
        import torch.distributed as dist

        out = [None] * self.size
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.size > 1:
            import torch.distributed as dist

            dist.barrier()

    def _device(self):
        import torch
        import torch.distributed as dist

        return (torch.device("cuda", self.local_rank) if dist.get_backend() == "nccl"
                else torch.device("cpu"))


def init(device_type: str) -> World:
    """Join the process group torchrun set up (gloo on CPU, nccl on CUDA), if any.

    Returns:
        This process's World; size 1 when not launched by torchrun.
    """
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        return World()
    import torch
    import torch.distributed as dist

    world = World(int(os.environ["RANK"]), size, int(os.environ.get("LOCAL_RANK", "0")))
    if device_type == "cuda":
        torch.cuda.set_device(world.local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo",
                                timeout=timedelta(minutes=30))
    return world


def shutdown(world: World) -> None:
    if world.size > 1:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def select_device(name: str, world: World | None = None):
    """"auto" is CUDA when present, else the CPU; under torchrun each rank takes its own GPU.

    Raises:
        EdgekitError: "cuda" was asked for and there is none.
    """
    import torch

    if name == "cuda" and not torch.cuda.is_available():
        raise EdgekitError("train.device: 'cuda' requested but no CUDA device is available")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        return torch.device("cuda", world.local_rank if world else 0)
    return torch.device(name)


def select_amp(device, enabled: bool):
    """The autocast dtype: on CUDA bf16 where the GPU supports it, else fp16 (which needs a
    GradScaler); None (full fp32) on the CPU or with train.amp off."""
    import torch

    if not enabled or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
