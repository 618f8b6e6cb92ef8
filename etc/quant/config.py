"""The options of ``etc.quantize`` in one place: ``QuantConfig``, shared by the Python API and ``etc quantize``.

Each field carries its one-line doc (``field(metadata={"doc": ...})``); :func:`etc.quant.quantizer.quantize`
takes the same names as keyword arguments and its docstring is generated from these docs, and a test checks that
the command line's options map onto these fields with the same defaults and choices.

    config = QuantConfig(rounding="gptq", split=2)
    int8, report = etc.quantize("plain.onnx", "samples", config=config)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field

from etc.errors import BadModelError

METHODS = ("auto", "minmax", "percentile", "entropy")
ROUNDINGS = ("refit", "gptq", "nearest", "reconstruct")
TARGETS = ("int32", "x86-avx2", "native", "htp")
A16_COSTS = ("estimate", "htp")
BUDGET_MAX_COPIES = (
    2  # copies per channel under split_budget when split is not given (etc.quant.split_budget)
)


def _opt(default, doc: str):
    return field(default=default, metadata={"doc": doc})


@dataclass(frozen=True)
class QuantConfig:
    """Every quantization option, with its default (``etc quantize --help`` shows the same choices)."""

    scale: int | None = _opt(None, "upscaling factor; None measures it from the model (output H / input H)")
    method: str = _opt(
        "auto",
        f"activation range method, one of {', '.join(METHODS)}; auto picks per tensor the lowest error",
    )
    num: int = _opt(32, "calibration patches")
    patch: int = _opt(64, "calibration patch size (LR pixels)")
    per_channel: bool = _opt(True, "int8 weight scales per output channel (False: one per tensor)")
    equalize: bool = _opt(True, "FP32-exact cross-layer equalization (checked with onnxruntime)")
    split: int = _opt(1, "most copies of a dominant input channel (FP32-exact, more MACs); 1 = off")
    split_budget: float | None = _opt(
        None,
        "buy channel copies by noise removed per added MAC up to this MAC multiple (e.g. 1.05); None = off",
    )
    stagger: float = _opt(0.03, "scale step between copies of a split channel (0 = identical copies)")
    rounding: str = _opt("refit", f"weight rounding, one of {', '.join(ROUNDINGS)}")
    bias_correction: bool = _opt(
        True, "add each Conv's mean output error on the calibration patches to its bias"
    )
    range_search: bool = _opt(
        False, "scale each activation range by the factor that minimises the output error"
    )
    finetune_steps: int = _opt(0, "bounded fine-tuning steps of the int8 weights and biases (torch); 0 = off")
    target: str = _opt("int32", f"kernel the model is made for, one of {', '.join(TARGETS)}")
    safe_u8s8: bool | str | None = _opt(None, "weight-grid constraint; None = the one the target implies")
    prelu_to_relu: bool = _opt(
        False,
        "rewrite PReLU/LeakyReLU as ReLU on doubled channels first (exact, but 2x the channels around each: "
        "more MACs); False keeps them (HTP has a PReLU op; a16='auto' can carry their inputs in 16 bits)",
    )
    input_ranges: Mapping[str, tuple[float, float]] | None = _opt(
        None, "{input name: (lo, hi)} of the model inputs; None = (0, 1)"
    )
    seed: int = _opt(0, "seed of the calibration crops and of the fine-tuning")
    exclude: tuple[str, ...] = _opt(
        (), "nodes kept in float: node names (as quantization names them) or their output tensors"
    )
    sensitivity: bool = _opt(
        False, "per-layer table in report.sensitivity: output PSNR with each quantized Conv kept float"
    )
    a16: str = _opt(
        "none",
        "activations carried in 16 bits (A16W8 on HTP): none, all, auto (the fewest regions that bring the "
        "held-out drop to max_drop) or tensor names separated by commas",
    )
    max_drop: float = _opt(
        0.05, "a16='auto': the held-out PSNR-Y drop (dB, median over the held-out crops) to reach"
    )
    a16_budget: float = _opt(
        1.25, "a16='auto': the most cycles the mixed model may take, a multiple of the pure 8-bit model's"
    )
    a16_max_share: float = _opt(
        0.25, "a16='auto': the largest share of the quantized activation tensors stored in 16 bits"
    )
    a16_cost: str = _opt(
        "estimate",
        f"what a16='auto' ranks regions by, one of {', '.join(A16_COSTS)}: the cost model's estimate or "
        "HTP cycles (onnxruntime-qnn)",
    )
    floor: bool = _opt(
        True,
        "measure the floor: the held-out drop of uint8 activations alone (weights float), next to the model's",
    )

    def validate(self) -> None:
        """Raises BadModelError naming the option and the accepted values (the target is checked on resolve)."""
        if self.method not in METHODS:
            raise BadModelError(
                f"unknown calibration method '{self.method}'; choose from {', '.join(METHODS)}"
            )
        most = self.most_copies
        if self.stagger < 0 or (most - 1) * self.stagger >= 1:
            raise BadModelError(
                f"stagger {self.stagger} with split {most}: need 0 <= stagger < 1 / (split - 1)"
            )
        if self.split_budget is not None and self.split_budget < 1:
            raise BadModelError(f"split budget {self.split_budget}: need a MAC multiple >= 1")
        if self.rounding not in ROUNDINGS:
            raise BadModelError(f"unknown rounding '{self.rounding}'; choose from {', '.join(ROUNDINGS)}")
        if self.a16_cost not in A16_COSTS:
            raise BadModelError(f"unknown a16 cost '{self.a16_cost}'; choose from {', '.join(A16_COSTS)}")
        if self.max_drop < 0:
            raise BadModelError(f"max drop {self.max_drop} dB: need a drop >= 0")
        if self.a16_budget < 1:
            raise BadModelError(f"a16 budget {self.a16_budget}: need a multiple of the 8-bit cycles >= 1")
        if not 0 < self.a16_max_share <= 1:
            raise BadModelError(f"a16 max share {self.a16_max_share}: need a share in (0, 1]")
        if not str(self.a16).strip() or not any(n.strip() for n in str(self.a16).split(",")):
            raise BadModelError(f"a16 '{self.a16}': give none, all, auto or tensor names separated by commas")

    @property
    def most_copies(self) -> int:
        """Copies per channel the split may make: ``split``, or BUDGET_MAX_COPIES under a budget without it."""
        if self.split_budget is None:
            return self.split
        return self.split if self.split > 1 else BUDGET_MAX_COPIES

    def as_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["exclude"] = list(self.exclude)
        if self.input_ranges is not None:
            out["input_ranges"] = {k: list(v) for k, v in self.input_ranges.items()}
        return out

    @classmethod
    def docs(cls) -> str:
        """One line per option: ``name=default: doc`` (the Args section of ``etc.quantize``)."""
        return "\n".join(f"    {f.name}={f.default!r}: {f.metadata['doc']}" for f in dataclasses.fields(cls))
