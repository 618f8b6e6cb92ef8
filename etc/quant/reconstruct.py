"""Block reconstruction: each Conv(+ReLU) block's int8 rounding learned against the FP32 block output.

BRECQ/AdaRound on a plain chain, one block at a time in topological order (earlier blocks already on their int8
grids)::

    X_q   the block's input in the QDQ model built so far (onnxruntime: what the int8 kernel will read)
    Y     the block's output in the FP32 model (after its fused ReLU; the target, never the QDQ model)
    W*    the closed-form refit of :mod:`etc.quant.refit` (ridge least squares from X_q), s its int8 scales,
          q the GPTQ integers refit rounds it to
    W(V)  = s · (base + h(V)),   h(V) = clip(σ(V)·1.2 - 0.1, 0, 1)             (AdaRound's rectified sigmoid)
          base = q - 1 where q > W*/s, else q: each weight chooses between q and its neighbour toward W*/s

V (started at ±2, i.e. h = 0.96 or 0.04: GPTQ's choice, with the gradient alive) and the bias b are trained
with Adam on random crops of the calibration patches to minimise

    Σ_c g_c Σ_pixels (clip(act(conv(X_q, W(V)) + b), lo, hi) - Y)²_c  +  λ Σ (1 - |2h(V) - 1|^β)

where ``act`` is the block's ReLU (or identity), [lo, hi] the uint8 range of the block's output, g_c how strongly
the next Convs read channel c (Σ W_next[:, c]², :func:`etc.quant.observe.consumer_weights`, mean 1), and β
anneals from 20 to 2 after a 20 % warm-up without the regulariser, which drives every h to 0 or 1. Crops are
taken from the zero-padded full patches and the Conv runs unpadded on them, so borders match the full model.
Then h is rounded (h >= 1/2); the learned integers and refit's GPTQ integers are both scored with the block
loss on every calibration patch and the better pair (weights, bias) is kept, so a block never ends worse than
``rounding="refit"`` left it. Each block stops after ``iters`` steps or ``seconds``, whichever comes first, so
on a loaded machine fewer steps are taken and the result can differ between runs.

Where it helps little (bench/RESULTS.md): when the same uint8 activations with unrounded refitted weights
already lose nearly as much, the rounding part left after GPTQ is small, and no rounding method reaches the
activations' requantization noise.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx

from etc.quant import observe, qdq
from etc.quant.refit import FitProblem, conv_geometry, fit_layer

ZETA, GAMMA = 1.1, -0.1  # AdaRound's stretch of the sigmoid, so h reaches exactly 0 and 1
START_V = 2.0  # |V| at the start: h = 0.96 or 0.04, GPTQ's choice, with the gradient still alive


@dataclass(frozen=True)
class Settings:
    """Optimisation budget and step sizes of one block."""

    iters: int = 300
    seconds: float = 20.0
    crop: int = 32
    batch: int = 8
    lr: float = 0.05  # Adam step for V (|V| starts at 2: a rounding can flip after about 40 steps)
    bias_lr: float = 1e-3
    reg: float = 0.01  # λ
    warmup: float = 0.2
    seed: int = 0


DEFAULT = Settings()


@dataclass
class BlockResult:
    """What one block's reconstruction measured (block loss on all calibration patches)."""

    conv: str
    loss_refit: float
    loss_learned: float
    kept: str  # "learned" or "refit"
    steps: int


def soft(v, torch) -> object:
    return torch.clamp(torch.sigmoid(v) * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)


class _Block:
    """One Conv(+ReLU) in torch with fixed data: padded quantized inputs, FP32 targets, channel weights."""

    def __init__(self, x_quant, y_float, pads, relu, bounds, channel_weights, torch):
        import torch.nn.functional as F

        self.torch, self.F = torch, F
        top, left, bottom, right = pads
        x = torch.tensor(np.concatenate(x_quant), dtype=torch.float32)
        self.x = F.pad(x, (left, right, top, bottom))
        self.y = torch.tensor(np.concatenate(y_float), dtype=torch.float32)
        self.relu, self.bounds = relu, bounds
        g = np.ones(self.y.shape[1]) if channel_weights is None else np.asarray(channel_weights, np.float64)
        g = g / max(float(g.mean()), 1e-30)
        self.g = torch.tensor(g, dtype=torch.float32).reshape(1, -1, 1, 1)

    def forward(self, x, w, b):
        z = self.F.conv2d(x, w, b)
        if self.relu:
            z = self.torch.relu(z)
        if self.bounds is not None:
            z = self.torch.clamp(z, *self.bounds)
        return z

    def loss(self, w, b, index=None, top=0, left=0, size=None) -> object:
        """Weighted squared error per sample on patches ``index`` (all) at the crop (top, left, size)."""
        kh, kw = w.shape[2:]
        x, y = self.x, self.y
        if index is not None:
            x, y = x[index], y[index]
        if size is not None:
            x = x[:, :, top : top + size + kh - 1, left : left + size + kw - 1]
            y = y[:, :, top : top + size, left : left + size]
        err = (self.forward(x, w, b) - y) ** 2
        return (err * self.g).sum() / len(y)


def learn_rounding(
    block: _Block,
    w_fit: np.ndarray,
    start_q: np.ndarray,
    scales: np.ndarray,
    bias: np.ndarray,
    settings: Settings,
    progress: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray, int]:
    """(int8 weights, bias, steps taken) minimising the block loss of the module docstring; ``progress`` is
    called once per step (and once with the steps left when the time limit stops the block early)."""
    torch = block.torch
    gen = torch.Generator().manual_seed(settings.seed)
    s = torch.tensor(scales.reshape(-1, 1, 1, 1), dtype=torch.float32)
    ratio = w_fit / scales.reshape(-1, 1, 1, 1).astype(np.float64)
    up = start_q > ratio
    base_np = np.where(up, start_q - 1.0, start_q.astype(np.float64))
    base = torch.tensor(base_np, dtype=torch.float32)
    v = torch.tensor(np.where(up, START_V, -START_V), dtype=torch.float32, requires_grad=True)
    b = torch.tensor(bias, dtype=torch.float32, requires_grad=True)
    opt = torch.optim.Adam([{"params": [v], "lr": settings.lr}, {"params": [b], "lr": settings.bias_lr}])
    n, _, h, w = block.y.shape
    size = min(settings.crop, h, w)
    warm = int(settings.warmup * settings.iters)
    start = time.perf_counter()
    step = 0
    for step in range(1, settings.iters + 1):
        index = torch.randint(0, n, (min(settings.batch, n),), generator=gen)
        top = int(torch.randint(0, h - size + 1, (1,), generator=gen))
        left = int(torch.randint(0, w - size + 1, (1,), generator=gen))
        hv = soft(v, torch)
        loss = block.loss(s * (base + hv), b, index, top, left, size)
        if step > warm:
            fraction = (step - warm) / max(settings.iters - warm, 1)
            beta = 20.0 + (2.0 - 20.0) * fraction
            loss = loss + settings.reg * (1 - (2 * hv - 1).abs().pow(beta)).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if progress:
            progress(1)
        if time.perf_counter() - start > settings.seconds:
            if progress and settings.iters > step:
                progress(settings.iters - step)
            break
    with torch.no_grad():
        q = np.clip(base_np + (soft(v, torch).numpy() >= 0.5), -127, 127).astype(np.int8)
    return q, b.detach().numpy().astype(np.float64), step


def block_loss(block: _Block, q: np.ndarray, scales: np.ndarray, bias: np.ndarray) -> float:
    torch = block.torch
    w = torch.tensor(q.astype(np.float64) * scales.reshape(-1, 1, 1, 1), dtype=torch.float32)
    with torch.no_grad():
        return float(block.loss(w, torch.tensor(bias, dtype=torch.float32)))


def _recording_grid(
    fitted: list, per_channel: bool, safe_u8s8: bool | str
) -> Callable[[np.ndarray], np.ndarray]:
    """The int8 grid of refit's fitted weights, which it also appends to ``fitted`` (refit's W*)."""

    def grid(w: np.ndarray) -> np.ndarray:
        fitted.append(w)
        return qdq.weight_scales(w, per_channel, safe_u8s8)

    return grid


def reconstruct(
    problem: FitProblem,
    settings: Settings | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[onnx.ModelProto, dict[str, np.ndarray], list[BlockResult]]:
    """(model with learned int8-grid weights and biases, {Conv name: scales}, per-block results), on the same
    problem as :func:`etc.quant.refit.refit`. ``progress`` counts learning steps: ``settings.iters`` per Conv."""
    import torch

    from etc.proto import set_initializer

    settings = settings or DEFAULT
    out, convs = problem.working_copy()
    plan, ranges, per_channel, safe_u8s8 = (
        problem.plan,
        problem.ranges,
        problem.per_channel,
        problem.safe_u8s8,
    )
    block_out = {n.name: plan.fused.get(n.output[0], n.output[0]) for n in convs}
    wanted = sorted({*block_out.values(), *(n.output[0] for n in convs)})
    targets: dict[str, list[np.ndarray]] = {name: [] for name in wanted}
    for values in observe.run_tensors(problem.original, problem.feeds, wanted):
        for name, v in values.items():
            targets[name].append(v)
    importance = observe.consumer_weights(problem.original, list(block_out.values()))
    grids: dict[str, np.ndarray] = {}
    results: list[BlockResult] = []
    for node in convs:
        x_quant, weight, bias = problem.layer_inputs(out, grids, node)
        fitted: list[np.ndarray] = []
        grid = _recording_grid(fitted, per_channel, safe_u8s8)
        pads = conv_geometry(node)
        q_refit, scales, b_refit = fit_layer(weight, bias, x_quant, targets[node.output[0]], pads, grid)
        name = block_out[node.name]
        relu = name != node.output[0]
        bounds = tuple(ranges[name]) if name in ranges else None
        block = _Block(x_quant, targets[name], pads, relu, bounds, importance.get(name), torch)
        q_learn, b_learn, steps = learn_rounding(
            block, fitted[-1], q_refit, scales, b_refit, settings, progress
        )
        if safe_u8s8 and safe_u8s8 != "any":
            q_refit, q_learn = qdq.clamp_pairs(q_refit), qdq.clamp_pairs(q_learn)
        loss_refit = block_loss(block, q_refit, scales, b_refit)
        loss_learn = block_loss(block, q_learn, scales, b_learn)
        learned = loss_learn < loss_refit
        q, b = (q_learn, b_learn) if learned else (q_refit, b_refit)
        set_initializer(out, node.input[1], q.astype(np.float64) * scales.reshape(-1, 1, 1, 1))
        set_initializer(out, node.input[2], b)
        grids[node.name] = scales
        results.append(
            BlockResult(node.name, loss_refit, loss_learn, "learned" if learned else "refit", steps)
        )
    return out, grids, results
