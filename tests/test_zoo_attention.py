"""IMDN, RFDN and EIMN (attention nets): export with both exporters, ``fold,rep,et`` verifies, attention remains.

Also the synthetic benchmark graph generator (bench/synthetic.py): a 200-node graph compiles to a plain graph.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

import onnx
import pytest
import torch

from etc import zoo
from etc.api import remaining_ops
from etc.frontends.torch import export
from etc.graph import op_histogram
from etc.pipeline import Options, PipelineResult, run_pipeline
from etc.testing import assert_equivalent
from tests.zoo_helpers import max_diff, ort_run, rand_image, torch_threads

NETS = ("imdn", "rfdn", "eimn")
EXPORTERS = ("legacy", "dynamo")
SIZES = ((9, 13), (17, 23))
# Ops each net's attention is made of; every one must survive fold,rep,et and be reported by remaining_ops.
ATTENTION = {
    "imdn": {"Sigmoid", "Mul", "ReduceMean", "Pow"},  # CCA: mean + std over H, W -> MLP -> sigmoid gate
    "rfdn": {"Sigmoid", "Mul", "MaxPool", "Resize"},  # ESA: strided conv, max-pool, bilinear upsample, gate
    "eimn": {"Sigmoid", "Mul", "Erf"},  # SiLU/GELU modulation, DFFM gates
}
SPLITTING = ("imdn", "eimn")  # channel splits that must become convs


@pytest.fixture(autouse=True, scope="module")
def _single_thread() -> Iterator[None]:
    with torch_threads(1):
        yield


@functools.cache
def exported(name: str, exporter: str) -> tuple[torch.nn.Module, onnx.ModelProto]:
    net = zoo.build(name, scale=2, M=1, C=8, seed=3)
    return net, export(net, exporter=exporter)


@functools.cache
def compiled(name: str, exporter: str) -> PipelineResult:
    return run_pipeline(exported(name, exporter)[1], "fold,rep,et")


@pytest.mark.parametrize("name", NETS)
def test_builds_upscales_and_is_seeded(name: str) -> None:
    net = zoo.build(name, scale=3, M=1, C=8, seed=1)
    with torch.no_grad():
        y = net(rand_image(7, 10))
    assert y.shape == (1, 3, 21, 30)
    a, b = (zoo.build(name, scale=3, M=1, C=8, seed=s).state_dict() for s in (1, 2))
    assert any(not torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(FileNotFoundError, match=name.upper()):
        zoo.build(name, pretrained=True)


@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("name", NETS)
def test_export_reproduces_torch(name: str, exporter: str) -> None:
    net, model = exported(name, exporter)
    x = rand_image(11, 14, seed=5)
    with torch.no_grad():
        want = net(x)
    assert max_diff(ort_run(model, x), want) < 1e-5


@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("name", NETS)
def test_fold_rep_et_verifies_and_keeps_attention(name: str, exporter: str) -> None:
    model = exported(name, exporter)[1]
    result = compiled(name, exporter)
    worst = assert_equivalent(model, result.model, sizes=SIZES, atol=1e-5, rtol=0.0)
    assert worst <= 1e-5
    after = op_histogram(result.model)
    assert ATTENTION[name] <= set(after), f"attention ops lost: {ATTENTION[name] - set(after)}"
    listed = {line.split(" ")[0] for line in remaining_ops(result.model)}
    assert ATTENTION[name] <= listed
    assert "Conv" not in listed and "Relu" not in listed


@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("name", SPLITTING)
def test_channel_splits_become_convs(name: str, exporter: str) -> None:
    model = exported(name, exporter)[1]
    before = op_histogram(model)
    # selection convs cost MACs: within the default budget (etc.cost) some splits stay, so widen it here
    result = run_pipeline(model, "fold,rep,et", options=Options(max_growth=10.0))
    after = op_histogram(result.model)
    assert before.get("Split", 0) + before.get("Slice", 0) > 0
    assert after.get("Split", 0) == 0 and after.get("Slice", 0) == 0, after
    assert after["Conv"] > before["Conv"]
    assert result.hits.get("et/channel_split_to_convs", 0) == before.get("Split", 0)


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_rfdn_shallow_residual_blocks_merge_into_one_conv(exporter: str) -> None:
    """Each SRB (Conv3x3(z) + z) is one conv after rep: three per RFDB, so three Adds fewer."""
    before = op_histogram(exported("rfdn", exporter)[1])
    result = compiled("rfdn", exporter)
    assert result.hits.get("rep/merge_parallel", 0) == 3
    assert op_histogram(result.model)["Add"] == before["Add"] - 3


def test_eimn_batchnorm_and_layer_scale_fold_into_convs() -> None:
    """BN2 feeds one 1x1 conv and folds; BN1 feeds two convs (value and query) and stays; γ folds into convs."""
    before = op_histogram(exported("eimn", "legacy")[1])
    after = op_histogram(compiled("eimn", "legacy").model)
    assert before["BatchNormalization"] == 2 and after.get("BatchNormalization", 0) < 2
    assert after["Mul"] < before["Mul"]


def test_synthetic_graph_compiles_to_plain_and_verifies() -> None:
    from bench.synthetic import CELL, FIXED, cells_for, synthetic

    model = synthetic(200, channels=4, seed=1)
    assert len(model.graph.node) == FIXED + CELL * cells_for(200)
    assert abs(len(model.graph.node) - 200) <= CELL
    assert synthetic(200, channels=4, seed=1).SerializeToString() == model.SerializeToString()
    result = run_pipeline(model, "fold,rep,et", options=Options(max_growth=10.0))  # every widening, as before
    assert set(op_histogram(result.model)) == {"Conv", "Relu", "DepthToSpace"}
    assert result.hits.get("rep/merge_parallel", 0) == cells_for(200)
    assert_equivalent(model, result.model, sizes=SIZES, atol=1e-5, rtol=0.0)
