"""PyTorch -> int8 ExecuTorch `.pte` with PT2E (torchao) and the XNNPACK quantizer.

`torch.export` -> `prepare_pt2e` with XNNPACKQuantizer -> calibration on the same training
samples as the other int8 formats -> `convert_pt2e` -> export again -> lowered to XNNPACK
(edgekit.exporting.formats.pte). Conv nets take the static configuration (calibrated activation
ranges);
Linear/RNN models the dynamic one (ranges measured at run time), as edgekit.exporting.int8.plan
picks.

The target's scheme (edgekit.exporting.int8.scheme.Scheme) is translated here: XNNPACK computes int8
activations (asymmetric) with symmetric int8 weights, per channel when the scheme says so; the
scheme's activation signedness and reduce_range are onnxruntime concerns it has no use for, and
the artifact's layout says what was made.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

from edgekit.exporting.formats.conversion import conversion_error
from edgekit.exporting.formats.pte import MAX_BATCH, export_program, lower
from edgekit.exporting.int8 import observers


def write(ctx, path: Path, manifest: dict) -> list[tuple[Path, dict]]:
    """Format hook for edgekit.exporting: int8 XNNPACK program of ctx.model."""
    plan = ctx.int8
    if getattr(ctx, "qat", None) is not None and not plan.fp32_modules:  # a QAT run's ranges
        from edgekit import qat
        from edgekit.exporting.int8.qat import LEARNED

        how = {"name": "pt2e-xnnpack-qat-pc", "method": "static", "quantizer":
               "XNNPACKQuantizer", "per_channel": True, "ranges": LEARNED}
        converted = qat.convert(ctx.qat)
    else:
        pc = per_channel(ctx)
        how = {"name": f"pt2e-xnnpack-{plan.method}" + ("-pc" if pc else "")
               + plan.layout_suffix(), "method": plan.method, "quantizer": "XNNPACKQuantizer",
               "per_channel": pc, "excluded_modules": list(plan.fp32_modules),
               "fp32_modules": list(plan.fallback_fp32)}
        converted = quantize_pt2e(ctx.model, ctx.example, ctx.calibration, plan.method, pc,
                                  plan.fp32_modules, memo=getattr(ctx, "memo", None))
    program = export_program(converted, ctx.example, "pte-int8")
    own = {**manifest, "artifact": {**manifest["artifact"], "layout": how,
                                    "target": ctx.target.name}}
    return [(lower(program, path, own, how, "pte-int8"), how)]


def per_channel(ctx, plan=None) -> bool:
    """Per-channel int8 weights: as the plan says (the search's per-tensor variant), else
    when the target's scheme and the recipe both say so."""
    plan = plan or ctx.int8
    if plan.per_channel is not None:
        return plan.per_channel
    return ctx.target.schemes(plan.method)[0].per_channel and ctx.cfg.per_channel


def quantize_pt2e(model, example, calibration, method: str, per_channel: bool,
                  exclude: tuple[str, ...] = (), fold: bool = True, memo: dict | None = None):
    """The PT2E int8 model of `model`: observed on `calibration` (N, ...) for static int8.

    Args:
        exclude: module names kept fp32 (no op traced inside them is annotated).
        fold: fold the int8 weights into constants (the artifact); False leaves them as
            quantize -> dequantize of the fp32 weights, the same numbers, for
            edgekit.exporting.int8.torch_sensitivity to run with quantization switched off.
        memo: what the calls of one export share (ExportContext.memo: the same model,
            example and calibration inputs): the exported fp32 graph, and the calibrated
            observers (edgekit.exporting.int8.observers), so a variant of the search is
            calibrated by copying them instead of running the calibration inputs again.

    Raises:
        EdgekitError: the model cannot be exported or quantized (the reason named).
    """
    import torch

    from edgekit.runtime.pte import quiet_torchao_registration

    quiet_torchao_registration()
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(
        is_per_channel=per_channel, is_dynamic=method == "dynamic"))
    if exclude:  # set_module_name(name, None) asserts in executorch 1.5: a filter instead
        from torchao.quantization.pt2e.quantizer.utils import get_module_name_filter

        inside = [get_module_name_filter(name) for name in exclude]
        quantizer.set_filter_function(lambda node: not any(f(node) for f in inside))
    memo = {} if memo is None else memo
    if "pt2e-graph" not in memo:  # torch.export once; prepare_pt2e changes its input
        memo["pt2e-graph"] = export_program(model, example, "pte-int8").module()
    graph = copy.deepcopy(memo["pt2e-graph"])
    states = memo.setdefault("pt2e-observers", {})  # signatures name class and config
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            prepared = prepare_pt2e(graph, quantizer)
            batches = _calibration_batches(example, calibration, method)
            with torch.no_grad():
                if not observers.restore(prepared, states, lambda: prepared(*batches[0])):
                    for batch in batches:
                        prepared(*batch)
                    states.update(observers.saved(prepared))
            return convert_pt2e(prepared, fold_quantize=fold)
    except Exception as e:
        raise conversion_error("pte-int8 (PT2E, XNNPACKQuantizer)", e) from None


def _calibration_batches(example, calibration, method: str):
    """Batches to observe: the training samples (static), or the example alone (dynamic)."""
    import torch

    if method == "dynamic" or isinstance(example, tuple):
        return [example if isinstance(example, tuple) else (example,)]
    return [(torch.from_numpy(calibration[i:i + MAX_BATCH]),)
            for i in range(0, len(calibration), MAX_BATCH)]
