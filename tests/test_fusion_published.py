"""ETC's output of RepViT- and FastViT-style nets (etc/zoo/published/vit.py, both exporters) against the library's
deployed form, judged by the graph onnxruntime runs (etc.fusion): no more optimized nodes, no fewer fused Gelu or
fused convs, one Gemm for the head (BatchNorm1d folded, distillation twins merged), equivalent at odd sizes."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import etc  # noqa: E402
from etc.fusion import optimized_graph  # noqa: E402
from etc.zoo.published.vit import FastViTNet, RepViTNet  # noqa: E402
from tests.test_published_reparam import ops  # noqa: E402
from tests.test_published_reparam import training_and_deployed as published_forms  # noqa: E402

EXPORTERS = ["legacy", pytest.param("dynamo", marks=pytest.mark.slow)]
ODD_SIZES = ((37, 45), (19, 23))

NETS = {
    "repvit": lambda: RepViTNet(dim=16, depth=2, distillation=True),
    "fastvit": lambda: FastViTNet(dim=16, depth=2),
}


@pytest.fixture(scope="module")
def forms() -> dict:
    return {}


def training_and_deployed(request, cache: dict, name: str, exporter: str):
    """(training-form export, deployed-form export, fold,rep,et of the training form), built once."""
    _, train, deployed, plain = published_forms(request, cache, name, exporter, NETS, size=(64, 64))
    return train, deployed, plain


@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("name", list(NETS))
def test_runtime_graph_is_no_bigger_than_the_deployed_form(request, forms, name, exporter):
    _, deployed, plain = training_and_deployed(request, forms, name, exporter)
    ours, theirs = optimized_graph(plain), optimized_graph(deployed)
    assert ours.nodes <= theirs.nodes, (ours.summary(), theirs.summary())
    assert ours.gelu >= theirs.gelu
    assert ours.fused_conv >= theirs.fused_conv
    assert ours.reorders <= theirs.reorders


@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("name", list(NETS))
def test_head_becomes_one_gemm(request, forms, name, exporter):
    train, deployed, plain = training_and_deployed(request, forms, name, exporter)
    assert ops(train)["Gemm"] == (2 if name == "repvit" else 1)
    assert ops(train)["BatchNormalization"] > 0
    assert ops(plain)["Gemm"] == ops(deployed)["Gemm"] == 1
    assert ops(plain)["BatchNormalization"] == 0
    assert ops(plain)["Conv"] == ops(deployed)["Conv"]


@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("name", list(NETS))
def test_gelus_stay_whole(request, forms, name, exporter):
    train, _, plain = training_and_deployed(request, forms, name, exporter)
    assert ops(plain)["Erf"] == ops(train)["Erf"] == 3
    assert ops(plain)["Mul"] >= 2 * ops(plain)["Erf"]  # every GELU keeps its * x and * 0.5


@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("name", list(NETS))
def test_equivalent_to_training_and_deployed_forms_at_odd_sizes(request, forms, name, exporter):
    train, deployed, plain = training_and_deployed(request, forms, name, exporter)
    assert etc.verify(train, plain, sizes=ODD_SIZES).equivalent
    assert etc.verify(deployed, plain, sizes=ODD_SIZES).equivalent
