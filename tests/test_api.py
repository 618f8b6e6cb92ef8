"""The Python API as a user meets it: every public error and lazy name on ``etc`` (and in ``dir(etc)``), the
optimize report as strict JSON with a typed budget, and the reasons the summary gives for ops left non-plain."""

from __future__ import annotations

import json

import numpy as np
import pytest

import etc
from etc.cost import BudgetReport, Decision
from etc.testing import GraphBuilder

PUBLIC_ERRORS = (
    "EtcError",
    "BadModelError",
    "UnknownPassError",
    "EquivalenceError",
    "OscillationError",
    "PassContractError",
    "UnrunnableModelError",
    "LimitWarning",
)


def _strict(text: str):
    """json.loads that refuses NaN and Infinity, as strict parsers (JavaScript's JSON.parse, jq) do."""

    def refuse(name: str):
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


@pytest.mark.parametrize("name", PUBLIC_ERRORS)
def test_every_public_error_is_an_attribute_of_etc(name):
    from etc import errors

    assert getattr(etc, name) is getattr(errors, name)


def test_dir_lists_the_lazy_names_before_they_are_used():
    listed = dir(etc)
    for name in (
        "optimize",
        "quantize",
        "verify",
        "QuantConfig",
        "QuantReport",
        "OptimizeReport",
        *PUBLIC_ERRORS,
    ):
        assert name in listed, name
    assert "Any" not in listed and "annotations" not in listed
    for name in etc.__all__:
        assert name == "__version__" or getattr(etc, name) is not None


def _skip_net() -> object:
    b = GraphBuilder(3, hw=(13, 11))
    y = b.op("Relu", [b.conv("input", 3, 6)])
    return b.model(b.op("Add", [b.conv(y, 6, 3), "input"]))


def test_optimize_report_is_strict_json_with_a_typed_budget():
    plain, report = etc.optimize(_skip_net())
    data = _strict(report.to_json())
    assert data == report.to_dict()
    assert data["after"]["nodes"] == len(plain.graph.node)
    assert data["verification"]["equivalent"] is True
    assert {"passes", "rule_hits", "declines", "remaining", "cost", "before"} <= set(data)
    budget = report.budget
    assert isinstance(budget, BudgetReport)
    assert all(isinstance(d, Decision) for d in budget.decisions)
    assert budget.decisions and budget.growth == pytest.approx(budget.final_macs / budget.merged_macs)
    assert data["cost"]["budget"] == budget.as_dict()


def test_identical_outputs_give_null_psnr_in_the_report_json():
    """A model with nothing to rewrite compares bit-identical: PSNR is infinite, written as null."""
    b = GraphBuilder(3, hw=(9, 7))
    model = b.model(b.op("Relu", [b.conv("input", 3, 3)]))
    _, report = etc.optimize(model)
    rows = report.verification.rows
    assert any(r["psnr"] == float("inf") for r in rows)
    data = _strict(report.to_json())
    assert all(r["psnr"] is None for r in data["verification"]["outputs"] if r["max_abs"] == 0)


def test_remaining_op_says_the_budget_declined_its_rewrite():
    from etc.frontends.torch import export
    from etc.zoo.published.cost import MODELS

    model = export(MODELS["compact"](), exporter="legacy", dynamic_hw=True)
    _, tight = etc.optimize(model, max_growth=1.0, verify=False)
    add = [line for line in tight.remaining if line.startswith("Add ")]
    assert add and "the cost budget declined it" in add[0] and "over the 1x budget" in add[0]
    assert "no equivalent rewrite" not in add[0]


def test_remaining_op_without_any_rewrite_keeps_the_generic_reason():
    from etc.api import remaining_ops

    b = GraphBuilder(3, hw=(9, 7))
    model = b.model(b.op("Sigmoid", [b.conv("input", 3, 3)]))
    assert remaining_ops(model) == ["Sigmoid x1: no exact ReLU form (smooth nonlinearity)"]
    empty = BudgetReport(1.25, (64, 64), 1, 1, 1.0, [])
    assert remaining_ops(model, empty, cpu_choice="merged")[0].startswith("Sigmoid x1: --target cpu kept")


@pytest.mark.parametrize("name", ["ecbsr", "abpn"])
def test_every_decision_accepted_over_the_budget_says_why(name):
    from etc import zoo
    from etc.frontends.torch import export

    model = export(zoo.build(name, scale=2, seed=1, M=2, C=8), exporter="legacy", dynamic_hw=True)
    # channel alignment is asked for by an option, so it is accepted beyond the budget, with the reason
    _, report = etc.optimize(model, verify=False, check_each_pass=False, align_channels=16, max_growth=1.0)
    budget = report.budget
    assert budget is not None
    assert any(d.accepted and d.total > budget.max_growth for d in budget.decisions)
    # the anchor's copy is judged with the carry it starts; over the budget, it goes ahead only by paying its way
    anchor = [d for d in budget.decisions if d.rule == "repeat_to_conv"]
    assert anchor and all(not d.accepted or "non-plain ops it removes save" in d.reason for d in anchor), (
        anchor
    )
    for d in budget.decisions:
        if d.accepted and d.total > budget.max_growth:
            assert "accepted because" in d.reason, d
        elif d.accepted:
            assert d.reason == "", d
        else:
            assert d.reason and "accepted" not in d.reason, d


def test_optimize_report_dict_holds_numpy_free_values():
    _, report = etc.optimize(_skip_net(), verify=False)
    text = report.to_json(indent=None)
    assert "NaN" not in text and "Infinity" not in text
    assert isinstance(_strict(text)["before"]["macs"], int)
    assert np.isfinite(report.to_dict()["after"]["plain_share"])
