"""One line for a model that a format cannot take: what every exporter raises."""

from __future__ import annotations

import re

from edgekit.errors import EdgekitError, one_line


def conversion_error(what: str, e: Exception) -> EdgekitError:
    """One line for a model that a format cannot take, naming the operator when known.

    Args:
        what: the format, as the user should read it ("onnx (opset 18)", "torchscript").
        e: what torch.onnx / torch.jit / torch.fx raised (their messages run to pages).
    """
    text = str(e)
    op = (re.search(r"op='([\w.]+)', overload='(\w+)'", text)
          or re.search(r"target=torch\.ops\.([\w.]+?)(?:\.default)?\]?\(", text)
          or re.search(r"[Uu]nsupported (?:operator|op|node)[^\w]*([\w:.]+)", text))
    if op:
        return EdgekitError(f"{what}: operator {op.group(1)} cannot be exported; keep it out of "
                            "the model or export another format")
    causes = re.findall(r"<class '[\w.]+'>: (.+)", text)
    first = (causes[0] if causes else next((s for s in text.splitlines() if s.strip()), ""))
    return EdgekitError(f"{what}: the model cannot be exported: {type(e).__name__}: "
                        f"{one_line(first, 240)}")
