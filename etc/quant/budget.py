"""MAC-budgeted channel copies: the copies of :mod:`etc.quant.split` chosen by estimated benefit per added MAC.

::

    before:  Conv(W1) ─> act ─> t (C channels)                ─> Conv(W2) ─> y     conv MACs M
    after:   Conv(W1') ─> act ─> t' (C + chosen copies)        ─> Conv(W2') ─> y    conv MACs <= budget · M0

The widening is :func:`etc.quant.split.duplicate` (same exactness conditions, same sites, same channel order);
only the number of copies per channel differs. ``--split N`` copies every dominant channel of every site; here
the copies are bought one at a time, best estimated benefit per added MAC first, while the conv MACs (weight
elements per output pixel, as :func:`etc.quant.summary.conv_macs` counts them) stay within ``budget`` times
the FP32 model's ``base_macs``.

Benefit (an estimate, no quantized runs): per-tensor uint8 activations add rounding noise of variance Δ_t²/12
to every channel of tensor t where it is not exactly 0 (a ReLU zero is on the grid), Δ_t = max(t) / 255 on the
calibration patches. The consumers read channel c with Σ_o,taps W[o, c]², so the noise reaching their outputs
is Δ_t²/12 · p_c · ||W[:, c]||², p_c the fraction of nonzero values. Staggered copies (:mod:`etc.quant.stagger`)
round nearly independently, so k copies leave about 1/k of it: copy k + 1 removes 1/k - 1/(k + 1) of it.

Cost of one more copy of channel c: one producer row (its current input width · kh · kw) plus one column in
every consumer (its current output width · kh · kw); widths grow as other sites are widened, and the greedy
keeps them current, so the final count is exact (checked against ``conv_macs`` by the tests).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx

from etc.pipeline import Pass, PassContext, PassResult
from etc.quant import proto
from etc.quant.split import Site, SplitRecord, duplicate, find_sites

MAX_COPIES = 4


@dataclass(frozen=True)
class Candidate:
    """What one site's channels are worth: noise reaching the consumers per channel, and the node names."""

    site: Site
    noise: np.ndarray  # Δ²/12 · p_c · ||W[:, c]||² per channel


def conv_widths(model: onnx.ModelProto) -> dict[str, tuple[int, int, int]]:
    """{Conv name: (output channels, input channels per group, kh·kw)} of the Convs with constant weights."""
    inits = {i.name: i for i in model.graph.initializer}
    out = {}
    for node in model.graph.node:
        if node.op_type == "Conv" and len(node.input) > 1 and node.input[1] in inits:
            dims = list(inits[node.input[1]].dims)
            out[node.name] = (int(dims[0]), int(dims[1]), int(np.prod(dims[2:])))
    return out


def channel_noise(
    model: onnx.ModelProto, feeds: Sequence[Mapping[str, np.ndarray]], skip: frozenset[str] | set[str]
) -> list[Candidate]:
    """The estimated per-channel noise (module doc) of every split site whose tensor is not in ``skip``."""
    from etc.quant.observe import run_tensors

    sites = [s for s in find_sites(model) if s.tensor not in skip]
    if not sites:
        return []
    peak = {s.tensor: 0.0 for s in sites}
    nonzero = {s.tensor: 0.0 for s in sites}
    count = 0
    for values in run_tensors(model, feeds, [s.tensor for s in sites]):
        count += 1
        for name, v in values.items():
            peak[name] = max(peak[name], float(v.max()))
            nonzero[name] = nonzero[name] + (v != 0).mean(axis=(0, 2, 3))
    consts = proto.constants(model)
    nodes = {n.name: n for n in model.graph.node}
    out = []
    for site in sites:
        col = sum(
            (consts[nodes[c].input[1]].astype(np.float64) ** 2).sum(axis=(0, 2, 3)) for c in site.consumers
        )
        step = peak[site.tensor] / 255.0
        out.append(Candidate(site, step * step / 12.0 * nonzero[site.tensor] / max(count, 1) * col))
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
    candidates = channel_noise(model, feeds, skip)
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
