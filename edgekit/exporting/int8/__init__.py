"""int8 that keeps its accuracy: the scheme, where it runs, the search, and the QAT export.

    scheme.py             a backend-neutral quantization scheme, translated by each backend
    targets.py            where a model will run (presets, local): the int8 layouts to try
    plan.py               what the int8 formats share: the method, the layers kept fp32
    mixed.py              the search: calibration methods, then layers kept fp32 by sensitivity
    mixed_onnx.py         the onnx-int8 format's Variants for the search
    mixed_torch.py        the torchscript-int8 and pte-int8 formats' Variants for the search
    sensitivity.py        per-layer SQNR of an int8 QDQ ONNX model
    torch_sensitivity.py  per-layer SQNR of the torch int8 formats
    report.py             the int8 section of report.md and the sensitivity chart
    qat.py                int8 artifacts of a QAT run (the ranges training learned)

Which method (static or dynamic) a model takes is edgekit.int8_method, read by QAT too.
"""
