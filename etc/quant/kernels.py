"""Deployment targets: what the int8 kernel that will run the QDQ model adds exactly.

* ``int32`` (default): products of uint8 activations and int8 weights accumulate exactly in int32, which is
  what the QDQ graph says and what NPUs, TFLite, QNN, x86 VNNI (AVX512-VNNI, AVX-VNNI) and ARM dot-product
  kernels compute. No constraint on the int8 weights.
* ``x86-avx2``: x86 CPUs without VNNI multiply with ``vpmaddubsw``, which adds two products in saturating
  int16 (the pairs of :func:`etc.quant.qdq.kernel_pairs`); the weight grids keep every such pair below
  saturation (``safe_u8s8="pairs"``), which costs precision.
* ``native``: probe this CPU's onnxruntime u8s8 kernel (:func:`kernel_saturates_pairs`) and pick one of the two.
* ``htp``: Qualcomm's HTP NPU (through onnxruntime-qnn). Its int8 products accumulate exactly, but it
  requantizes in its own way; the model is written in the form HTP runs entirely and as the graph says
  (:mod:`etc.quant.htp_form`: uint8 PReLU slopes, float16-exact 16-bit multipliers, a bias shift against its
  rounding). No constraint on the int8 weights.

The quantized model records the target it was made for in ``metadata_props`` (:data:`METADATA_KEY`).
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import onnx

from etc.errors import BadModelError

TARGETS = ("int32", "x86-avx2", "native", "htp")
METADATA_KEY = "etc.quant.target"
KERNEL_FLAGS = ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm")


def saturation_probe(channels: int, kernel: int, a: int, b: int) -> float:
    """Fused int8 output at the centre of a Conv whose row 0 has int8 weights 127 at NHWC reduction indices
    ``a`` and ``b``, on an all-255 input: 2.0 when computed exactly, about 1.0 when the kernel added the two
    products in saturating int16."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    c, k = channels, kernel
    w = np.zeros((4, k, k, c))
    w.reshape(4, -1)[0, [a, b]] = 127
    inits = {
        "xs": np.float32(1 / 255),
        "xz": np.uint8(0),
        "wq": w.transpose(0, 3, 1, 2).astype(np.int8),
        "ws": np.full(4, 1 / 127, np.float32),
        "wz": np.zeros(4, np.int8),
        "ys": np.float32(8 / 255),
        "yz": np.uint8(0),
    }
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
        helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["wd"], axis=0),
        helper.make_node("Conv", ["xd", "wd"], ["c"], pads=[k // 2] * 4),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("QuantizeLinear", ["r", "ys", "yz"], ["yq"]),
        helper.make_node("DequantizeLinear", ["yq", "ys", "yz"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 6, 6])],
        [numpy_helper.from_array(v, n) for n, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return float(sess.run(None, {"x": np.ones((1, c, 6, 6), np.float32)})[0][0, 0, 3, 3])


@functools.lru_cache(maxsize=1)
def kernel_saturates_pairs() -> bool:
    """True when this CPU's fused u8s8 kernel adds weight pairs in saturating int16 (x86 AVX2 without VNNI);
    False when it accumulates exactly in int32 (AVX512-VNNI, AVX-VNNI, ARM)."""
    return saturation_probe(3, 3, 0, 1) < 1.5


def resolve(target: str) -> str:
    """``int32``, ``x86-avx2`` or ``htp``: ``native`` is replaced by what this CPU's kernel does."""
    if target not in TARGETS:
        raise BadModelError(f"unknown target '{target}'; choose from {', '.join(TARGETS)}")
    if target == "native":
        return "x86-avx2" if kernel_saturates_pairs() else "int32"
    return target


def safe_mode(resolved: str) -> bool | str:
    """The weight-grid constraint (``safe_u8s8`` of :mod:`etc.quant.qdq`) a resolved target needs."""
    return "pairs" if resolved == "x86-avx2" else False


def record(model: onnx.ModelProto, resolved: str, requested: str) -> None:
    """Writes the target into ``model.metadata_props`` (replacing an earlier entry)."""
    keep = [p for p in model.metadata_props if p.key not in (METADATA_KEY, METADATA_KEY + ".requested")]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    onnx.helper.set_model_props(
        model,
        {**{p.key: p.value for p in keep}, METADATA_KEY: resolved, METADATA_KEY + ".requested": requested},
    )


def recorded(model: onnx.ModelProto) -> str | None:
    """The target a quantized model was made for, or None."""
    return next((p.value for p in model.metadata_props if p.key == METADATA_KEY), None)


def cpu_name_and_flags() -> tuple[str, list[str]]:
    """(CPU model name, the int8-relevant flags it has) from /proc/cpuinfo; ("unknown", []) elsewhere."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        import platform

        return platform.processor() or platform.machine() or "unknown", []
    name, flags = "unknown", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "cpu model") and name == "unknown":
            name = value.strip()
        elif key in ("flags", "features") and not flags:
            flags = set(value.split())
    return name, [f for f in KERNEL_FLAGS if f in flags]
