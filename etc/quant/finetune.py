"""Bounded fine-tuning of the int8 weights and biases against the FP32 model's output (AdaQuant-style, torch).

The QDQ model is simulated in torch: every quantized tensor fake-quantized with its fixed uint8 scale and zero
point, every Conv weight kept on its fixed per-channel int8 grid, ``W = s_w · round(q + v)``, with the
straight-through estimator for both roundings. ``v`` (in grid steps) and the biases are trained with Adam to
minimise the mean squared difference between the simulated model's output and the FP32 model's output on
random crops of the calibration patches, for at most ``steps`` steps. Then both the fine-tuned and the
starting QDQ models are run in onnxruntime (optimizations off) on ``held_out`` patches never trained on, and
the fine-tuned weights are kept only if their output error against the FP32 model is lower.

Graphs: Conv (stride 1, explicit pads), Relu, DepthToSpace, Slice with constant arguments, Identity; anything
else makes :func:`finetune` decline (returns None and the reason).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import onnx

from etc import proto
from etc.quant import qdq

SUPPORTED = frozenset({"Conv", "Relu", "DepthToSpace", "Slice", "Identity"})


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def unsupported(model: onnx.ModelProto, plan: qdq.Plan) -> str | None:
    """Why the model cannot be simulated here, or None."""
    consts = qdq.constants(model)
    for node in model.graph.node:
        if node.op_type == "Constant":
            continue
        if node.op_type not in SUPPORTED:
            return f"{node.op_type} node {node.name} is not simulated"
        if node.op_type == "Conv":
            a = _attrs(node)
            if (
                node.name not in plan.convs
                or a.get("group", 1) != 1
                or a.get("auto_pad", b"NOTSET") != b"NOTSET"
            ):
                return f"Conv {node.name}: only quantized ungrouped Convs with explicit pads"
            if any(s != 1 for s in a.get("strides", [1, 1])) or any(
                d != 1 for d in a.get("dilations", [1, 1])
            ):
                return f"Conv {node.name}: only stride 1, dilation 1"
        if node.op_type == "Slice" and not all(i in consts for i in node.input[1:] if i):
            return f"Slice {node.name}: arguments are not constant"
    return None


class _Sim:
    """The QDQ model in torch (module docstring); ``params`` are the trainable tensors."""

    def __init__(self, model, plan, ranges, grids, frozen=frozenset()):
        import torch

        self.torch = torch
        self.model, self.plan = model, plan
        self.consts = qdq.constants(model)
        self.act = {}
        for name in [*plan.inputs, *plan.own]:
            scale, zp = qdq.act_params(*ranges[name])
            self.act[name] = (float(scale), float(zp))
        for name in plan.tied:
            self.act[name] = self.act[plan.root(name)]
        self.weights = {}
        self.params = []
        for node in model.graph.node:
            if node.op_type != "Conv":
                continue
            w = self.consts[node.input[1]].astype(np.float64)
            s = np.asarray(grids[node.name], np.float64).reshape(-1, 1, 1, 1)
            q = np.clip(np.round(w / s), -127, 127)
            train = node.name not in frozen
            v = torch.zeros(q.shape, dtype=torch.float32, requires_grad=train)
            b = torch.tensor(self.consts[node.input[2]].astype(np.float32), requires_grad=train)
            self.weights[node.name] = (
                torch.tensor(q, dtype=torch.float32),
                torch.tensor(s, dtype=torch.float32),
                v,
                b,
            )
            if train:
                self.params += [v, b]

    def _fq(self, name, x):
        if name not in self.act:
            return x
        scale, zp = self.act[name]
        q = self.torch.clamp(self.torch.round(x / scale) + zp, 0, 255)
        return x + ((q - zp) * scale - x).detach()

    def weight(self, name):
        q, s, v, b = self.weights[name]
        soft = q + v
        hard = self.torch.clamp(self.torch.round(soft), -127, 127)
        return s * (soft + (hard - soft).detach()), b

    def __call__(self, x, quantize=True):
        import torch.nn.functional as F

        first = self.model.graph.input[0].name
        env = {first: self._fq(first, x) if quantize else x}
        for node in self.model.graph.node:
            if node.op_type == "Constant":
                continue
            a = _attrs(node)
            x = env[node.input[0]]
            if node.op_type == "Conv":
                if quantize:
                    w, b = self.weight(node.name)
                else:
                    w = self.torch.tensor(self.consts[node.input[1]])
                    b = self.torch.tensor(self.consts[node.input[2]])
                p = a.get("pads", [0, 0, 0, 0])
                y = F.conv2d(F.pad(x, (p[1], p[3], p[0], p[2])), w, b)
            elif node.op_type == "Relu":
                y = self.torch.relu(x)
            elif node.op_type == "DepthToSpace":
                y = _depth_to_space(x, a["blocksize"], a.get("mode", b"DCR"))
            elif node.op_type == "Slice":
                y = _slice(x, [self.consts[i] if i else None for i in node.input[1:]])
            else:
                y = x
            out = node.output[0]
            env[out] = self._fq(out, y) if quantize else y
        return env[self.model.graph.output[0].name]


def _depth_to_space(x, block: int, mode: bytes):
    n, c, h, w = x.shape
    if mode in (b"CRD", "CRD"):
        y = x.reshape(n, c // block**2, block, block, h, w).permute(0, 1, 4, 2, 5, 3)
    else:
        y = x.reshape(n, block, block, c // block**2, h, w).permute(0, 3, 4, 1, 5, 2)
    return y.reshape(n, c // block**2, h * block, w * block)


def _slice(x, args):
    starts, ends = args[0], args[1]
    axes = args[2] if len(args) > 2 and args[2] is not None else np.arange(len(starts))
    steps = args[3] if len(args) > 3 and args[3] is not None else np.ones(len(starts), int)
    index = [slice(None)] * x.ndim
    for s, e, ax, st in zip(starts, ends, axes, steps):
        dim = x.shape[int(ax)]
        e = min(int(e), dim) if int(e) >= 0 else int(e)
        index[int(ax)] = slice(int(s), e, int(st))
    return x[tuple(index)]


def finetune(
    model: onnx.ModelProto,
    plan: qdq.Plan,
    ranges: Mapping[str, tuple[float, float]],
    grids: Mapping[str, np.ndarray],
    feeds: Sequence[Mapping[str, np.ndarray]],
    held_out: Sequence[Mapping[str, np.ndarray]],
    reference: onnx.ModelProto,
    build: Mapping,
    *,
    steps: int = 200,
    lr: float = 0.01,
    crop: int = 32,
    batch: int = 8,
    seed: int = 0,
) -> tuple[onnx.ModelProto | None, str]:
    """(model with fine-tuned weights and biases, note), or (None, reason) when declined or not better.

    ``model`` holds the float weights already on the ``grids``; ``reference`` is the FP32 model."""
    import torch

    from etc.quant.search import output_error

    reason = unsupported(model, plan)
    if reason:
        return None, reason
    frozen = set(plan.convs) - set(grids)  # e.g. exact clip Convs: kept as they are
    consts = qdq.constants(model)
    by_conv = {n.name: n for n in model.graph.node if n.op_type == "Conv"}
    grids = {
        **{
            c: qdq.weight_scales(
                consts[by_conv[c].input[1]], build.get("per_channel", True), build.get("safe_u8s8", False)
            )
            for c in frozen
        },
        **grids,
    }
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    name = model.graph.input[0].name
    sim = _Sim(model, plan, ranges, grids, frozen)
    ref = _Sim(reference, plan, ranges, grids, frozen)
    data = torch.tensor(np.concatenate([np.asarray(f[name]) for f in feeds]))
    opt = torch.optim.Adam(sim.params, lr=lr)
    for _ in range(steps):
        idx = rng.integers(0, len(data), batch)
        h, w = data.shape[2:]
        top, left = int(rng.integers(0, h - min(crop, h) + 1)), int(rng.integers(0, w - min(crop, w) + 1))
        x = data[idx, :, top : top + crop, left : left + crop]
        with torch.no_grad():
            target = ref(x, quantize=False)
        loss = torch.mean((sim(x) - target) ** 2)
        opt.zero_grad()
        loss.backward()
        opt.step()
    out = onnx.ModelProto()
    out.CopyFrom(model)
    by_name = {n.name: n for n in out.graph.node}
    with torch.no_grad():
        for conv, (_, _, _, b) in sim.weights.items():
            if conv in frozen:
                continue
            w, _ = sim.weight(conv)
            proto.set_initializer(out, by_name[conv].input[1], w.numpy().astype(np.float64))
            proto.set_initializer(out, by_name[conv].input[2], b.numpy().astype(np.float64))
    out_name = model.graph.output[0].name
    from etc.quant import observe

    truth = [v[out_name] for v in observe.run_tensors(reference, held_out, [out_name])]
    before = output_error(qdq.build_qdq(model, plan, ranges, **build), held_out, truth)
    after = output_error(qdq.build_qdq(out, plan, ranges, **build), held_out, truth)
    note = f"held-out output MSE {before:.3g} -> {after:.3g}"
    if after >= before:
        return None, note + ": not kept"
    return out, note
