"""Train a recipe and write its run directory; load a run back for export.

A run directory (written whole or not at all):
    recipe.yaml        the resolved recipe, every default filled in
    model.safetensors  weights (a plain tensor file: nothing to unpickle)
    metrics.json       per-epoch history, final test accuracy, data contract
    curves.png         loss and accuracy per epoch
    train.log          one line per epoch
    sample.png         a held-out image to try `edgekit predict` on (image datasets)
"""

from __future__ import annotations

import json
import platform
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np

from edgekit import __version__
from edgekit.errors import EdgekitError
from edgekit.fileio import atomic_dir, write_json, write_text
from edgekit.recipe import Recipe, from_dict

WEIGHTS = "model.safetensors"


def train(recipe: Recipe, out: str | Path | None = None, progress: bool = True) -> Path:
    """Train `recipe` and write a run directory.

    Args:
        out: the run directory to create; default runs/NAME-YYYYmmdd-HHMMSS.
        progress: report progress on stderr: a progress bar on a terminal, else a line per epoch.

    Returns:
        The run directory.

    Raises:
        EdgekitError: `out` already exists, or the recipe names an unknown model/dataset.
    """
    import torch

    from edgekit.data import DATASETS, build_dataset
    from edgekit.models import MODELS
    from edgekit.tasks import get_task

    MODELS.get(recipe.model.name), DATASETS.get(recipe.data.name)  # fail before any work
    run = Path(out) if out else Path("runs") / f"{recipe.name}-{datetime.now():%Y%m%d-%H%M%S}"
    # Staging first: an existing or unwritable run directory fails now, not after training.
    with atomic_dir(run, replace=False) as stage:
        data = build_dataset(recipe.data)
        start = time.perf_counter()
        model, history, amp = fit(recipe, data, progress)
        task = get_task(data.task)
        key = f"test_{task.metric}"
        final = (max if task.higher_is_better else min)(h[key] for h in history) \
            if recipe.train.early_stop else history[-1][key]
        metrics = {
            "recipe": recipe.name,
            "model": recipe.model.name,
            "dataset": recipe.data.name,
            "task": data.task,
            "metric": task.metric,
            f"test_{task.metric}": final,
            "test_samples": len(data.test),
            "train_samples": len(data.train),
            "parameters": sum(p.numel() for p in model.parameters()),
            "train_seconds": time.perf_counter() - start,
            "device": str(next(model.parameters()).device),
            "amp": amp,
            # The data contract export must reproduce (checked there via the fingerprint).
            "input_shape": list(data.input_shape),
            "input_dtype": str(data.train.x.dtype),
            "labels": data.labels,
            "preprocess": data.preprocess,
            "data_fingerprint": data.fingerprint(),
            "versions": {"edgekit": __version__, "torch": torch.__version__,
                         "python": platform.python_version()},
            "history": history,
        }
        if data.test.images:  # a held-out image to try `edgekit predict` on
            metrics["sample"] = {"file": "sample.png", "label": data.labels[int(data.test.y[0])]}
            data.test.images[0].save(stage / "sample.png")
        _save_weights(model, stage / WEIGHTS)
        write_text(stage / "recipe.yaml", recipe.to_yaml())
        write_json(stage / "metrics.json", metrics)
        write_text(stage / "train.log", "\n".join(_log_line(h) for h in history) + "\n")
        _plot_curves(history, stage / "curves.png", recipe.name, task.metric)
    return run


def fit(recipe: Recipe, data, progress: bool = True):
    """The training loop. Returns (model, per-epoch history, AMP dtype name or None).

    What the outputs mean (loss view, metric, which direction is better) comes from the data's
    task (edgekit.tasks); the loss, optimizer and schedule from the recipe (edgekit.losses,
    edgekit.optim). The loop itself knows no task, loss or optimizer by name.
    """
    import torch

    threads = torch.get_num_threads()
    if recipe.train.threads:
        torch.set_num_threads(recipe.train.threads)
    try:
        return _fit(recipe, data, progress)
    finally:
        torch.set_num_threads(threads)


def _fit(recipe: Recipe, data, progress: bool = True):
    import torch
    from tqdm import tqdm

    from edgekit.losses import build_loss
    from edgekit.models import build_model, model_options
    from edgekit.optim import build_optimizer, build_scheduler, l1_penalty
    from edgekit.tasks import get_task

    cfg = recipe.train
    task = get_task(data.task)
    device = _device(cfg.device)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    model = build_model(recipe.model.name, input_shape=data.input_shape,
                        num_outputs=len(data.labels), dropout=recipe.model.dropout,
                        **model_options(recipe.model, data.preprocess)).to(device)
    stateful = getattr(model, "stateful", False)
    if stateful and data.train.stream != recipe.data.batch_size:
        raise EdgekitError(f"model.stateful needs ordered windows of a series, {recipe.data.name} "
                           "has none; choose a stream dataset (sincos) or set it to false")
    loader = torch.utils.data.DataLoader(  # a stream's windows stay in order
        data.train, batch_size=recipe.data.batch_size, shuffle=not stateful, drop_last=False,
        num_workers=max(0, recipe.data.workers),
        generator=torch.Generator().manual_seed(cfg.seed),
    )
    loss_fn = build_loss(cfg.loss, task, cfg.label_smoothing)
    opt = build_optimizer(model, cfg)
    sched = build_scheduler(opt, cfg, len(loader))
    # Mixed precision only where it pays: CUDA. bf16 needs no loss scaling; fp16 does.
    amp = cfg.amp and device.type == "cuda"
    amp_dtype = torch.bfloat16 if amp and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=amp and amp_dtype == torch.float16)

    history, best = [], None
    bar = tqdm(total=cfg.epochs * len(loader), desc=f"train {recipe.name}", unit="step",
               dynamic_ncols=True, disable=not (progress and sys.stderr.isatty()),
               mininterval=0.5)
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        t0, seen, loss_sum, score_sum = time.perf_counter(), 0, 0.0, 0.0
        state = None  # a stateful model starts every pass over its streams from zeros
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            x = augment(x, cfg.shift, cfg.flip)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp):
                out, state = forward(model, x, state)  # (B, K), or (main, *aux) in training
                main, aux = (out[0], out[1:]) if isinstance(out, tuple) else (out, ())
                loss = loss_fn(main, y) + sum(AUX_WEIGHT * loss_fn(a, y) for a in aux)
                if cfg.l1:
                    loss = loss + cfg.l1 * l1_penalty(model)
            if not torch.isfinite(loss):
                raise EdgekitError(f"training diverged at epoch {epoch}: the loss is "
                                   f"{loss.item()}; lower train.lr")
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if cfg.grad_clip:
                scaler.unscale_(opt)  # clip the true gradients, not the fp16-scaled ones
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            scaler.step(opt)
            scaler.update()
            if sched:
                sched.step()
            seen += len(y)
            loss_sum += loss.item() * len(y)
            score_sum += task.score(main.detach().float().cpu().numpy(), y.cpu().numpy()) * len(y)
            bar.update()
        test = evaluate(model, data.test, recipe.data.batch_size, task, loss_fn, device)
        history.append({"epoch": epoch, "train_loss": loss_sum / seen,
                        f"train_{task.metric}": score_sum / seen, "test_loss": test["loss"],
                        f"test_{task.metric}": test[task.metric],
                        "lr": opt.param_groups[0]["lr"], "seconds": time.perf_counter() - t0})
        bar.set_postfix(epoch=epoch, loss=f"{loss_sum / seen:.3f}",
                        test=task.format(test[task.metric]))
        if progress and bar.disable:  # a log file or CI: no carriage-return animation
            print(_log_line(history[-1]), file=sys.stderr, flush=True)
        if task.better(test[task.metric], best and best["metric"]):
            best = {"epoch": epoch, "metric": test[task.metric],
                    "state": {k: v.detach().clone() for k, v in model.state_dict().items()}}
        elif cfg.early_stop and epoch - best["epoch"] >= cfg.early_stop:
            break  # early stopping: no better held-out metric for early_stop epochs
    bar.close()
    if cfg.early_stop:  # keep the best epoch's weights, not the last one's
        model.load_state_dict(best["state"])
    return model, history, str(amp_dtype).removeprefix("torch.") if amp else None


# Weight of auxiliary classifier losses (inception_v3, googlenet) while training.
AUX_WEIGHT = 0.4


def _log_line(row: dict) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items())


def augment(x, shift: int = 0, flip: bool = False):
    """Random translation by up to `shift` pixels (border repeated) and horizontal flips.

    Args:
        x: a batch of images (B, C, H, W); other shapes are returned unchanged.
    """
    import torch
    import torch.nn.functional as F

    if x.dim() != 4 or not (shift or flip):
        return x
    b, _, h, w = x.shape
    if shift:
        padded = F.pad(x, (shift, shift, shift, shift), mode="replicate")  # (B, C, H+2s, W+2s)
        dy, dx = torch.randint(0, 2 * shift + 1, (2, b, 1), device=x.device)
        rows = (dy + torch.arange(h, device=x.device))[:, :, None]  # (B, H, 1)
        cols = (dx + torch.arange(w, device=x.device))[:, None, :]  # (B, 1, W)
        batch = torch.arange(b, device=x.device)[:, None, None]  # (B, 1, 1)
        x = padded[batch, :, rows, cols].permute(0, 3, 1, 2)  # (B, H, W, C) -> (B, C, H, W)
    if flip:
        mask = torch.rand(b, device=x.device) < 0.5
        x = torch.where(mask[:, None, None, None], x.flip(3), x)
    return x.contiguous()


def forward(model, x, state=None):
    """model(x), and for a stateful model (`model.stateful`) also its new state.

    A stateful model takes the state its previous window left, (L, B, H), and returns
    (outputs, state); the state goes on detached, so gradients stop at the window's start
    (truncated backpropagation through time). Returns (outputs, state or None).
    """
    if getattr(model, "stateful", False):
        out, state = model(x, state)
        return out, state.detach()
    return model(x), None


def evaluate(model, split, batch_size: int, task, loss_fn, device=None) -> dict:
    """Mean loss and the task's metric of `model` on a held-out split.

    Returns:
        {"loss": mean loss per sample, task.metric: value}.
    """
    import torch

    device = device or next(model.parameters()).device
    model.eval()
    loss_sum, outputs, state = 0.0, [], None
    batch_size = getattr(split, "stream", 0) or batch_size
    with torch.inference_mode():
        for i in range(0, len(split), batch_size):  # in order: a stream carries its state
            x = torch.from_numpy(np.asarray(split.x[i:i + batch_size])).to(device)
            y = torch.from_numpy(np.asarray(split.y[i:i + batch_size])).to(device)
            out, state = forward(model, x, state)
            out = out.float()
            loss_sum += loss_fn(out, y).item() * len(y)
            outputs.append(out.cpu().numpy())
    return {"loss": loss_sum / len(split),
            task.metric: task.score(np.concatenate(outputs), np.asarray(split.y))}


def load_run(run: str | Path):
    """Load a run directory: (recipe, model in eval mode on CPU, metrics).

    Raises:
        EdgekitError: the directory is missing or is not a complete run.
    """
    import yaml
    from safetensors.torch import load_file

    from edgekit.models import build_model, model_options

    run = Path(run)
    if not run.is_dir():
        raise EdgekitError(f"run directory {str(run)!r} does not exist")
    missing = [f for f in ("recipe.yaml", WEIGHTS, "metrics.json") if not (run / f).is_file()]
    if missing:
        raise EdgekitError(f"{str(run)!r} is not a run directory (missing {', '.join(missing)})")
    try:
        recipe = from_dict(yaml.safe_load((run / "recipe.yaml").read_text(encoding="utf-8")))
        metrics = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
        model = build_model(recipe.model.name, input_shape=metrics["input_shape"],
                            num_outputs=len(metrics["labels"]), dropout=recipe.model.dropout,
                            **model_options(recipe.model, metrics["preprocess"]))
        model.load_state_dict(load_file(run / WEIGHTS))
    except EdgekitError as e:
        raise EdgekitError(f"run {str(run)!r}: {e}") from None
    except Exception as e:  # corrupt YAML/JSON/safetensors, or weights of another model
        msg = " ".join(str(e).split())[:300]
        raise EdgekitError(f"run {str(run)!r} is damaged: {type(e).__name__}: {msg}") from None
    return recipe, model.eval(), metrics


def _device(name: str):
    import torch

    if name == "cuda" and not torch.cuda.is_available():
        raise EdgekitError("train.device: 'cuda' requested but no CUDA device is available")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def _save_weights(model, path: Path) -> None:
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata={"format": "pt", "edgekit": __version__})


def _plot_curves(history: list[dict], path: Path, title: str, metric: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.5))
    ax1.plot(epochs, [h["train_loss"] for h in history], label="train")
    ax1.plot(epochs, [h["test_loss"] for h in history], label="test")
    ax1.set(xlabel="epoch", ylabel="loss", title="loss")
    ax2.plot(epochs, [h[f"train_{metric}"] for h in history], label="train")
    ax2.plot(epochs, [h[f"test_{metric}"] for h in history], label="test")
    ax2.set(xlabel="epoch", ylabel=metric, title=metric)
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
