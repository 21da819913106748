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
import math
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

    MODELS.get(recipe.model.name), DATASETS.get(recipe.data.name)  # fail before any work
    run = Path(out) if out else Path("runs") / f"{recipe.name}-{datetime.now():%Y%m%d-%H%M%S}"
    # Staging first: an existing or unwritable run directory fails now, not after training.
    with atomic_dir(run, replace=False) as stage:
        data = build_dataset(recipe.data)
        start = time.perf_counter()
        model, history, amp = fit(recipe, data, progress)
        metrics = {
            "recipe": recipe.name,
            "model": recipe.model.name,
            "dataset": recipe.data.name,
            "test_accuracy": history[-1]["test_accuracy"],
            "test_samples": len(data.test),
            "train_samples": len(data.train),
            "parameters": sum(p.numel() for p in model.parameters()),
            "train_seconds": time.perf_counter() - start,
            "device": str(next(model.parameters()).device),
            "amp": amp,
            # The data contract export must reproduce (checked there via the fingerprint).
            "input_shape": list(data.input_shape),
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
        _plot_curves(history, stage / "curves.png", recipe.name)
    return run


def fit(recipe: Recipe, data, progress: bool = True):
    """The training loop. Returns (model, per-epoch history, AMP dtype name or None)."""
    import torch
    from tqdm import tqdm

    from edgekit.models import build_model

    cfg = recipe.train
    device = _device(cfg.device)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    model = build_model(recipe.model.name, input_shape=data.input_shape,
                        num_outputs=len(data.labels), dropout=recipe.model.dropout).to(device)
    loader = torch.utils.data.DataLoader(
        data.train, batch_size=recipe.data.batch_size, shuffle=True, drop_last=False,
        num_workers=recipe.data.workers, generator=torch.Generator().manual_seed(cfg.seed),
    )
    opt = _optimizer(model, cfg)
    total_steps = cfg.epochs * len(loader)
    sched = (torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total_steps)
             if cfg.schedule == "cosine" else None)
    # Mixed precision only where it pays: CUDA. bf16 needs no loss scaling; fp16 does.
    amp = cfg.amp and device.type == "cuda"
    amp_dtype = torch.bfloat16 if amp and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=amp and amp_dtype == torch.float16)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)

    history = []
    bar = tqdm(total=total_steps, desc=f"train {recipe.name}", unit="step", dynamic_ncols=True,
               disable=not (progress and sys.stderr.isatty()), mininterval=0.5)
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        t0, seen, loss_sum, correct = time.perf_counter(), 0, 0.0, 0
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if cfg.shift:
                x = random_shift(x, cfg.shift)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp):
                logits = model(x)  # (B, K)
                loss = loss_fn(logits, y)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            if sched:
                sched.step()
            seen += len(y)
            loss_sum += loss.item() * len(y)
            correct += (logits.argmax(1) == y).sum().item()
            bar.update()
        if not math.isfinite(loss_sum):
            raise EdgekitError(
                f"training diverged at epoch {epoch} (loss {loss_sum}); lower train.lr"
            )
        test_loss, test_acc = evaluate(model, data.test, recipe.data.batch_size, device)
        history.append({"epoch": epoch, "train_loss": loss_sum / seen,
                        "train_accuracy": correct / seen, "test_loss": test_loss,
                        "test_accuracy": test_acc, "seconds": time.perf_counter() - t0})
        bar.set_postfix(epoch=epoch, loss=f"{loss_sum / seen:.3f}", test_acc=f"{test_acc:.3f}")
        if progress and bar.disable:  # a log file or CI: no carriage-return animation
            print(_log_line(history[-1]), file=sys.stderr, flush=True)
    bar.close()
    return model, history, str(amp_dtype).removeprefix("torch.") if amp else None


def _log_line(row: dict) -> str:
    return " ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items())


def random_shift(x, pad: int):
    """Translate each image of (B, C, H, W) by up to `pad` pixels, repeating the border."""
    import torch
    import torch.nn.functional as F

    _, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad), mode="replicate")  # (B, C, H+2p, W+2p)
    offsets = torch.randint(0, 2 * pad + 1, (len(x), 2)).tolist()
    return torch.stack([padded[i, :, dy:dy + h, dx:dx + w] for i, (dy, dx) in enumerate(offsets)])


def evaluate(model, split, batch_size: int, device=None) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of `model` on an ArraySplit."""
    import torch

    device = device or next(model.parameters()).device
    model.eval()
    loss_sum, correct = 0.0, 0
    with torch.inference_mode():
        for i in range(0, len(split), batch_size):
            x = torch.from_numpy(split.x[i:i + batch_size]).to(device)
            y = torch.from_numpy(split.y[i:i + batch_size]).to(device)
            logits = model(x).float()
            loss_sum += torch.nn.functional.cross_entropy(logits, y, reduction="sum").item()
            correct += (logits.argmax(1) == y).sum().item()
    return loss_sum / len(split), correct / len(split)


def load_run(run: str | Path):
    """Load a run directory: (recipe, model in eval mode on CPU, metrics).

    Raises:
        EdgekitError: the directory is missing or is not a complete run.
    """
    import yaml
    from safetensors.torch import load_file

    from edgekit.models import build_model

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
                            num_outputs=len(metrics["labels"]), dropout=recipe.model.dropout)
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


def _optimizer(model, cfg):
    import torch

    params = model.parameters()
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                               weight_decay=cfg.weight_decay, nesterov=cfg.momentum > 0)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def _save_weights(model, path: Path) -> None:
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata={"format": "pt", "edgekit": __version__})


def _plot_curves(history: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.5))
    ax1.plot(epochs, [h["train_loss"] for h in history], label="train")
    ax1.plot(epochs, [h["test_loss"] for h in history], label="test")
    ax1.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    ax2.plot(epochs, [h["train_accuracy"] for h in history], label="train")
    ax2.plot(epochs, [h["test_accuracy"] for h in history], label="test")
    ax2.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
