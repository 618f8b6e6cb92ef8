"""Sequential refit: each Conv's weights fitted to the FP32 output from its quantized input, then rounded.

Plain SR nets are chains, so the error a Conv sees on its input is the quantization error of every layer
before it. Layer by layer in topological order (Conv ``i``, earlier Convs already on their int8 grids)::

    X_q  = im2col of the Conv's input in the QDQ model built so far (what the int8 kernel will read)
    Y    = W X + b, the Conv's output in the original FP32 model (the target; equalization is exact)
    W*   = argmin ||Y - W' X_q - b'||² + λ ||W' - W||²_H          (ridge toward W, least squares, closed form)
    Q    = GPTQ rounding of W* on its per-channel int8 grid, with H = E[X_q X_qᵀ]
                                                                  (:func:`etc.quant.rounding.gptq_round`)
    b*   = mean(Y - Q X_q)                                         (the bias absorbs the mean error)

so each layer cancels, as far as a linear map can, the error that reached it (AdaQuant's idea, solved in
closed form), and the rounding minimises the output energy of what is left. The FP32 model is the only
reference; every fit reads the calibration patches only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx

from etc import proto
from etc.quant import observe, qdq, rounding


def conv_geometry(node: onnx.NodeProto) -> tuple[int, int, int, int] | None:
    """pads of a stride-1, dilation-1, ungrouped Conv with explicit pads, or None (not refittable)."""
    a = proto.conv_attrs(node)
    if (a.strides, a.dilations, a.group, a.auto_pad) != ((1, 1), (1, 1), 1, "NOTSET") or len(a.pads) != 4:
        return None
    return a.pads  # type: ignore[return-value]


def _targets(values: Sequence[np.ndarray], step: int) -> np.ndarray:
    """(N, O, H, W) outputs -> (O, positions), every ``step``-th row and column like :func:`im2col`."""
    parts = [v[:, :, ::step, ::step].transpose(1, 0, 2, 3).reshape(v.shape[1], -1) for v in values]
    return np.concatenate(parts, axis=1).astype(np.float64)


def fit_layer(
    weight: np.ndarray,
    bias: np.ndarray,
    x_quant: Sequence[np.ndarray],
    y_float: Sequence[np.ndarray],
    pads: tuple[int, int, int, int],
    grid: Callable[[np.ndarray], np.ndarray],
    *,
    ridge: float = 0.05,
    step: int = 2,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(int8 weights, their per-channel scales, float bias) for one Conv, as in the module docstring."""
    kernel = tuple(weight.shape[2:])
    cols = np.concatenate(
        [rounding.im2col(x.astype(np.float32), kernel, pads, step) for x in x_quant],
        axis=1,  # type: ignore[arg-type]
    ).astype(np.float64)
    y = _targets(y_float, step)
    n = cols.shape[1]
    w = weight.reshape(len(weight), -1).astype(np.float64)
    mean_x = cols.mean(1)
    xc = cols - mean_x[:, None]
    h = xc @ xc.T / n
    lam = ridge * float(np.mean(np.diag(h))) + 1e-12
    yc = y - y.mean(1, keepdims=True)
    rhs = yc @ xc.T / n + lam * w
    try:
        w_fit = np.linalg.solve(h + lam * np.eye(len(h)), rhs.T).T
    except np.linalg.LinAlgError:
        w_fit = w
    w_fit = w_fit.reshape(weight.shape)
    scales = grid(w_fit)
    q = rounding.gptq_round(w_fit, scales, cols @ cols.T / n)
    deq = q.reshape(len(q), -1).astype(np.float64) * scales.astype(np.float64)[:, None]
    b_fit = (y - deq @ cols).mean(1)
    return q, scales, b_fit


@dataclass(frozen=True)
class FitProblem:
    """What weight fitting works on: ``model``'s Convs are fitted to the outputs of the same-named Convs of the
    FP32 ``original`` on the calibration ``feeds``, with activations quantized by ``plan`` and ``ranges``; Convs
    reading a tensor in ``skip_inputs`` (exact clip structures) keep their weights."""

    model: onnx.ModelProto
    original: onnx.ModelProto
    plan: qdq.Plan
    ranges: Mapping[str, tuple[float, float]]
    feeds: Sequence[Mapping[str, np.ndarray]]
    per_channel: bool
    safe_u8s8: bool | str
    skip_inputs: frozenset[str] = frozenset()
    wide: frozenset[str] = frozenset()  # tensors carried in 16 bits (etc.quant.a16)

    def working_copy(self) -> tuple[onnx.ModelProto, list[onnx.NodeProto]]:
        """A copy of ``model`` and its fittable Convs (stride 1, explicit pads, with a bias), in order."""
        out = onnx.ModelProto()
        out.CopyFrom(self.model)
        return out, self.fittable(out)

    def fittable(self, model: onnx.ModelProto | None = None) -> list[onnx.NodeProto]:
        """The fittable Convs of ``model`` (default: the problem's), in order."""
        return [
            n
            for n in proto.nodes_named(model or self.model, self.plan.convs)
            if n.input[0] not in self.skip_inputs and len(n.input) > 2 and conv_geometry(n) is not None
        ]

    def layer_inputs(
        self, out: onnx.ModelProto, grids: Mapping[str, np.ndarray], node: onnx.NodeProto
    ) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
        """(the Conv's input in the QDQ model built so far, one array per feed; its weight; its bias)."""
        qmodel = qdq.build_qdq(
            out,
            self.plan,
            self.ranges,
            per_channel=self.per_channel,
            safe_u8s8=self.safe_u8s8,
            grids=grids,
            wide=self.wide,
        )
        qnode = next(n for n in qmodel.graph.node if n.name == node.name)
        x_quant = [v[qnode.input[0]] for v in observe.run_tensors(qmodel, self.feeds, [qnode.input[0]])]
        consts = qdq.constants(out)
        return x_quant, consts[node.input[1]], consts[node.input[2]]


def refit(
    problem: FitProblem, progress: Callable[[int], None] | None = None
) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """(model with refitted float weights on their int8 grids and refitted biases, {Conv name: scales})."""
    out, convs = problem.working_copy()
    per_channel, safe_u8s8 = problem.per_channel, problem.safe_u8s8
    targets = {n.output[0]: [] for n in convs}
    for values in observe.run_tensors(problem.original, problem.feeds, list(targets)):
        for name, v in values.items():
            targets[name].append(v)
    grids: dict[str, np.ndarray] = {}
    for node in convs:
        x_quant, weight, bias = problem.layer_inputs(out, grids, node)

        def grid(w: np.ndarray) -> np.ndarray:
            return qdq.weight_scales(w, per_channel, safe_u8s8)

        q, scales, b_fit = fit_layer(
            weight, bias, x_quant, targets[node.output[0]], conv_geometry(node), grid
        )
        if safe_u8s8 and safe_u8s8 != "any":
            q = qdq.clamp_pairs(q)
        proto.set_initializer(out, node.input[1], q.astype(np.float64) * scales.reshape(-1, 1, 1, 1))
        proto.set_initializer(out, node.input[2], b_fit)
        grids[node.name] = scales
        if progress:
            progress(1)
    return out, grids
