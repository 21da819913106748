"""The training loop: one epoch after another, a checkpoint after each, resumable mid-epoch.

`fit()` knows no task, loss, optimizer or model by name: the data's task (edgekit.tasks) says
what outputs mean, the recipe names the loss (edgekit.losses), the optimizer and schedule
(edgekit.optim), and edgekit.models builds the network. The same code runs a single process
or one rank of a torchrun job (edgekit.distributed).

Reproducible by construction: each epoch's sample order comes from DistributedSampler seeded
with (train.seed, epoch), every other random draw from the global generators whose states the
checkpoint carries, so a run resumed from any checkpoint (end of an epoch, or mid-epoch after a
signal) reaches the same weights as one that never stopped (CPU, same seed).
"""

from __future__ import annotations

import math
import random
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgekit.augment import augment
from edgekit.distributed import World, select_amp, select_device
from edgekit.errors import EdgekitError, Interrupted
from edgekit.fileio import write_text
from edgekit.rundir import RunDir

# Weight of auxiliary classifier losses (inception_v3, googlenet) while training.
AUX_WEIGHT = 0.4


@dataclass
class Fit:
    """What `fit` returns: the trained model (best epoch's weights with early stopping)."""

    model: object  # nn.Module, unwrapped from DDP
    history: list[dict]
    amp: str | None  # "bfloat16"/"float16" on CUDA with AMP, else None
    best_epoch: int
    stopped_early: bool
    seconds: float
    device: str
    start: dict | None = None  # QAT: {"epoch": 0, "test_<metric>": ...} of the calibrated start


@dataclass
class Progress:
    """Where training stands; saved in every checkpoint."""

    epoch: int = 0  # epochs completed
    step: int = 0  # steps completed in epoch + 1 (non-zero only after a signal)
    partial: dict = field(default_factory=lambda: {"seen": 0, "loss": 0.0, "score": 0.0})
    history: list = field(default_factory=list)
    best: dict | None = None  # {"epoch", "metric", "state" (only with early stopping)}
    seconds: float = 0.0
    world: int = 1  # processes that trained (a mid-epoch resume needs the same number)
    stopped_early: bool = False  # early stopping ended training (a resume has nothing to do)
    start: dict | None = None  # QAT: the calibrated start's held-out metric (epoch 0)


def fit(recipe, data, progress: bool = True, run: Path | None = None,
        checkpoint: dict | None = None, world: World | None = None) -> Fit:
    """Train `recipe`'s model on `data` (edgekit.data.DataSplits).

    On `train.threads` CPU threads when set (restored after): tiny models train several times
    faster on one, their ops too small to split. See _fit for the rest.
    """
    import torch

    threads = torch.get_num_threads()
    if recipe.train.threads:
        torch.set_num_threads(recipe.train.threads)
    try:
        return _fit(recipe, data, progress, run, checkpoint, world)
    finally:
        torch.set_num_threads(threads)


@dataclass
class _Run:
    """Everything one training run sets up once and its epochs share."""

    recipe: object
    data: object
    task: object
    world: World
    device: object
    model: object  # nn.Module
    net: object  # the model, or its DDP wrapper
    loss_fn: object
    opt: object
    sched: object
    scaler: object
    amp_dtype: object
    per_rank: int
    steps: int  # per epoch
    stateful: bool
    channels_last: bool
    progress: Progress
    run: Path | None
    workers: int
    bar: object = None

    def save(self) -> None:
        """Checkpoint (rank 0) and wait: nobody runs ahead of, or exits before, it."""
        from edgekit import checkpoint as ckpt

        p = self.progress
        if self.run is not None and self.world.main:
            ckpt.save(RunDir(self.run).checkpoint, {
                "recipe": self.recipe.to_dict(), "data_fingerprint": self.data.fingerprint(),
                "model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                "scheduler": self.sched.state_dict() if self.sched is not None else None,
                "scaler": self.scaler.state_dict(), "progress": p.__dict__})
            write_text(RunDir(self.run).log, "".join(log_line(h) + "\n" for h in p.history))
        self.world.barrier()


def _fit(recipe, data, progress: bool = True, run: Path | None = None,
         checkpoint: dict | None = None, world: World | None = None) -> Fit:
    """Train `recipe`'s model on `data` (edgekit.data.DataSplits): epochs, then the result.

    A stateful model (`model.stateful`, e.g. an RNN whose hidden state runs across windows)
    reads each training stream's windows in order, one batch holding the next window of every
    stream, and carries its state from batch to batch, cut from the graph (truncated
    backpropagation through time): see forward().

    Args:
        progress: a progress bar on a terminal, else one line per epoch on stderr (rank 0).
        run: the run directory to checkpoint into after every epoch; None: no checkpoints.
        checkpoint: a loaded checkpoint (edgekit.checkpoint.load) to continue from.
        world: this process's place in a torchrun job; None: a single process.

    Returns:
        A Fit.

    Raises:
        EdgekitError: bad settings for this model/data, or a loss that became NaN/inf (the
            last checkpoint is kept).
        Interrupted: SIGINT/SIGTERM; the step was finished and a checkpoint saved first.
    """
    from tqdm import tqdm

    r = _setup(recipe, data, run, checkpoint, world or World())
    p, cfg = r.progress, recipe.training
    r.bar = tqdm(total=cfg.epochs * r.steps, initial=p.epoch * r.steps + p.step,
                 desc=f"train {recipe.name}", unit="step", dynamic_ncols=True, mininterval=0.5,
                 disable=not (progress and r.world.main and sys.stderr.isatty()))
    if recipe.qat.epochs and checkpoint is None:
        qat_start(r)
    with _StopOnSignal(quiet=not r.world.main) as stop:
        for epoch in range(p.epoch + 1, 0 if p.stopped_early else cfg.epochs + 1):
            t0 = time.perf_counter()
            train_one_epoch(r, epoch, stop)
            test = evaluate(r.model, data.test, r.per_rank, r.task, r.loss_fn, r.device, r.world)
            end_of_epoch(r, epoch, test, time.perf_counter() - t0, progress)
            if r.world.any(stop.signum is not None)[0]:
                raise _interrupted(stop.signum, epoch + 1, 0, run)
            if p.stopped_early:
                break
    r.bar.close()
    if keeps_best(recipe) and p.best and "state" in p.best:
        r.model.load_state_dict(p.best["state"])
        if recipe.qat.epochs:  # the kept state's observers as the schedule left them at the
            from edgekit import qat  # end (frozen), not as they were at the kept epoch

            qat.freeze(r.model, cfg.epochs + 1, recipe.qat)
    return Fit(model=r.model, history=p.history, amp=_dtype_name(r.amp_dtype),
               best_epoch=p.best["epoch"] if p.best else p.epoch, stopped_early=p.stopped_early,
               seconds=p.seconds, device=str(r.device), start=p.start)


def keeps_best(recipe) -> bool:
    """Whether the run ends with its best epoch's weights, not its last: with early stopping,
    and always in QAT (a fine-tune that makes the int8 model worse is not what is kept)."""
    return bool(recipe.training.early_stop or recipe.qat.epochs)


def qat_start(r: _Run) -> None:
    """QAT's epoch 0: the int8 ranges calibrated on training inputs, the held-out metric of
    that (simulated plain int8 of the base run) recorded as the best so far, with its state."""
    from edgekit import checkpoint as ckpt
    from edgekit import qat

    p, metric = r.progress, r.task.metric
    qat.calibrate(r.model, r.data.train.x[:r.recipe.export.calibration_samples], r.per_rank,
                  r.device)
    test = evaluate(r.model, r.data.test, r.per_rank, r.task, r.loss_fn, r.device, r.world)
    p.start = {"epoch": 0, "test_loss": test["loss"], f"test_{metric}": test[metric]}
    p.best = {"epoch": 0, "metric": test[metric], "state": ckpt.to_cpu(
        {k: v.clone() for k, v in r.model.state_dict().items()})}


def _setup(recipe, data, run: Path | None, checkpoint: dict | None, world: World) -> _Run:
    """The model, optimizer, schedule and scaler on the right device, resumed if asked."""
    import torch

    from edgekit.losses import build_loss
    from edgekit.models import prepare_model
    from edgekit.optim import build_optimizer, build_scheduler
    from edgekit.tasks import get_task

    cfg = recipe.training
    device = select_device(cfg.device, world)
    if recipe.data.batch_size % world.size:
        raise EdgekitError(f"data.batch_size {recipe.data.batch_size} is the global batch: it "
                           f"must divide evenly among {world.size} processes")
    _seed(cfg.seed)  # the same initial weights on every rank
    model, head = prepare_model(recipe.model, data.input_shape, len(data.labels),
                                load_weights=checkpoint is None, preprocess=data.preprocess)
    if recipe.qat.epochs:  # fine-tune a finished run with int8 simulated (edgekit.qat)
        model, head = _qat_model(model, recipe, data, fresh=checkpoint is None), set()
    stateful = getattr(model, "stateful", False)
    if stateful and (data.train.stream != recipe.data.batch_size or world.size > 1):
        why = f"{world.size} processes" if world.size > 1 else f"{recipe.data.name} has none"
        raise EdgekitError(f"model.stateful needs ordered windows of a series, read by one "
                           f"process ({why}); choose a stream dataset (sincos) and one process, "
                           "or set it to false")
    model.to(device)
    channels_last = cfg.channels_last and device.type == "cuda" and len(data.input_shape) == 3
    if channels_last:
        model.to(memory_format=torch.channels_last)
    net = model if world.size == 1 else torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None)
    per_rank = recipe.data.batch_size // world.size
    steps = math.ceil(math.ceil(len(data.train) / world.size) / per_rank)
    task = get_task(data.task)
    opt = build_optimizer(model, cfg, head)
    amp_dtype = select_amp(device, cfg.amp)
    r = _Run(recipe, data, task, world, device, model, net,
             build_loss(cfg.loss, task, cfg.label_smoothing), opt,
             build_scheduler(opt, cfg, steps),
             torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16), amp_dtype,
             per_rank, steps, stateful, channels_last, Progress(world=world.size), run,
             recipe.data.workers if recipe.data.workers >= 0 else (
                 4 if device.type == "cuda" else 0))
    if checkpoint is not None:
        _resume(r, checkpoint)
    return r


def _qat_model(model, recipe, data, fresh: bool):
    """The fake-quantized graph of `model`, from the base run's weights unless resuming."""
    import torch

    from edgekit import qat

    qat.check_supported(model, recipe)
    example = torch.from_numpy(np.asarray(data.train.x[:2]))
    return qat.prepare(model, example, recipe.qat.base if fresh else None)


def _resume(r: _Run, checkpoint: dict) -> None:
    from edgekit import checkpoint as ckpt

    p = r.progress = Progress(**checkpoint["progress"])
    if p.step and p.world != r.world.size:
        raise EdgekitError(f"the run stopped mid-epoch with {p.world} process(es); resume it "
                           f"with the same number (torchrun --nproc_per_node={p.world})")
    p.world = r.world.size
    r.model.load_state_dict(checkpoint["model"])
    r.opt.load_state_dict(checkpoint["optimizer"])
    if r.sched is not None:
        r.sched.load_state_dict(checkpoint["scheduler"])
    r.scaler.load_state_dict(checkpoint["scaler"])
    ckpt.set_rng_state(checkpoint["rng"])


def train_one_epoch(r: _Run, epoch: int, stop: _StopOnSignal) -> None:
    """One pass over this rank's share of the training split, from where a resume left it.

    Raises:
        EdgekitError: the loss became NaN/inf (before the update: the checkpoint stays good).
        Interrupted: a signal arrived; the step was finished and a checkpoint saved.
    """
    import torch

    p, cfg, data = r.progress, r.recipe.training, r.data
    order = (list(range(len(data.train))) if r.stateful  # streams in time order
             else epoch_order(len(data.train), cfg.seed, epoch, r.world))[p.step * r.per_rank:]
    # Whole batches by index: one fancy-indexing read per batch, not one per sample.
    batches = [order[i:i + r.per_rank] for i in range(0, len(order), r.per_rank)]
    loader = torch.utils.data.DataLoader(
        data.train, batch_size=None, sampler=batches, num_workers=r.workers,
        pin_memory=r.device.type == "cuda",
        generator=torch.Generator().manual_seed(cfg.seed + epoch))
    r.net.train()
    for m in getattr(r.model, "frozen_modules", ()):  # a frozen backbone keeps its BN stats
        m.eval()
    if r.recipe.qat.epochs:
        from edgekit import qat

        qat.freeze(r.model, epoch, r.recipe.qat)
    state = None  # a stateful model starts every pass over its streams from zeros
    for x, y in loader:
        state, stopping = train_step(r, x, y, state, epoch, stop)
        r.bar.update()
        if stopping:
            r.save()
            raise _interrupted(stop.signum, epoch, p.step, r.run)


def train_step(r: _Run, x, y, state, epoch: int, stop: _StopOnSignal):
    """Forward, loss, backward and update on one batch. Returns (state, stop requested)."""
    import torch

    from edgekit.optim import l1_penalty

    cfg, p = r.recipe.training, r.progress
    x, y = x.to(r.device, non_blocking=True), y.to(r.device, non_blocking=True)
    x = augment(x, cfg.shift, cfg.flip)
    if r.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.autocast(r.device.type, dtype=r.amp_dtype, enabled=r.amp_dtype is not None):
        out, state = forward(r.net, x, state)  # (B, K), or (main, *aux) in training
        main, aux = (out[0], out[1:]) if isinstance(out, tuple) else (out, ())
        weight = getattr(r.model, "aux_weight", AUX_WEIGHT)
        loss = r.loss_fn(main, y) + sum(weight * r.loss_fn(a, y) for a in aux)
        if cfg.l1:
            loss = loss + cfg.l1 * l1_penalty(r.model)
    value = loss.item()
    stopping, diverged = r.world.any(stop.signum is not None, not math.isfinite(value))
    if diverged:  # before the update: the weights and checkpoint stay good
        raise EdgekitError(
            f"training diverged at epoch {epoch} step {p.step + 1}: the loss is "
            f"{value if not math.isfinite(value) else 'not finite on another rank'}"
            f"; {_kept(r.run)}lower train.lr and train again")
    r.opt.zero_grad(set_to_none=True)
    r.scaler.scale(loss).backward()
    if cfg.grad_clip:
        r.scaler.unscale_(r.opt)  # clip the true gradients, not the fp16-scaled ones
        torch.nn.utils.clip_grad_norm_(r.model.parameters(), cfg.grad_clip)
    r.scaler.step(r.opt)
    r.scaler.update()
    if r.sched is not None:
        r.sched.step()
    n = len(y)
    p.step += 1
    p.partial["seen"] += n
    p.partial["loss"] += value * n
    p.partial["score"] += r.task.score(main.detach().float().cpu().numpy(), y.cpu().numpy()) * n
    return state, stopping


def end_of_epoch(r: _Run, epoch: int, test: dict, seconds: float, progress: bool) -> None:
    """History, best epoch and early stopping, the log line, then the checkpoint."""
    from edgekit import checkpoint as ckpt

    p, cfg, metric_name = r.progress, r.recipe.training, r.task.metric
    seen = max(1, p.partial["seen"])
    p.history.append({
        "epoch": epoch, "train_loss": p.partial["loss"] / seen,
        f"train_{metric_name}": p.partial["score"] / seen, "test_loss": test["loss"],
        f"test_{metric_name}": test[metric_name], "lr": r.opt.param_groups[0]["lr"],
        "seconds": seconds})
    p.seconds += seconds
    p.epoch, p.step, p.partial = epoch, 0, Progress().partial
    metric = test[metric_name]
    if r.task.better(metric, p.best and p.best["metric"]):
        p.best = {"epoch": epoch, "metric": metric}
        if keeps_best(r.recipe):  # the weights to return at the end
            p.best["state"] = ckpt.to_cpu(
                {k: v.clone() for k, v in r.model.state_dict().items()})
    elif cfg.early_stop and epoch - p.best["epoch"] >= cfg.early_stop:
        p.stopped_early = True
    r.bar.set_postfix(epoch=epoch, loss=f"{p.history[-1]['train_loss']:.3f}",
                      test=r.task.format(metric))
    if progress and r.world.main and r.bar.disable:  # a log file or CI: one line an epoch
        print(log_line(p.history[-1]), file=sys.stderr, flush=True)
    r.save()


def epoch_order(n: int, seed: int, epoch: int, world: World) -> list[int]:
    """This rank's sample indices for `epoch`: a DistributedSampler shuffle of range(n)."""
    from torch.utils.data import DistributedSampler

    sampler = DistributedSampler(range(n), num_replicas=world.size, rank=world.rank,
                                 shuffle=True, seed=seed)
    sampler.set_epoch(epoch)
    return list(sampler)


def forward(model, x, state=None):
    """model(x), and for a stateful model (`model.stateful`) also its new state.

    A stateful model takes the state its previous window left, (L, B, H), and returns
    (outputs, state); the state goes on detached, so gradients stop at the window's start
    (truncated backpropagation through time). Returns (outputs, state or None).
    """
    if getattr(getattr(model, "module", model), "stateful", False):  # DDP wraps the model
        out, state = model(x, state)
        return out, state.detach()
    return model(x), None


def evaluate(model, split, batch_size: int, task, loss_fn, device=None,
             world: World | None = None) -> dict:
    """Mean loss and the task's metric of `model` on a held-out split.

    Under torchrun each rank runs every world.size-th sample and the outputs are gathered, so
    every rank gets the metric of the whole split. A split of streams (`split.stream`) is read
    in order, `stream` rows a batch, a stateful model carrying its state.

    Returns:
        {"loss": mean loss per sample, task.metric: value}.
    """
    import torch

    world = world or World()
    device = device or next(model.parameters()).device
    mine = np.arange(world.rank, len(split), world.size)
    batch_size = getattr(split, "stream", 0) or batch_size
    model.eval()
    loss_sum, outputs, state = 0.0, [], None
    with torch.inference_mode():
        for i in range(0, len(mine), batch_size):
            idx = mine[i:i + batch_size]
            x = torch.from_numpy(np.asarray(split.x[idx])).to(device)
            y = torch.from_numpy(np.asarray(split.y[idx])).to(device)
            out, state = forward(model, x, state)
            out = out.float()
            loss_sum += loss_fn(out, y).item() * len(y)
            outputs.append(out.cpu().numpy())
    parts = world.gather((mine, np.concatenate(outputs) if outputs else None, loss_sum))
    order = np.concatenate([idx for idx, out, _ in parts if out is not None])
    every = np.concatenate([out for _, out, _ in parts if out is not None])[np.argsort(order)]
    return {"loss": sum(s for *_, s in parts) / len(split),
            task.metric: task.score(every, np.asarray(split.y))}


def log_line(row: dict) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items())


def _seed(seed: int) -> None:
    import torch

    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def _dtype_name(dtype) -> str | None:
    return None if dtype is None else str(dtype).removeprefix("torch.")


def _kept(run: Path | None) -> str:
    if run is None or not RunDir(run).checkpoint.is_file():
        return ""
    return f"the last good checkpoint is kept in {str(RunDir(run).checkpoint)!r}; "


def _interrupted(signum: int | None, epoch: int, step: int, run: Path | None) -> Interrupted:
    signum = signum or signal.SIGTERM  # another rank was signalled
    where = f"epoch {epoch} step {step}" if step else f"the end of epoch {epoch - 1}"
    saved = (f"; checkpoint saved: continue with `edgekit train --resume {run}`"
             if run is not None else "")
    return Interrupted(f"interrupted by {signal.Signals(signum).name} at {where}{saved}", signum)


class _StopOnSignal:
    """SIGINT/SIGTERM set a flag the loop checks after each step; a second one acts at once."""

    def __init__(self, quiet: bool = False):
        self.signum: int | None = None
        self.quiet = quiet
        self._old: dict = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        self.signum = signum
        signal.signal(signum, self._old[signum])  # the next one is not deferred
        if not self.quiet:
            print(f"\n{signal.Signals(signum).name}: finishing this step and saving a checkpoint"
                  " (send it again to stop at once)", file=sys.stderr, flush=True)

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        return False
