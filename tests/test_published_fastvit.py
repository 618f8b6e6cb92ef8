"""FastViT's training-time blocks (timm's MobileOne, RepMixer, large-kernel patch embedding, ConvMlp), written in
our own code and exported by both exporters: fold,rep,et merges every re-parameterizable branch (no BN, no Sub
of RepMixer left), keeps the depthwise convs depthwise, and the result equals the training form at odd sizes."""

from __future__ import annotations

from collections import Counter

import pytest

torch = pytest.importorskip("torch")

import etc  # noqa: E402
from etc.zoo.published.fastvit import FastViT  # noqa: E402
from tests.test_rep_zoo import cached_export  # noqa: E402

EXPORTERS = ["legacy", pytest.param("dynamo", marks=pytest.mark.slow)]


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_fastvit_blocks_merge_and_stay_equivalent(request, exporter):
    net = FastViT(dims=(8, 16), layers=(1, 1), ratio=2, classes=0)
    model = cached_export(request, net, exporter)
    plain, report = etc.optimize(model, "fold,rep,et")
    assert report.verification.equivalent
    ops = Counter(node.op_type for node in plain.graph.node)
    assert ops["BatchNormalization"] == 0 and ops["Sub"] == 0
    convs_before = sum(node.op_type == "Conv" for node in model.graph.node)
    assert ops["Conv"] < convs_before
    groups = [
        next((a.i for a in node.attribute if a.name == "group"), 1)
        for node in plain.graph.node
        if node.op_type == "Conv"
    ]
    assert sum(g > 1 for g in groups) >= 4  # stem, mixers, ConvMlp and patch-embedding depthwise convs
    assert etc.verify(model, plain, sizes=((19, 23), (11, 9))).equivalent
