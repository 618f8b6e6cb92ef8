"""INT8 quantization and evaluation of super-resolution models.

    import etc
    int8, report = etc.quantize("plain.onnx", calib="samples")    # onnx.ModelProto (QDQ), etc.QuantReport
    rows = etc.quant.evaluate.evaluate_models({"int8": int8}, "samples", scale=4)

Modules: :mod:`calib` (image folders and bundled photos), :mod:`equalize` (FP32-exact rescaling, the
``equalize`` pass), :mod:`split` and :mod:`stagger` (channel copies and their rescaling, exact passes),
:mod:`observe` (calibration statistics, range methods), :mod:`rounding` (GPTQ weight rounding), :mod:`refit`
(each Conv refitted to the FP32 output from its quantized input), :mod:`search` (output-error range search),
:mod:`finetune` (bounded torch fine-tuning), :mod:`target` (deployment kernels: int32, x86-avx2, native probe),
:mod:`qdq` (placement and int8/int32 tensors), :mod:`proto` (the ModelProto helpers they share),
:mod:`config` (the options, QuantConfig), :mod:`quantizer` (the flow as named steps over one state),
:mod:`summary` (held-out drop, MACs, latency), :mod:`metrics` (PSNR/SSIM on Y), :mod:`evaluate` (model
evaluation on image sets).
"""

from __future__ import annotations

from typing import Any

__all__ = ["QuantConfig", "QuantReport", "quantize", "quantize_with_report"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from etc.quant import quantizer

        return getattr(quantizer, name)
    raise AttributeError(f"module 'etc.quant' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
