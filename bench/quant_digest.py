"""Digests of the INT8 models ``etc.quantize`` writes under each of its options: the check that a refactor of the
quantization flow changed no output byte (``bench.zoo_digest`` covers the default options only).

Small zoo models (random weights, seeded) are made plain with ``fold,rep,et`` and quantized on 4 bundled-photo
patches with one option changed at a time; each result's SHA-256 over its deterministic serialization is printed
as JSON. ``--compare FILE`` compares against an earlier run's JSON and exits 1 on any difference; ``--variants``
runs some of them. The per-block time limit of ``rounding="reconstruct"`` (etc.quant.reconstruct.Settings.seconds)
stops the optimisation after a load-dependent number of steps, so it is lifted here: the digest then depends on
the code only.

    python -m bench.quant_digest > before.json
    ... change the code ...
    python -m bench.quant_digest --compare before.json
"""

from __future__ import annotations

import argparse
import warnings

from bench.zoo_digest import model_digest, report

VARIANTS: dict[str, dict] = {
    "default": {},
    "minmax": {"method": "minmax"},
    "per-tensor": {"per_channel": False},
    "no-equalize": {"equalize": False},
    "split2": {"split": 2},
    "split3-nostagger": {"split": 3, "stagger": 0.0},
    "split-budget": {"split_budget": 1.05},
    "gptq": {"rounding": "gptq"},
    "nearest": {"rounding": "nearest"},
    "reconstruct": {"rounding": "reconstruct"},
    "no-bias": {"bias_correction": False},
    "range-search": {"range_search": True},
    "finetune": {"finetune_steps": 3},
    "avx2": {"target": "x86-avx2"},
    "prelu-relu": {"prelu_to_relu": True},
}
MODELS = ("espcn", "etds", "ecbsr")


def _quantize(model, **options):
    from etc.quant import quantizer

    out = quantizer.quantize_with_report(model, "samples", num=4, patch=32, **options)
    return out[0] if isinstance(out, tuple) else out


def digests(variants: list[str] | None = None) -> dict[str, str]:
    import dataclasses

    from etc import zoo
    from etc.frontends.torch import export
    from etc.pipeline import run_pipeline
    from etc.quant import reconstruct

    reconstruct.DEFAULT = dataclasses.replace(reconstruct.DEFAULT, seconds=float("inf"))
    out: dict[str, str] = {}
    for name in MODELS:
        small = {} if name == "espcn" else {"M": 2, "C": 8}
        model = export(zoo.build(name, scale=2, seed=1, **small), exporter="legacy", dynamic_hw=True)
        plain = run_pipeline(model, "fold,rep,et").model
        for variant, options in VARIANTS.items():
            if variants is None or variant in variants:
                out[f"{name} {variant}"] = model_digest(_quantize(plain, **options))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compare", help="an earlier run's JSON; exit 1 on any difference")
    parser.add_argument("--variants", help=f"comma-separated subset of: {', '.join(VARIANTS)}")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    now = digests(args.variants.split(",") if args.variants else None)
    return report(now, args.compare, every_key=False)


if __name__ == "__main__":
    raise SystemExit(main())
