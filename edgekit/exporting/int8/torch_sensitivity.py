"""Per-layer sensitivity of the torch int8 formats: how much error each quantized module adds.

The same two SQNRs as edgekit.exporting.int8.sensitivity gives for ONNX, against fp32, in dB:

    sqnr_db             the layer alone: its int8 version fed the fp32 model's own input
                        (quantized with the int8 model's input scale), its output quantized as
                        in the int8 model
    cumulative_sqnr_db  its output in the int8 model, every quantized layer before it included

PT2E (pte-int8): the model converted with its weights left as quantize -> dequantize nodes
(`fold_quantize=False`, numerically the artifact's graph) is run three ways in one pass, node
by node: fp32 (every quantize/dequantize an identity), int8 (as written) and alone (every
quantize or choose_qparams node reads its tensor from the fp32 run, so every layer sees fp32
inputs quantized by the int8 model's own scales). A layer is a compute node (conv, linear,
add, ...) the quantizer annotated, with a dequantized input; its output is what the int8 model
hands on after its activation (ReLU) and output quantize -> dequantize. Its module is the
innermost `nn_module_stack` entry, the name `--int8-exclude` keeps fp32.

torch.ao (torchscript-int8): the converted model keeps the module names of the fp32 model
(fused Conv+ReLU under the conv's name), so forward hooks pair each quantized module's calls
with the same module's calls in the observed fp32 model (dynamic int8: the fp32 model itself).
The alone output is the quantized module run on the fp32 input, quantized with the scale its
int8 input carried.
"""

from __future__ import annotations

import numpy as np

from edgekit.exporting.int8.sensitivity import Layer, sqnr

BATCH = 16  # calibration inputs per run: bounds the memory of every intermediate output
# aten ops that only move, select or clip values: they add no rounding of their own.
PASS_THROUGH = ("view", "reshape", "flatten", "permute", "transpose", "squeeze", "unsqueeze",
                "max_pool", "relu", "hardtanh", "clamp", "clone", "contiguous", "dropout",
                "slice", "select", "expand", "getitem", "_assert", "sym_size", "adaptive_avg")
ACTIVATIONS = ("relu", "hardtanh", "clamp")  # fused into the layer before them by XNNPACK


def pt2e_layer_sqnr(converted, inputs) -> list[Layer]:
    """SQNR of every quantized layer of a PT2E model converted with `fold_quantize=False`.

    Args:
        converted: torchao convert_pt2e(prepared, fold_quantize=False) GraphModule.
        inputs: batches, each a tuple of the model's inputs (torch tensors).

    Returns:
        One Layer per quantized compute node, lowest (worst) `sqnr_db` first; `node` is the
        module name `--int8-exclude` keeps fp32 ("" for an op outside any module).
    """
    import torch

    graph = converted.graph
    layers = {n: _output_of(n) for n in graph.nodes if _is_layer(n)}
    watched = {}
    for layer, out in layers.items():
        watched.setdefault(out.name, []).append(layer.name)
    sums = {n.name: [0.0, 0.0, 0.0] for n in layers}  # signal, noise alone, noise in model
    with torch.no_grad():
        for batch in inputs:
            for name, (ref, q, alone) in _three_runs(converted, batch, watched):
                for layer in watched[name]:
                    r = ref.double()
                    sums[layer][0] += float((r * r).sum())
                    sums[layer][1] += float(((r - alone.double()) ** 2).sum())
                    sums[layer][2] += float(((r - q.double()) ** 2).sum())
    out = [Layer(_module(n), _module(n), _op(n), sqnr(s[0], s[1]), sqnr(s[0], s[2]))
           for n, s in ((n, sums[n.name]) for n in layers)]
    return sorted(out, key=lambda a: a.sqnr_db)


def _three_runs(gm, batch, watched: dict):
    """Run `gm` as fp32, int8 and layer-alone at once, node by node; yield (name, values)
    of the `watched` nodes. Each value is freed after its last use, as fx.Interpreter does.

    In the alone run a quantize node has two values: what the next layer reads (the fp32
    tensor quantized) and what the layer before it hands on (its own alone output quantized,
    `own`): a watched dequantize yields the second.
    """
    from torch.fx.node import map_arg

    user = {}
    for node in gm.graph.nodes:
        for arg in node.all_input_nodes:
            user[arg] = node  # ends as its last user
    last: dict = {}  # node -> the values it is the last user of
    for arg, node in user.items():
        last.setdefault(node, []).append(arg)
    envs = ({}, {}, {})  # fp32, int8, alone
    own = {}  # quantize/dequantize node -> its value on the alone run's own tensor
    feed = iter(batch)
    for node in gm.graph.nodes:
        if node.op == "output":
            break
        if node.op == "placeholder":
            values = (next(feed),) * 3
        elif node.op == "get_attr":
            values = (_attr(gm, node.target),) * 3
        else:
            values = [_step(gm, node, envs, k) for k in range(3)]
            if _kind(node) in ("q", "dq"):
                source = own if node.args[0] in own else envs[2]
                own[node] = _call(gm, node, (source[node.args[0]],
                                             *map_arg(node.args[1:], lambda a: envs[2][a])),
                                  map_arg(node.kwargs, lambda a: envs[2][a]))
        for env, v in zip(envs, values, strict=True):
            env[node] = v
        if node.name in watched and values[0] is not None:
            alone = own.get(node, values[2]) if _kind(node) == "dq" else values[2]
            yield node.name, (_dense(values[0]), _dense(values[1]), _dense(alone))
        for arg in last.get(node, []):
            for env in (*envs, own):
                env.pop(arg, None)


def _step(gm, node, envs, k: int):
    """One node's value in run k (0 fp32, 1 int8, 2 alone)."""
    from torch.fx.node import map_arg

    env = envs[k]
    args = map_arg(node.args, lambda a: env[a])
    kwargs = map_arg(node.kwargs, lambda a: env[a])
    kind = _kind(node)
    if k == 0 and kind in ("q", "dq"):  # fp32: quantization is an identity
        return args[0]
    if k == 2 and kind in ("q", "choose"):  # alone: the next layer reads fp32, quantized
        args = (envs[0][node.args[0]], *args[1:])
    return _call(gm, node, args, kwargs)


def _call(gm, node, args, kwargs):
    if node.op == "call_function":
        return node.target(*args, **kwargs)
    if node.op == "call_method":
        return getattr(args[0], node.target)(*args[1:], **kwargs)
    return _attr(gm, node.target)(*args, **kwargs)  # call_module


def _attr(gm, target: str):
    obj = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _dense(value):
    """A tensor output as a float tensor (the first of a tuple, e.g. an LSTM's output)."""
    while isinstance(value, tuple | list):
        value = value[0]
    return value.dequantize() if value.is_quantized else value.float()


def _kind(node) -> str:
    """"q", "dq", "choose" (choose_qparams) or "" for any other node."""
    name = str(node.target) if node.op == "call_function" else ""
    if "dequantize_per" in name:
        return "dq"
    if "quantize_per" in name:
        return "q"
    return "choose" if "choose_qparams" in name else ""


def _op(node) -> str:
    """"conv2d" for aten.conv2d.default."""
    return getattr(node.target, "__name__", str(node.target)).split(".")[0]


def _is_layer(node) -> bool:
    """A compute op the quantizer annotated (its inputs int8), reading a dequantized input;
    an op kept fp32 may read one too (the previous layer's int8 output), unannotated."""
    if node.op != "call_function" or _kind(node) or _op(node).startswith(PASS_THROUGH):
        return False
    annotated = getattr(node.meta.get("quantization_annotation"), "input_qspec_map", None)
    return bool(annotated) and any(_kind(a) == "dq" for a in node.all_input_nodes)


def _output_of(node):
    """What the int8 model hands on from layer `node`: through its activation (conv -> ReLU),
    then its output quantize -> dequantize if it has one."""
    while len(node.users) == 1:
        (user,) = node.users
        if _kind(user) == "q":
            dq = [u for u in user.users if _kind(u) == "dq"]
            return dq[0] if dq else node
        if _op(user).startswith(ACTIVATIONS):
            node = user
            continue
        break
    return node


def _module(node) -> str:
    """The innermost module the node was traced in ("" at the model's top level)."""
    stack = node.meta.get("nn_module_stack") or {}
    return str(list(stack.values())[-1][0]) if stack else ""


def module_sqnr(reference, quantized, inputs) -> list[Layer]:
    """SQNR of every quantized module of a torch.ao model against the same-named fp32 module.

    Args:
        reference: the fp32 model with the quantized model's module names: the observed FX
            model (static; fused modules as in the converted one) or the model (dynamic).
        quantized: the converted FX model, or the quantize_dynamic model.
        inputs: batches, each a tuple of the model's inputs.

    Returns:
        One Layer per quantized module called, lowest (worst) `sqnr_db` first.
    """
    import torch

    names = [n for n, m in quantized.named_modules() if n and _quantized_leaf(m)]
    ref_modules = dict(reference.named_modules())
    names = [n for n in names if n in ref_modules]
    seen: dict[str, list] = {n: [] for n in names}  # fp32 (inputs, output) per call
    sums = {n: [0.0, 0.0, 0.0] for n in names}
    position = {n: 0 for n in names}

    def record(name):
        def hook(module, args, output):
            seen[name].append((args, output))
        return hook

    def compare(name):
        def hook(module, args, output):
            ref_args, ref_out = seen[name][position[name]]
            position[name] += 1
            alone = module.forward(*[_like(r, q) for r, q in zip(ref_args, args, strict=True)])
            r = _dense(ref_out).double()
            sums[name][0] += float((r * r).sum())
            sums[name][1] += float(((r - _dense(alone).double()) ** 2).sum())
            sums[name][2] += float(((r - _dense(output).double()) ** 2).sum())
        return hook

    handles = [ref_modules[n].register_forward_hook(record(n)) for n in names]
    qmods = dict(quantized.named_modules())
    handles += [qmods[n].register_forward_hook(compare(n)) for n in names]
    try:
        with torch.inference_mode():
            for batch in inputs:
                for n in names:
                    seen[n].clear()
                    position[n] = 0
                reference(*batch)
                quantized(*batch)
    finally:
        for h in handles:
            h.remove()
    out = [Layer(n, n, type(qmods[n]).__name__, sqnr(s[0], s[1]), sqnr(s[0], s[2]))
           for n, s in sums.items() if s[0] > 0 or s[2] > 0]
    return sorted(out, key=lambda a: a.sqnr_db)


def _quantized_leaf(module) -> bool:
    """A module of torch.ao's quantized kernels that computes (not Quantize/DeQuantize)."""
    kind = type(module)
    return kind.__module__.startswith(("torch.ao.nn.quantized", "torch.ao.nn.intrinsic.quantized")
                                      ) and kind.__name__ not in (
        "Quantize", "DeQuantize", "QFunctional", "FloatFunctional", "FXFloatFunctional",
        "Dropout")  # Dropout: an identity in eval mode


def _like(ref, got):
    """The fp32 input `ref` as the int8 module received it: quantized with `got`'s scale, a
    tuple element-wise (an LSTM's (h, c)), unchanged when `got` is fp32 (dynamic int8)."""
    import torch

    if isinstance(ref, tuple | list):
        return type(ref)(_like(r, g) for r, g in zip(ref, got, strict=True))
    if isinstance(got, torch.Tensor) and got.is_quantized:
        return torch.quantize_per_tensor(ref, got.q_scale(), got.q_zero_point(), got.dtype)
    return ref


def batches(example, calibration: np.ndarray, samples: int) -> list[tuple]:
    """The first `samples` calibration inputs in batches of BATCH, each a tuple of the model's
    inputs; a stateful model (`example` = (input, state)) gets its example alone."""
    import torch

    if isinstance(example, tuple):
        return [example]
    x = calibration[:samples].astype(np.float32)
    return [(torch.from_numpy(x[i:i + BATCH]),) for i in range(0, len(x), BATCH)]
