"""Digests of what ETC makes of every zoo model: the check that a refactor changed no output byte.

For every zoo name (random weights at the default and a small size, and the pretrained weights where they exist)
the legacy export is optimized with ``fold,rep,et`` (align 1 and 4) and with the opt-in ``depthwise`` and
``prelu`` passes, and two small models are quantized; each result's SHA-256 over its deterministic serialization is
printed as JSON. ``--compare FILE`` compares against an earlier run's JSON and exits 1 on any difference.

    python -m bench.zoo_digest > before.json
    ... change the code ...
    python -m bench.zoo_digest --compare before.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import warnings

import onnx

PASSES = ("fold,rep,et", "fold,rep,et,depthwise", "fold,rep,et,prelu")
SEEDED = ("plain", "espcn", "fsrcnn", "abpn", "abpn_et", "ecbsr", "ecbsr_et", "etds", "etds_dual")


def model_digest(model: onnx.ModelProto) -> str:
    """The first 16 hex digits of the SHA-256 of the model's deterministic serialization."""
    return hashlib.sha256(model.SerializeToString(deterministic=True)).hexdigest()[:16]


def _models() -> dict[str, onnx.ModelProto]:
    from etc import zoo
    from etc.frontends.torch import export

    models = {}
    for name in zoo.available():
        small = {} if name in ("espcn", "fsrcnn") else {"M": 2, "C": 8}
        models[f"{name}/small"] = export(zoo.build(name, scale=2, seed=1, **small), exporter="legacy")
        models[f"{name}/default"] = export(zoo.build(name, scale=2, seed=1), exporter="legacy")
    if zoo.pretrained_dir() is not None:
        for name in SEEDED:
            scale = 4 if name == "plain" else 2
            kw = {"clamp": True} if name in ("abpn", "ecbsr") else {}
            net = zoo.build(name, scale=scale, pretrained=True, **kw)
            models[f"{name}/pretrained"] = export(net, exporter="legacy", dynamic_hw=True)
    return models


def digests() -> dict[str, str]:
    from etc.pipeline import Options, run_pipeline
    from etc.quant import quantize

    out: dict[str, str] = {}
    models = _models()
    for key, model in models.items():
        for passes in PASSES:
            for align in (1, 4):
                result = run_pipeline(model, passes, options=Options(align_channels=align)).model
                out[f"{key} {passes} align={align}"] = model_digest(result)
    for key in ("espcn/small", "etds/small"):
        plain = run_pipeline(models[key], "fold,rep,et").model
        out[f"{key} quantize"] = model_digest(quantize(plain, calib="samples", num=8)[0])
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compare", help="an earlier run's JSON; exit 1 on any difference")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    return report(digests(), args.compare)


def report(now: dict[str, str], compare: str | None, *, every_key: bool = True) -> int:
    """Prints ``now`` as JSON, or its differences from the JSON file ``compare`` (exit status 1 on any); with
    ``every_key`` False only the keys of ``now`` are compared (a subset was run)."""
    if not compare:
        json.dump(now, sys.stdout, indent=1, sort_keys=True)
        print()
        return 0
    with open(compare) as f:
        before = json.load(f)
    keys = before.keys() | now.keys() if every_key else now.keys()
    changed = sorted(k for k in keys if before.get(k) != now.get(k))
    for key in changed:
        print(f"DIFFERENT {key}: {before.get(key)} -> {now.get(key)}")
    print(f"{len(now)} outputs, {len(changed)} different")
    return 1 if changed else 0


if __name__ == "__main__":
    raise SystemExit(main())
