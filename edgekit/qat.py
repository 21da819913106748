"""Quantization-aware training: fine-tune a finished run with int8 simulated in the loop.

A recipe's `qat` section turns `edgekit train` into a fine-tuning of a finished run (`qat.base`,
by default the newest finished run of the same recipe under runs/):

    base weights -> torch.export (dynamic batch) -> prepare_qat_pt2e with the XNNPACK quantizer
    (torchao PT2E: symmetric int8 weights per channel, asymmetric int8 activations, the pattern
    ExecuTorch runs) -> qat.epochs epochs of the usual loop (edgekit.loop) at qat.lr

The fake-quantized model is the run's model: the loop evaluates it (so the run's metric is the
simulated int8 one), checkpoints it and resumes it like any training; model.safetensors holds its
whole state (weights, BatchNorm statistics and the learned ranges). The schedule is the tutorial
one (PyTorch's "PT2E quantization-aware training"): after `freeze_bn` epochs BatchNorm uses its
running statistics, after `freeze_ranges` epochs the observers stop and the ranges stay put.
edgekit.exporting.int8.qat turns the result into int8 ONNX (QDQ) and `.pte` that use the learned
ranges.
"""

from __future__ import annotations

import math
import types
import warnings
from pathlib import Path

from edgekit.errors import EdgekitError, one_line

QUANTIZER = ("XNNPACKQuantizer (PT2E): int8 weights symmetric per output channel, int8 "
             "activations asymmetric")
MAX_BATCH = 4096  # the dynamic batch the prepared graph accepts (evaluation reads 256)


def resolve_base(recipe, root: str | Path = "runs") -> Path:
    """The finished, plain (not QAT) run that `recipe`'s QAT fine-tunes.

    `qat.base` "latest" is the newest finished run of the same recipe under `root`.

    Raises:
        EdgekitError: no such run, an unfinished one, a QAT run, or one of another model.
    """
    from edgekit.rundir import RunDir

    base = recipe.qat.base
    if base == "latest":
        finished = [p for p in Path(root).iterdir() if RunDir(p).finished()] \
            if Path(root).is_dir() else []
        saved = {p: _recipe_of(p) for p in finished}  # each recipe.yaml read once
        runs = [p for p, r in saved.items() if r.get("name") == recipe.name
                and not (r.get("qat") or {}).get("epochs")]
        if not runs:
            raise EdgekitError(f"qat.base latest: no finished {recipe.name} run under "
                               f"{str(root)!r} to fine-tune; train one first (`edgekit train "
                               f"{recipe.name}`) or give qat.base=RUN")
        return max(runs, key=lambda p: (RunDir(p).metrics.stat().st_mtime, p.name))
    path = Path(base)
    if not RunDir(path).finished():
        raise EdgekitError(f"qat.base {base!r} is not a finished run directory; expected a run "
                           "written by `edgekit train` (with metrics.json)")
    saved = _recipe_of(path)
    if (saved.get("qat") or {}).get("epochs"):
        raise EdgekitError(f"qat.base {base!r} is itself a QAT run; give the plain run it "
                           "fine-tuned")
    if saved.get("model") != recipe.to_dict()["model"]:
        raise EdgekitError(f"qat.base {base!r} trained another model ({saved.get('model')}); "
                           f"expected {recipe.to_dict()['model']}")
    return path


def check_supported(model, recipe) -> None:
    """QAT here is static int8 (ranges learned for every activation): conv and MLP nets.

    Raises:
        EdgekitError: a stateful model, or one that int8 quantizes dynamically.
    """
    from edgekit.int8_method import choose_method

    method, _ = choose_method(model, recipe.export.int8_method)
    if getattr(model, "stateful", False) or method != "static":
        raise EdgekitError(
            f"qat: {recipe.model.name} is quantized dynamically (int8 weights, activation "
            "ranges measured at run time), which has no ranges to learn; QAT applies to static "
            "int8 (conv nets, or export.int8_method=static); set qat.epochs=0")


def prepare(model, example, base: str | Path | None = None):
    """The fake-quantized training graph of `model` (the base run's weights loaded first).

    Args:
        example: a batch of inputs (B >= 2, ...) to trace with.
        base: the finished run whose weights to start from; None when a checkpoint is
            loaded after.

    Raises:
        EdgekitError: the model cannot be exported or prepared (the reason named),
            executorch's quantizer is not installed, or the base run's weights do not fit.
    """
    import torch

    if base is not None:
        from safetensors.torch import load_file

        from edgekit.rundir import WEIGHTS

        try:
            model.load_state_dict(load_file(Path(base) / WEIGHTS))
        except Exception as e:  # a damaged file, or weights of another model
            raise EdgekitError(f"qat.base {str(base)!r}: its weights do not fit the model "
                               f"({type(e).__name__}: {one_line(e)[:200]})") from None
    quantizer = _quantizer()
    from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e

    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            graph = torch.export.export(model.train(), (example,),
                                        dynamic_shapes=({0: batch},)).module()
            prepared = prepare_qat_pt2e(graph, quantizer)
    except Exception as e:
        raise EdgekitError(f"qat: {type(model).__name__} cannot be prepared for quantization-"
                           f"aware training: {type(e).__name__}: {one_line(e)}") from None
    prepared.bn_frozen = False
    prepared.train = types.MethodType(_train, prepared)
    prepared.eval = types.MethodType(lambda self: self.train(False), prepared)
    prepared.load_state_dict = types.MethodType(_load_state_dict, prepared)
    return prepared.train()


def _load_state_dict(self, state, strict: bool = True, assign: bool = False):
    """load_state_dict, then each observer's eps as saved: torchao's observers reset it to
    float32's on load (measured: 2**-12 became 1.2e-7), so a resumed run drifted."""
    import torch

    result = torch.nn.Module.load_state_dict(self, state, strict, assign)
    with torch.no_grad():
        for key, value in state.items():
            if key.endswith(".eps"):
                self.get_buffer(key).copy_(value)
    return result


def _train(self, mode: bool = True):
    """train()/eval() of an exported graph: the `training` argument of its dropout and
    BatchNorm calls (an exported graph has them baked in). torchao's
    allow_exported_model_train_eval is not used: its dropout rewrite sets every p to 0.5."""
    import torch

    aten = torch.ops.aten
    where = {aten.dropout.default: (2, mode),
             aten.batch_norm.default: (5, mode and not self.bn_frozen)}
    for node in self.graph.nodes:
        if node.target in where:
            i, value = where[node.target]
            node.args = (*node.args[:i], value, *node.args[i + 1:])
    self.recompile()
    self.training = mode
    for child in self.children():
        child.train(mode)
    return self


def freeze(prepared, epoch: int, cfg) -> None:
    """Apply the recipe's schedule before `epoch` (1-based) trains; idempotent, so a resume
    mid-epoch reaches the same state."""
    if epoch > bn_epochs(cfg) and not prepared.bn_frozen:  # BatchNorm uses running statistics
        prepared.bn_frozen = True
        prepared.train(prepared.training)
    if epoch > range_epochs(cfg):  # the int8 ranges stop moving
        for module in prepared.modules():
            if hasattr(module, "disable_observer"):
                module.disable_observer()


def calibrate(prepared, x, batch_size: int, device) -> None:
    """Set the int8 ranges from training inputs `x` (N, ...) before any QAT epoch: the
    observers see them in eval mode (BatchNorm on its running statistics, no dropout, no
    gradient), so the graph simulates plain int8 of the base run. That is QAT's epoch 0:
    the point a fine-tune must beat to be kept (edgekit.loop keeps the best epoch)."""
    import numpy as np
    import torch

    prepared.eval()
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            prepared(torch.from_numpy(np.asarray(x[i:i + batch_size])).to(device))
    prepared.train()


def bn_epochs(cfg) -> int:
    """Epochs with BatchNorm statistics updating: freeze_bn, or 2/3 of them (rounded up)."""
    return cfg.freeze_bn if cfg.freeze_bn >= 0 else math.ceil(cfg.epochs * 2 / 3)


def range_epochs(cfg) -> int:
    """Epochs with the observers moving the ranges: freeze_ranges, or as BatchNorm."""
    return cfg.freeze_ranges if cfg.freeze_ranges >= 0 else bn_epochs(cfg)


def load(run: Path, model, example):
    """The fake-quantized model (eval mode) of finished QAT run `run`.

    Args:
        model: the run's fp32 model (edgekit.training.load_run), copied, not changed.

    Raises:
        EdgekitError: the run's weights do not fit the prepared graph.
    """
    from safetensors.torch import load_file

    from edgekit.rundir import WEIGHTS

    prepared = prepare(_copy(model), example)
    try:
        prepared.load_state_dict(load_file(Path(run) / WEIGHTS))
    except Exception as e:  # another torch/torchao numbering of observers, or a damaged file
        raise EdgekitError(f"run {str(run)!r}: its QAT state does not fit the quantized graph "
                           f"built here ({type(e).__name__}: {one_line(e)[:200]})") from None
    return prepared.eval()


def convert(prepared, fold_quantize: bool = True):
    """The int8 graph (quantize/dequantize around int8 ops) of a fake-quantized model, which
    is copied, not changed.

    Args:
        fold_quantize: store the weights as int8 (True), or keep them fp32 behind
            quantize -> dequantize (False: what a per-layer error analysis reads).
    """
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return convert_pt2e(_copy(prepared).eval(), fold_quantize=fold_quantize)


def _quantizer():
    try:
        from edgekit.runtime.pte import quiet_torchao_registration

        quiet_torchao_registration()
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
            XNNPACKQuantizer,
            get_symmetric_quantization_config,
        )
    except ImportError as e:
        raise EdgekitError(f"qat needs executorch's XNNPACK quantizer and torchao ({e.name} is "
                           "missing): pip install 'edgekit[pte]'") from None
    return XNNPACKQuantizer().set_global(
        get_symmetric_quantization_config(is_per_channel=True, is_qat=True))


def _copy(module):
    import copy

    return copy.deepcopy(module)


def _recipe_of(run: Path) -> dict:
    import yaml

    from edgekit.recipe import safe_yaml
    from edgekit.rundir import RunDir

    path = RunDir(run).recipe
    try:
        return safe_yaml(path.read_text(encoding="utf-8"), str(path)) or {}
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return {}


def check_base(base: Path, data) -> dict:
    """The base run's record for the QAT run's metrics, checked to share `data`'s contract.

    Raises:
        EdgekitError: the base run saw other inputs, labels or preprocessing.
    """
    import json

    from edgekit.rundir import RunDir

    metrics = json.loads(RunDir(base).metrics.read_text(encoding="utf-8"))
    for key, ours in (("input_shape", list(data.input_shape)), ("labels", data.labels),
                      ("preprocess", data.preprocess)):
        if metrics.get(key) != ours:
            raise EdgekitError(f"qat.base {str(base)!r} was trained on other data ({key} "
                               f"{metrics.get(key)!r}); expected {ours!r}, as this recipe's")
    name = f"test_{metrics['metric']}"
    return {"base": str(base), f"base_{name}": metrics.get(name), "quantizer": QUANTIZER}
