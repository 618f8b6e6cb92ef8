"""MAC-budgeted channel copies (etc.quant.split_budget): the budget holds, the copies stay FP32-exact, the best
benefit per MAC is bought first."""

from __future__ import annotations

import json

import numpy as np
import pytest

from etc.cost import conv_macs_per_pixel
from etc.quant import quantizer, split, split_budget
from etc.testing import assert_equivalent
from tests.test_eval import tiny_sr  # noqa: F401  (module fixture: ETDS M1C8 x2, random weights, on disk)
from tests.test_quant_reconstruct import etds_small  # noqa: F401  (module fixture: real ETDS M5C16 x4)


@pytest.mark.parametrize("limit", [1.05, 1.10])
def test_budgeted_copies_respect_the_budget_and_stay_exact(etds_small, limit):  # noqa: F811
    model, crops = etds_small
    feeds = [{model.graph.input[0].name: c} for c in crops]
    base = conv_macs_per_pixel(model)
    out, records = split_budget.split_to_budget(model, feeds, base_macs=base, budget=limit)
    assert records, "the budget buys at least one copy"
    assert base < conv_macs_per_pixel(out) <= limit * base
    left = limit * base - conv_macs_per_pixel(out)
    widths = split_budget.conv_widths(out)
    cheapest = min(
        widths[s.producer][1] * widths[s.producer][2] + sum(widths[c][0] * widths[c][2] for c in s.consumers)
        for s in split.find_sites(out)
    )
    assert left < cheapest, "the greedy stopped while a copy still fitted"
    assert_equivalent(model, out, sizes=((11, 13), (7, 9)), atol=1e-4, rtol=1e-5)


def test_quantizer_split_budget_bounds_the_int8_macs(etds_small):  # noqa: F811
    model, crops = etds_small
    qmodel, report = quantizer.quantize_with_report(model, crops, scale=4, split_budget=1.05)
    assert report.split and report.staggered
    assert conv_macs_per_pixel(qmodel) <= 1.05 * conv_macs_per_pixel(model)
    _, none = quantizer.quantize_with_report(model, crops, scale=4, split_budget=1.0)
    assert none.split == [] and none.staggered == []


def test_greedy_buys_most_noise_per_mac_first():
    a = split.Site("a", "p", None, ("q",))
    b = split.Site("b", "q", None, ("r",))
    widths = {"p": (2, 3, 1), "q": (4, 2, 1), "r": (1, 4, 1)}  # p: 3 -> 2 -> q: 4 -> r: 1 channels, 1x1
    cands = [
        split_budget.Candidate(a, np.array([1.0, 0.1])),
        split_budget.Candidate(b, np.array([0.2, 0.0, 0.0, 0.9])),
    ]
    base = sum(o * i * k for o, i, k in widths.values())  # 6 + 8 + 4 = 18
    # a copy on a costs 3 (row of p) + 4 (column of q) = 7 MACs; on b 2 (row of q) + 1 (column of r) = 3
    copies = split_budget.choose_within_budget(cands, widths, base + 3)
    assert [c.tolist() for c in copies] == [[1, 1], [1, 1, 1, 2]]  # 0.45 / 3 beats 0.5 / 7
    # then a's copy is worth 0.5 / 8 (q has 5 outputs now) against 0.15 / 3 for b's third channel again
    copies = split_budget.choose_within_budget(cands, widths, base + 3 + 8)
    assert [c.tolist() for c in copies] == [[2, 1], [1, 1, 1, 2]]
    copies = split_budget.choose_within_budget(
        cands, widths, base + 3 + 7, max_copies=4
    )  # a's no longer fits
    assert [c.tolist() for c in copies] == [[1, 1], [2, 1, 1, 3]]
    assert [c.tolist() for c in split_budget.choose_within_budget(cands, widths, base + 2)] == [
        [1, 1],
        [1, 1, 1, 1],
    ]


def test_cli_split_budget_writes_a_model_within_the_budget(tiny_sr, tmp_path):  # noqa: F811
    from click.testing import CliRunner

    from etc.cli import cli
    from etc.frontends.onnx_io import load

    out = tmp_path / "q.onnx"
    argv = ["quantize", str(tiny_sr), "-o", str(out), "--num", "4", "--patch", "24", "--no-summary", "--json"]
    res = CliRunner().invoke(cli, [*argv, "--split-budget", "1.2"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["split"], "a 1.2x budget buys copies on ETDS M1C8"
    assert conv_macs_per_pixel(load(out)) <= 1.2 * conv_macs_per_pixel(load(tiny_sr))
    res = CliRunner().invoke(cli, [*argv, "--split-budget", "0.9"])
    assert res.exit_code == 2 and "0.9" in res.output
