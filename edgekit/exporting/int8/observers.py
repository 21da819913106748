"""Calibrated PT2E observers, reused across the int8 variants of one export.

A PT2E model prepared for calibration (torchao `prepare_pt2e`) computes in fp32: every
observer passes its tensor on unchanged. So an observer's state after calibration depends only
on the tensor it watches, its own configuration and the calibration inputs, not on which other
ops the quantizer annotated. The variants the mixed-precision search makes (the same model
with some modules kept fp32 by a quantizer filter) watch a subset of the tensors the full int8
model watches, with the same observers: their calibrated states can be copied from the first
calibration instead of running the calibration inputs through the model again (resnet18 at 224
px: 256 images through HistogramObservers, per variant).

An observer is matched by its class and configuration and by the graph nodes it watches
(torch.export names nodes the same way on every export of one model). An observer shared by
several edges must watch the same nodes in both graphs. When an observer of an activation has
no match, nothing is copied and the caller calibrates as usual.
"""

from __future__ import annotations

CONFIG = ("dtype", "qscheme", "quant_min", "quant_max", "ch_axis", "reduce_range", "bins")


def saved(prepared) -> dict:
    """The calibrated states of `prepared`'s observers: {signature: state_dict}."""
    return {sig: {k: v.clone() for k, v in module.state_dict().items()}
            for sig, module in _observers(prepared).items()}


def restore(prepared, states: dict | None, forward=None) -> bool:
    """Load every observer of `prepared` from `states` (what `saved` returned for a
    calibration of the same model on the same inputs).

    An observer of a weight (a constant of the graph) gives the same state whatever the
    inputs: where only such observers are new (per-tensor weights where the calibration had
    per-channel ones), `forward()` (one batch) fills them, and the rest are loaded after it.

    Returns:
        True when every observer was loaded; False (nothing loaded) otherwise.
    """
    found = _observers(prepared)
    if not states or not found:
        return False
    missing = [sig for sig in found if sig not in states]
    if missing:
        constants = {n.name for n in prepared.graph.nodes if n.op == "get_attr"}
        if forward is None or not all(set(sig[2]) <= constants for sig in missing):
            return False
        forward()
    for sig, module in found.items():
        if sig in states:
            module.load_state_dict(states[sig])
    return True


def _observers(prepared) -> dict:
    """{(class, configuration, watched node names): observer module} of a prepared graph."""
    watched: dict[int, list[str]] = {}
    modules = {}
    for node in prepared.graph.nodes:
        if node.op != "call_module":
            continue
        module = prepared.get_submodule(node.target)
        if not hasattr(module, "calculate_qparams"):
            continue
        modules[id(module)] = module
        watched.setdefault(id(module), []).append(_source(prepared, node.args[0]).name)
    return {(type(m).__name__, tuple(str(getattr(m, k, None)) for k in CONFIG),
             tuple(sorted(watched[i]))): m for i, m in modules.items()}


def _source(prepared, node):
    """The node whose value an observer sees: through observers before it (identities)."""
    while node.op == "call_module" and hasattr(prepared.get_submodule(node.target),
                                               "calculate_qparams"):
        node = node.args[0]
    return node
