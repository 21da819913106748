"""Train a recipe into a run directory, resume an interrupted run, load a finished one.

A run directory:
    recipe.yaml        the resolved recipe, every default filled in (written first)
    checkpoint.pt      while training: the state after the last epoch (edgekit.checkpoint)
    train.log          one line per epoch
    model.safetensors  weights (a plain tensor file: nothing to unpickle)    } written when
    curves.png         loss and the task's metric per epoch                   } training ends,
    sample.png         a held-out image to try `edgekit predict` on          } metrics.json
    metrics.json       per-epoch history, final held-out metric, data contract } last
A run is finished once metrics.json exists; its checkpoint is then removed. An unfinished run
(stopped by a signal, a crash or a diverging loss) continues with `edgekit train --resume RUN`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import shutil
import sys
from datetime import datetime
from pathlib import Path

from edgekit import __version__
from edgekit import checkpoint as ckpt
from edgekit.errors import EdgekitError, Interrupted, one_line
from edgekit.fileio import write_json, write_text
from edgekit.recipe import Recipe, check_fits_machine, from_dict, safe_yaml
from edgekit.rundir import CHECKPOINT, METRICS, RECIPE, WEIGHTS, RunDir


def train(recipe: Recipe, out: str | Path | None = None, progress: bool = True) -> Path | None:
    """Train `recipe` and write a run directory.

    Under torchrun every process calls this; rank 0 writes the run.

    Args:
        out: the run directory to create; default runs/NAME-YYYYmmdd-HHMMSS.
        progress: report progress on stderr: a progress bar on a terminal, else a line per epoch.

    Returns:
        The run directory (None on torchrun ranks other than 0).

    Raises:
        EdgekitError: `out` already exists, unknown model/dataset, data that can't be had, or
            a loss that diverged (the last good checkpoint stays in the run).
        Interrupted: SIGINT/SIGTERM stopped training after a checkpoint.
    """
    from edgekit import distributed
    from edgekit.data import build_dataset, dataset_builder
    from edgekit.distributed import select_device
    from edgekit.loop import fit
    from edgekit.models import check_model_name

    check_model_name(recipe.model.name)  # fail before any work
    check_fits_machine(recipe)
    dataset_builder(recipe.data.name)
    world = distributed.init(select_device(recipe.train.device).type)
    try:
        data = build_dataset(recipe.data)
        if data.name != recipe.data.name:  # the recipe's fallback: record what was trained on
            if world.main:
                print(f"note: {data.note}", file=sys.stderr, flush=True)
            recipe = dataclasses.replace(
                recipe, data=dataclasses.replace(recipe.data, name=data.name, fallback=""))
        if recipe.qat.epochs:  # the run it fine-tunes, named in recipe.yaml (a resume reads it)
            recipe = _qat_base(recipe, data)
        kind = "-qat" if recipe.qat.epochs else ""
        run = world.broadcast(Path(out) if out else
                              Path("runs") / f"{recipe.name}{kind}-{datetime.now():%Y%m%d-%H%M%S}")
        failed = None
        if world.main:
            try:
                _claim(run, recipe)
            except (EdgekitError, OSError) as e:
                failed = e
        if world.broadcast(str(failed) if failed else None):
            raise failed or EdgekitError(f"rank 0 could not create {str(run)!r}")
        try:
            result = fit(recipe, data, progress, run=run, world=world)
        except Interrupted:
            raise
        except BaseException:
            if world.main and not RunDir(run).checkpoint.exists():
                shutil.rmtree(run, ignore_errors=True)  # stopped before anything worth keeping
            raise
        return _finish(run, recipe, data, result, world)
    finally:
        distributed.shutdown(world)


def resume(run: str | Path, progress: bool = True) -> Path | None:
    """Continue an unfinished run from its checkpoint, to the same result as an unbroken run.

    Returns:
        The run directory (None on torchrun ranks other than 0).

    Raises:
        EdgekitError: the run is missing, finished, not an edgekit run, or its data changed;
            nothing is changed then.
    """
    from edgekit import distributed
    from edgekit.data import build_dataset
    from edgekit.distributed import select_device
    from edgekit.loop import fit

    run = Path(run)
    content = resumable(run)
    recipe = from_dict(content["recipe"])
    world = distributed.init(select_device(recipe.train.device).type)
    try:
        data = build_dataset(recipe.data)
        if data.fingerprint() != content.get("data_fingerprint"):
            raise EdgekitError(f"the data built from run {str(run)!r}'s recipe differ from those "
                               "it was training on (files, split or preprocessing changed)")
        if world.main:
            ckpt.remove_stale(run)
        result = fit(recipe, data, progress, run=run, checkpoint=content, world=world)
        return _finish(run, recipe, data, result, world)
    finally:
        distributed.shutdown(world)


def resumable(run: Path) -> dict:
    """The checkpoint of unfinished run `run`, checked to belong to it.

    Raises:
        EdgekitError: missing, finished or foreign run, or an unreadable checkpoint.
    """
    import yaml

    if not run.is_dir():
        raise EdgekitError(f"--resume: run directory {str(run)!r} does not exist")
    if RunDir(run).metrics.is_file():
        raise EdgekitError(f"--resume: run {str(run)!r} is finished (it has metrics.json); "
                           "nothing to resume")
    if not RunDir(run).checkpoint.is_file() or not RunDir(run).recipe.is_file():
        raise EdgekitError(f"--resume: {str(run)!r} is not an unfinished edgekit run (no "
                           f"{CHECKPOINT} and {RECIPE}); expected a run directory left "
                           "by an interrupted `edgekit train`")
    content = ckpt.load(RunDir(run).checkpoint)
    try:
        saved = safe_yaml(RunDir(run).recipe.read_text(encoding="utf-8"),
                          str(RunDir(run).recipe))
    except (yaml.YAMLError, UnicodeDecodeError):
        saved = None
    if saved != content.get("recipe"):
        raise EdgekitError(f"--resume: {str(RunDir(run).checkpoint)!r} was not written for the "
                           f"recipe in {str(RunDir(run).recipe)!r}; it belongs to another run")
    return content


def load_run(run: str | Path):
    """Load a finished run directory: (recipe, model in eval mode on CPU, metrics).

    A run `edgekit import` made from an ONNX file has no PyTorch model: its model is None (and
    nothing of torch is imported). A model that lives in the run's own source/ folder (a user's
    .py file, a .pt2) is built from there; one with several or non-class outputs comes wrapped
    so that it gives them packed into one (B, D) tensor (edgekit.tasks.Raw).

    Raises:
        EdgekitError: the directory is missing, unfinished, or not a complete run.
    """

    run = Path(run)
    if not run.is_dir():
        raise EdgekitError(f"run directory {str(run)!r} does not exist")
    missing = [f for f in (RECIPE, WEIGHTS, METRICS) if not (run / f).is_file()
               and not (f == WEIGHTS and RunDir(run).onnx_source.is_file())]
    if missing and RunDir(run).checkpoint.is_file():
        raise EdgekitError(f"run {str(run)!r} is unfinished; continue it with "
                           f"`edgekit train --resume {run}`")
    if missing:
        raise EdgekitError(f"{str(run)!r} is not a run directory (missing {', '.join(missing)})")
    try:
        recipe = from_dict(safe_yaml(RunDir(run).recipe.read_text(encoding="utf-8"),
                                     str(RunDir(run).recipe)))
        metrics = json.loads(RunDir(run).metrics.read_text(encoding="utf-8"))
        if metrics.get("source", {}).get("kind") == "onnx":
            return recipe, None, metrics
        model = _build_run_model(run, recipe, metrics)
    except EdgekitError as e:
        raise EdgekitError(f"run {str(run)!r}: {e}") from None
    except ImportError:  # a missing extra (safetensors, torch): the CLI names the install
        raise
    except Exception as e:  # corrupt YAML/JSON/safetensors, or weights of another model
        msg = one_line(e)
        raise EdgekitError(f"run {str(run)!r} is damaged: {type(e).__name__}: {msg}") from None
    return recipe, model.eval(), metrics


def _build_run_model(run: Path, recipe: Recipe, metrics: dict):
    from safetensors.torch import load_file

    from edgekit.models import prepare_model
    from edgekit.models.external import pack_outputs
    from edgekit.rundir import SOURCE

    cfg = recipe.model
    if cfg.name.startswith(SOURCE + "/"):  # the run's own copy of the user's code or program
        cfg = dataclasses.replace(cfg, name=str(run.resolve() / cfg.name))
    model, _ = prepare_model(cfg, metrics["input_shape"], len(metrics["labels"]),
                             load_weights=False, preprocess=metrics["preprocess"])
    state = load_file(run / WEIGHTS)
    if recipe.qat.epochs:  # the fake-quantized graph's state: its fp32 part
        state = {k: state[k] for k in model.state_dict()}
    model.load_state_dict(state)
    if metrics.get("outputs"):  # named outputs, packed into one row (tasks.Raw)
        model = pack_outputs(model, [o["name"] for o in metrics["outputs"]])
    return model


def _qat_base(recipe: Recipe, data) -> Recipe:
    from edgekit import qat

    base = qat.resolve_base(recipe)
    qat.check_base(base, data)
    return dataclasses.replace(recipe, qat=dataclasses.replace(recipe.qat, base=str(base)))


def _claim(run: Path, recipe: Recipe) -> None:
    """Create the run directory (it must not exist) and write the resolved recipe into it."""
    if run.exists():
        raise EdgekitError(f"{str(run)!r} already exists; choose another name")
    run.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.mkdir(run)  # exclusive: another process can't have claimed the name meanwhile
    except FileExistsError:
        raise EdgekitError(f"{str(run)!r} appeared while this ran; not replacing it") from None
    where, _, attr = recipe.model.name.rpartition(":")
    if where.endswith(".py") and Path(where).is_file():  # the run keeps the code it trained
        from edgekit.rundir import SOURCE

        (run / SOURCE).mkdir()
        shutil.copyfile(where, run / SOURCE / Path(where).name)
        recipe = dataclasses.replace(recipe, model=dataclasses.replace(
            recipe.model, name=f"{SOURCE}/{Path(where).name}:{attr}"))
    write_text(RunDir(run).recipe, recipe.to_yaml())


def _finish(run: Path, recipe: Recipe, data, result, world) -> Path | None:
    """Write the finished run's files, metrics.json last, then drop the checkpoint."""
    import torch

    from edgekit.loop import keeps_best, log_line
    from edgekit.tasks import get_task

    if not world.main:
        world.barrier()
        return None
    task = get_task(data.task)
    rows = [result.start, *result.history] if result.start else result.history
    best = next(h for h in rows if h["epoch"] == result.best_epoch)
    final = best if keeps_best(recipe) else result.history[-1]
    metrics = {
        "recipe": recipe.name,
        "model": recipe.model.name,
        "dataset": data.name,
        "task": data.task,
        "metric": task.metric,
        f"test_{task.metric}": final[f"test_{task.metric}"],
        "epoch": final["epoch"],  # the epoch whose weights were kept
        "stopped_early": result.stopped_early,
        "test_samples": len(data.test),
        "train_samples": len(data.train),
        "parameters": sum(p.numel() for p in result.model.parameters()),
        "train_seconds": result.seconds,
        "device": result.device,
        "processes": world.size,
        "amp": result.amp,
        # The data contract export must reproduce (checked there via the fingerprint).
        "input_shape": list(data.input_shape),
        "input_dtype": str(data.train.x.dtype),  # int64 for token ids
        "labels": data.labels,
        "preprocess": data.preprocess,
        "data_fingerprint": data.fingerprint(),
        "versions": {"edgekit": __version__, "torch": torch.__version__,
                     "python": platform.python_version()},
        "history": result.history,
    }
    if recipe.qat.epochs:  # the metric above is the fake-quantized (simulated int8) model's
        metrics["qat"] = {**_qat_record(recipe, data), **kept_epoch(result, task.metric)}
    if len(data.test) and data.test.image(0) is not None:  # a held-out image to predict on
        metrics["sample"] = {"file": "sample.png", "label": data.labels[int(data.test.y[0])]}
        data.test.image(0).save(run / "sample.png")
    _save_weights(result.model, run / WEIGHTS)
    write_text(RunDir(run).log, "\n".join(log_line(h) for h in result.history) + "\n")
    _plot_curves(result.history, RunDir(run).curves, recipe.name, task.metric)
    write_json(RunDir(run).metrics, metrics)
    RunDir(run).checkpoint.unlink(missing_ok=True)
    world.barrier()
    return run


def kept_epoch(result, metric: str) -> dict:
    """QAT's kept epoch against its calibrated start (epoch 0: plain int8 of the base run,
    simulated): {"kept_epoch", "start_test_<metric>", "kept_test_<metric>", "why"}."""
    start = result.start or {}
    kept = next((h for h in result.history if h["epoch"] == result.best_epoch), start)
    name = f"test_{metric}"
    if result.best_epoch == 0:
        why = (f"no QAT epoch beat the calibrated start (plain int8, simulated: "
               f"{start.get(name)}); the start was kept")
    else:
        why = (f"epoch {result.best_epoch} of {len(result.history)} had the best held-out int8 "
               f"{metric} ({kept.get(name)}, the calibrated start: {start.get(name)})")
    return {"kept_epoch": result.best_epoch, f"start_{name}": start.get(name),
            f"kept_{name}": kept.get(name), "why_kept": why}


def _qat_record(recipe: Recipe, data) -> dict:
    from edgekit import qat

    try:
        record = qat.check_base(Path(recipe.qat.base), data)
    except (OSError, ValueError, KeyError, EdgekitError):  # the base run is gone or changed
        record = {"base": recipe.qat.base, "quantizer": qat.QUANTIZER}
    return {**record, "epochs": recipe.qat.epochs, "lr": recipe.training.lr,
            "freeze_bn_after": qat.bn_epochs(recipe.qat),
            "freeze_ranges_after": qat.range_epochs(recipe.qat)}


def _save_weights(model, path: Path) -> None:
    from safetensors.torch import save

    from edgekit.fileio import atomic_path

    # Cloned: a QAT graph shares one observer between tensors (its state lists it twice).
    state = {k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        tmp.write_bytes(save(state, metadata={"format": "pt", "edgekit": __version__}))


def _plot_curves(history: list[dict], path: Path, title: str, metric: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from edgekit.fileio import atomic_path

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
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
