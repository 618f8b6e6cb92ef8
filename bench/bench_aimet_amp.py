"""Peer: aimet-onnx's automatic mixed precision (AMP) choosing 8- or 16-bit activations per quantizer group,
on the models bench.bench_a16 saved (run bench.bench_a16's cpu stage first). Bench only; aimet-onnx lives in its
own venv (it would otherwise pull a newer torch):

    python -m venv --system-site-packages /work/venv_aimet
    /work/venv_aimet/bin/pip install aimet-onnx -c constraints.txt   # torch==2.13.0, onnxruntime==1.32.0
    PYTHONPATH=. /work/venv_aimet/bin/python -m bench.bench_aimet_amp [--only KEY,...] [--htp-size 64]

Per model: ``QuantizationSimModel`` with aimet's HTP v73 config (per-channel symmetric int8 conv weights,
8-bit asymmetric activations, exported as uint8) and its SQNR-based ranges (``post_training_tf_enhanced``: on
ETDS M4C32 x4 its A16W8 lost 0.062 dB on the held-out median against 0.80 with min-max) on the same 32 calibration patches as ETC (64x64 LR), then
``choose_mixed_precision`` with candidates A8W8 and A16W8 and an allowed drop of ``--max-drop`` on the same
measure as ETC's ``--a16 auto``: the median PSNR-Y drop over the same 8 held-out 64x64 calibration crops
(accuracy = minus that drop, so FP32 scores 0). Its QDQ export (``to_onnx_qdq``) is measured like the
bench.bench_a16 variants: CPU drop on the evaluation photos at full size, CPU/HTP drop on the centre crops, HTP
cycles (per-node floor, least of ``--rounds``) against bench.bench_a16's A8 model measured in the same rounds.
Results go to bench/_work/a16/aimet.json; bench.bench_a16 shows them as a row when present.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings

import numpy as np

from bench.bench_a16 import AIMET_CACHE, WORK, centre_crops, htp_drops
from bench.bench_quant import MODELS, key


def median_drop_fn(fp32, pairs, scale):
    """accuracy(session) = minus the median per-crop PSNR-Y drop of the session against ``fp32``."""
    from etc.quant.calib import to_nchw
    from etc.quant.metrics import chw_to_hwc, psnr_y, to_uint8
    from etc.quant.summary import heldout_psnrs

    ref = np.asarray(heldout_psnrs(fp32, pairs, scale))

    def accuracy(session, *_) -> float:
        name = session.get_inputs()[0].name
        got = []
        for pair in pairs:
            out = session.run(None, {name: to_nchw(pair.lr)})[0]
            got.append(psnr_y(to_uint8(chw_to_hwc(np.clip(out, 0.0, 1.0))), pair.hr, scale))
        return -float(np.median(ref - np.asarray(got)))

    return accuracy


def aimet_amp(fp32, scale: int, max_drop: float, scheme: str = "post_training_tf_enhanced"):
    """(QDQ model, seconds) of aimet's AMP on ``fp32`` (module doc) with the range scheme ``scheme``."""
    from aimet_onnx.common.defs import CallbackFunc, QuantizationDataType, QuantScheme
    from aimet_onnx.mixed_precision import choose_mixed_precision
    from aimet_onnx.quantsim import QuantizationSimModel

    from etc.quant.calib import calibration_patches
    from etc.quant.summary import heldout_pairs

    patches = calibration_patches("samples", scale, num=32, patch=64)
    pairs = heldout_pairs("samples", scale, num=8, patch=64, seed=1000)
    import aimet_onnx

    config = str(
        __import__("pathlib").Path(aimet_onnx.__file__).parent
        / "common/quantsim_config/htp_quantsim_config_v73.json"
    )
    started = time.perf_counter()
    sim = QuantizationSimModel(
        fp32,
        param_type="int8",
        activation_type="int8",
        quant_scheme=getattr(QuantScheme, scheme),
        config_file=config,
    )

    def calibrate(session, *_):
        name = session.get_inputs()[0].name
        for x in patches:
            session.run(None, {name: x})

    sim.compute_encodings(calibrate)
    accuracy = CallbackFunc(median_drop_fn(fp32, pairs, scale))
    a8w8 = ((8, QuantizationDataType.int), (8, QuantizationDataType.int))
    a16w8 = ((16, QuantizationDataType.int), (8, QuantizationDataType.int))
    with tempfile.TemporaryDirectory() as tmp:
        choose_mixed_precision(
            sim,
            [a16w8, a8w8],
            accuracy,
            accuracy,
            max_drop,
            tmp,
            True,
            CallbackFunc(calibrate),
        )
    return sim.to_onnx_qdq(), time.perf_counter() - started


def share_16(qmodel) -> tuple[int, int]:
    """(activation tensors quantized to 16 bits, activation tensors quantized) over the QuantizeLinear nodes."""
    from onnx import TensorProto

    inits = {i.name: i.data_type for i in qmodel.graph.initializer}
    types = {}
    for node in qmodel.graph.node:
        if node.op_type == "QuantizeLinear" and len(node.input) > 2 and node.input[0] not in inits:
            types[node.input[0]] = inits.get(node.input[2])
    wide = sum(t in (TensorProto.UINT16, TensorProto.INT16) for t in types.values())
    return wide, len(types)


def measure(k: str, scale: int, qmodel, size: int, rounds: int) -> dict:
    import onnx

    from bench.bench_a16 import _least_cycles
    from etc.quant.calib import load_pairs
    from etc.quant.summary import psnr_drop

    folder = WORK / k
    fp32 = onnx.load(str(folder / "fp32.onnx"))
    a8 = onnx.load(str(folder / "a8.onnx"))
    out = {"cpu": psnr_drop(fp32, qmodel, load_pairs("samples", scale), scale)}
    wide, total = share_16(qmodel)
    out["wide"] = f"{wide}/{total}"
    run = htp_drops(fp32, {"aimet": qmodel}, centre_crops(load_pairs("samples", scale), scale, size), scale)
    run |= {"cycles": {}, "per_op": {}}
    for _ in range(rounds):
        for name, q in (("a8", a8), ("aimet", qmodel)):
            if name not in run["errors"]:
                _least_cycles(run, name, q, size)
    out["htp_run"] = run
    return out


def main() -> None:
    import onnx

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated keys, e.g. etds_M4C32_x2")
    parser.add_argument("--max-drop", type=float, default=0.05)
    parser.add_argument("--htp-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    results = json.loads(AIMET_CACHE.read_text()) if AIMET_CACHE.exists() else {}
    wanted = set(args.only.split(",")) if args.only else None
    for spec in MODELS:
        k = key(*spec)
        if (wanted is not None and k not in wanted) or not (WORK / k / "fp32.onnx").exists():
            continue
        fp32 = onnx.load(str(WORK / k / "fp32.onnx"))
        try:
            qmodel, seconds = aimet_amp(fp32, spec[3], args.max_drop)
        except Exception as exc:
            results[k] = {"error": f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]}"}
        else:
            onnx.save(qmodel, str(WORK / k / "aimet.onnx"))
            results[k] = measure(k, spec[3], qmodel, args.htp_size, args.rounds) | {"seconds": seconds}
        AIMET_CACHE.write_text(json.dumps(results, indent=1))
        print(f"{k}: {json.dumps(results[k])}", flush=True)


if __name__ == "__main__":
    main()
