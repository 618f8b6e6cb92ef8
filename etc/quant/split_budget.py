"""MAC-budgeted channel copies: the copies of :mod:`etc.quant.split` chosen by measured benefit per added MAC.

::

    before:  Conv(W1) ─> act ─> t (C channels)                ─> Conv(W2) ─> y     conv MACs M
    after:   Conv(W1') ─> act ─> t' (C + chosen copies)        ─> Conv(W2') ─> y    conv MACs <= budget · M0

The widening is :func:`etc.quant.split.duplicate` (same exactness conditions, same sites, same channel order);
only the number of copies per channel differs. ``--split N`` copies every dominant channel of every site; here
the copies are bought one at a time, best measured benefit per added MAC first, while the conv MACs (weight
elements per output pixel, as :func:`etc.cost.conv_macs_per_pixel` counts them) stay within ``budget`` times
the FP32 model's ``base_macs``.

Benefit (measured, onnxruntime, on the first calibration patches): per-tensor uint8 activations add rounding
noise of about uniform(-Δ_t/2, Δ_t/2) to every channel of tensor t where it is not exactly 0 (a ReLU zero is on
the grid), Δ_t = max(t) / 255 on the calibration patches. For each channel c of each site, that noise is added
to c alone (:func:`with_noise_input`) and the output MSE against the clean FP32 output is the channel's noise
n_c. It counts every later layer, so the carried image channels of ETDS (gain ~1 to the output through every
layer) outrank the features by 100-1000x, where their consumer column norms alone ranked the first layers
highest; ranking by measurement beat ranking by column norms, and measuring on the equalized model was no better
(figures: bench/RESULTS.md, "Quantizer design measurements"). Staggered copies
(:mod:`etc.quant.stagger`) round nearly independently, so k copies leave about n_c / k: copy k + 1 removes
n_c · (1/k - 1/(k + 1)). That overrates third and fourth copies: at equal MACs, spreading copies (at most
``MAX_COPIES`` = 2 per channel) measured better than stacking them (bench/RESULTS.md).

Cost of one more copy of channel c: one producer row (its current input width · kh · kw) plus one column in
every consumer (its current output width · kh · kw); widths grow as other sites are widened, and the greedy
keeps them current, so the final count is exact (checked against ``conv_macs_per_pixel`` by the tests).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from etc import proto
from etc.pipeline import Pass, PassContext, PassResult
from etc.quant.split import Site, SplitRecord, duplicate, find_sites

MAX_COPIES = 2  # per channel: spreading copies measured better than stacking them (bench/RESULTS.md)
NOISE = "etc_channel_noise"
MEASURE_FEEDS = 4  # calibration patches the noise is measured on


@dataclass(frozen=True)
class Candidate:
    """What one site's channels are worth: noise reaching the consumers per channel, and the node names."""

    site: Site
    noise: np.ndarray  # output MSE from one channel's uint8 rounding noise, per channel


def conv_widths(model: onnx.ModelProto) -> dict[str, tuple[int, int, int]]:
    """{Conv name: (output channels, input channels per group, kh·kw)} of the Convs with constant weights."""
    inits = {i.name: i for i in model.graph.initializer}
    out = {}
    for node in model.graph.node:
        if node.op_type == "Conv" and len(node.input) > 1 and node.input[1] in inits:
            dims = list(inits[node.input[1]].dims)
            out[node.name] = (int(dims[0]), int(dims[1]), int(np.prod(dims[2:])))
    return out


def with_noise_input(model: onnx.ModelProto, tensor: str, channels: int) -> onnx.ModelProto:
    """A copy of ``model`` whose readers of ``tensor`` see ``tensor + noise`` where ``tensor`` is not 0 (a ReLU
    zero is on the uint8 grid), ``noise`` a new (1, channels, H, W) input called ``NOISE``."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    zero, mask, added, noisy = (
        proto.fresh_name(out, f"{tensor}_{s}") for s in ("zero", "mask", "add", "noisy")
    )
    out.graph.initializer.append(numpy_helper.from_array(np.zeros((), np.float32), zero))
    readers = proto.readers(out).get(tensor, [])
    for node in readers:
        for k, name in enumerate(node.input):
            if name == tensor:
                node.input[k] = noisy
    out.graph.input.append(
        helper.make_tensor_value_info(NOISE, onnx.TensorProto.FLOAT, [1, channels, None, None])
    )
    nodes = list(out.graph.node)
    at = next(k for k, n in enumerate(nodes) if tensor in n.output) + 1
    nodes[at:at] = [
        helper.make_node("Greater", [tensor, zero], [mask]),
        helper.make_node("Add", [tensor, NOISE], [added]),
        helper.make_node("Where", [mask, added, tensor], [noisy]),
    ]
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    return out


def channel_noise(
    model: onnx.ModelProto, feeds: Sequence[Mapping[str, np.ndarray]], skip: frozenset[str] | set[str]
) -> list[Candidate]:
    """The output MSE that one channel's uint8 rounding noise causes (module doc), for every channel of every
    split site whose tensor is not in ``skip``: measured with onnxruntime on ``feeds``."""
    from etc import runtime
    from etc.quant.observe import run_tensors

    sites = [s for s in find_sites(model) if s.tensor not in skip]
    if not sites:
        return []
    out_name = model.graph.output[0].name
    peak = {s.tensor: 0.0 for s in sites}
    reference = []
    for values in run_tensors(model, feeds, [*peak, out_name]):
        reference.append(values[out_name])
        for name in peak:
            peak[name] = max(peak[name], float(values[name].max()))
    widths = conv_widths(model)
    rng = np.random.default_rng(0)
    out = []
    for site in sites:
        channels = widths[site.producer][0]
        sess = runtime.session(with_noise_input(model, site.tensor, channels), threads=1)
        step = peak[site.tensor] / 255.0
        noise = np.zeros(channels)
        for feed, ref in zip(feeds, reference):
            x = next(iter(feed.values()))
            pattern = (rng.uniform(-0.5, 0.5, (1, 1, *x.shape[2:])) * step).astype(np.float32)
            for c in range(channels):
                n = np.zeros((1, channels, *x.shape[2:]), np.float32)
                n[:, c] = pattern[:, 0]
                got = sess.run([out_name], {**feed, NOISE: n})[0]
                noise[c] += float(np.mean((got - ref) ** 2))
        out.append(Candidate(site, noise / len(feeds)))
    return out


def choose_within_budget(
    candidates: Sequence[Candidate],
    widths: Mapping[str, tuple[int, int, int]],
    allowed_macs: int,
    max_copies: int = MAX_COPIES,
) -> list[np.ndarray]:
    """Copies per channel of every candidate site, bought greedily by noise removed per added MAC while the
    conv MACs stay <= ``allowed_macs`` (the module doc's cost, widths updated as copies are bought)."""
    shape = {name: list(w) for name, w in widths.items()}
    total = sum(o * i * k for o, i, k in shape.values())
    copies = [np.ones(len(c.noise), dtype=np.int64) for c in candidates]

    def cost(site: Site) -> int:
        p = shape[site.producer]
        return p[1] * p[2] + sum(shape[c][0] * shape[c][2] for c in site.consumers)

    while True:
        best, best_gain = None, 0.0
        for s, cand in enumerate(candidates):
            add = cost(cand.site)
            if total + add > allowed_macs:
                continue
            k = copies[s]
            gain = np.where(k < max_copies, cand.noise * (1.0 / k - 1.0 / (k + 1)), 0.0) / add
            c = int(np.argmax(gain))
            if gain[c] > best_gain:
                best, best_gain = (s, c), float(gain[c])
        if best is None:
            return copies
        s, c = best
        site = candidates[s].site
        total += cost(site)
        copies[s][c] += 1
        shape[site.producer][0] += 1
        for name in site.consumers:
            shape[name][1] += 1


def split_to_budget(
    model: onnx.ModelProto,
    feeds: Sequence[Mapping[str, np.ndarray]],
    *,
    base_macs: int,
    budget: float,
    skip: frozenset[str] | set[str] = frozenset(),
    max_copies: int = MAX_COPIES,
) -> tuple[onnx.ModelProto, list[SplitRecord]]:
    """``model`` with the copies :func:`choose_within_budget` buys for ``budget`` · ``base_macs`` conv MACs."""
    widths = conv_widths(model)
    allowed = int(np.floor(budget * base_macs))
    if sum(o * i * k for o, i, k in widths.values()) >= allowed:
        return model, []
    candidates = channel_noise(model, feeds[:MEASURE_FEEDS], skip)
    records = []
    for cand, copies in zip(candidates, choose_within_budget(candidates, widths, allowed, max_copies)):
        if np.all(copies == 1):
            continue
        model = duplicate(model, cand.site, copies)
        records.append(
            SplitRecord(cand.site.tensor, len(copies), int(copies.sum() - len(copies)), int(copies.max()))
        )
    return model, records


class BudgetSplitPass(Pass):
    """Copies the channels worth most per added MAC until the conv MACs reach the budget (module doc)."""

    name = "split_budget"
    summary = "copy the channels with the most estimated activation noise per added MAC (exact in FP32)"

    def __init__(
        self,
        feeds: Sequence[Mapping[str, np.ndarray]],
        base_macs: int,
        budget: float,
        skip: frozenset[str] = frozenset(),
        max_copies: int = MAX_COPIES,
    ) -> None:
        self.feeds, self.base_macs, self.budget = feeds, base_macs, budget
        self.skip, self.max_copies = skip, max_copies
        self.records: list[SplitRecord] = []

    def run(self, model: onnx.ModelProto, ctx: PassContext) -> PassResult:
        out, records = split_to_budget(
            model,
            self.feeds,
            base_macs=self.base_macs,
            budget=self.budget,
            skip=self.skip,
            max_copies=self.max_copies,
        )
        self.records.extend(records)
        if not records:
            return PassResult(model, False)
        return PassResult(out, True, {"split_budget": len(records)})
