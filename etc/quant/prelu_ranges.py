"""Ranges of the quantized tensors that feed a PReLU, chosen by the error that leaves the PReLU.

A PReLU kept in the graph (``prelu_to_relu=False``) reads a signed Conv output z through its own uint8 QDQ
pair. Per channel c the PReLU passes z >= 0 unchanged and multiplies z < 0 by its slope α_c, so a rounding or
clipping error e on a negative value reaches the next layer as α_c·e. Plain SR nets have many channels with
|α_c| ≈ 0 whose negative values are the tensor's extremes (ECBSR_ET M4C16: z in [-9.2, 2.1]); a range that
covers them makes the step of every positive value up to 4x coarser for values the PReLU throws away. Here the
range [lo, hi] minimises

    Σ_c g_c · E[ (z - clip(z, lo, hi))² + step²/12 ] with each negative value weighted by α_c²

over a grid of shrunken bounds (:data:`LOW_FACTORS` × :data:`HIGH_FACTORS` of the observed extremes), with g_c
how strongly the Convs after the PReLU read channel c (Σ W[:, c]², 1 when not read by Convs only). The
PReLU's own output keeps its calibrated range.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import onnx

from etc.quant import observe, qdq

LOW_FACTORS = (1.0, 0.7, 0.5, 0.35, 0.25, 0.18, 0.12, 0.08, 0.05, 0.03)
HIGH_FACTORS = (1.0, 0.95, 0.9, 0.85, 0.8)
LEVELS = 255


def _slopes(node: onnx.NodeProto, consts: Mapping[str, np.ndarray], channels: int) -> np.ndarray | None:
    if node.op_type == "LeakyRelu":
        alpha = next((a.f for a in node.attribute if a.name == "alpha"), 0.01)
        return np.full(channels, alpha)
    slope = consts.get(node.input[1]) if len(node.input) > 1 else None
    if slope is None:
        return None
    flat = np.asarray(slope, np.float64).reshape(-1)
    if flat.size == 1:
        return np.full(channels, float(flat[0]))
    return flat if flat.size == channels else None


def weighted_error(values: np.ndarray, weights: np.ndarray, lo: float, hi: float) -> float:
    """Σ weights · (clipping error² + step²/12 inside [lo, hi]) / Σ weights for uint8 on [lo, hi]."""
    step = (hi - lo) / LEVELS
    clipped = np.clip(values, lo, hi)
    inside = (values >= lo) & (values <= hi)
    err = (values - clipped) ** 2 + np.where(inside, step * step / 12.0, 0.0)
    return float((weights * err).sum() / max(float(weights.sum()), 1e-30))


def best_range(values: np.ndarray, weights: np.ndarray) -> tuple[float, float]:
    """The (lo, hi) of the grid with the least :func:`weighted_error` (lo <= 0 <= hi)."""
    lo0, hi0 = min(float(values.min()), 0.0), max(float(values.max()), 0.0)
    cands = [(lo0 * a, hi0 * b) for a in LOW_FACTORS for b in HIGH_FACTORS]
    return min(cands, key=lambda r: weighted_error(values, weights, *r))


def prelu_input_ranges(
    model: onnx.ModelProto,
    plan: qdq.Plan,
    feeds: Sequence[Mapping[str, np.ndarray]],
    *,
    sample: int = 200_000,
    seed: int = 0,
) -> dict[str, tuple[float, float]]:
    """{PReLU/LeakyReLU input tensor with its own QDQ range: (lo, hi)} as in the module docstring."""
    consts = qdq.constants(model)
    own = set(plan.own)
    nodes = [n for n in model.graph.node if n.op_type in ("PRelu", "LeakyRelu") and n.input[0] in own]
    readers: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1
    nodes = [n for n in nodes if readers.get(n.input[0], 0) == 1]
    if not nodes:
        return {}
    names = [n.input[0] for n in nodes]
    chunks: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for values in observe.run_tensors(model, feeds, names):
        for name, v in values.items():
            chunks[name].append(v.transpose(1, 0, 2, 3).reshape(v.shape[1], -1))
    importance = observe.consumer_weights(model, [n.output[0] for n in nodes])
    rng = np.random.default_rng(seed)
    out: dict[str, tuple[float, float]] = {}
    for node in nodes:
        z = np.concatenate(chunks[node.input[0]], axis=1).astype(np.float64)
        alpha = _slopes(node, consts, len(z))
        if alpha is None:
            continue
        g = importance.get(node.output[0], np.ones(len(z)))
        weights = np.where(z < 0, (alpha**2)[:, None], 1.0) * np.asarray(g, np.float64)[:, None]
        pick = rng.choice(z.size, size=min(sample, z.size), replace=False)
        out[node.input[0]] = best_range(z.reshape(-1)[pick], weights.reshape(-1)[pick])
    return out
