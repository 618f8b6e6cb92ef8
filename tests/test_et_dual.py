"""et_dual: ETDS dual streams (Concat of activated convs) merge into block-triangular convs."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from etc.passes import et_add, et_dual
from etc.testing import GraphBuilder, assert_equivalent, conv_kernels, ops, reasons, run_family

FAMILIES = et_add.rules + et_dual.rules


def _dual(b: GraphBuilder, feat: int, res: int, blocks: int, k: int = 3) -> str:
    x = b.op("Relu", [b.conv("input", 3, feat, k)])
    r = b.op("Relu", [b.conv("input", 3, res, k)])
    for _ in range(blocks):
        x, r = (
            b.op("Relu", [b.op("Add", [b.conv(x, feat, feat, k), b.conv(r, res, feat, k)])]),
            b.op("Relu", [b.conv(r, res, res, k)]),
        )
    return b.op("Add", [b.conv(x, feat, 4, k), b.conv(r, res, 4, k)])


def test_etds_streams_become_one_chain():
    b = GraphBuilder(3)
    model = b.model(_dual(b, 5, 3, 2))
    result, hits, _ = run_family(model, FAMILIES)
    assert hits == {"add_to_conv": 3, "dual_stream": 3}
    assert ops(result) == ["Conv", "Relu", "Conv", "Relu", "Conv", "Relu", "Conv"]
    shapes = [k.shape[:2] for k in conv_kernels(result)]
    assert shapes == [(8, 3), (8, 8), (8, 8), (4, 8)]
    body = conv_kernels(result)[1]
    assert not body[5:, :5].any()  # block-triangular: residual rows never read backbone channels
    assert_equivalent(model, result, sizes=((5, 7), (17, 23)))


@settings(max_examples=25, deadline=None)
@given(feat=st.integers(1, 5), res=st.integers(1, 4), blocks=st.integers(0, 2), k=st.sampled_from([1, 3, 5]))
def test_property_dual(feat, res, blocks, k):
    b = GraphBuilder(3, seed=feat * 11 + res)
    model = b.model(_dual(b, feat, res, blocks, k))
    result, _, _ = run_family(model, FAMILIES)
    assert set(ops(result)) == {"Conv", "Relu"}
    assert ops(result).count("Conv") == blocks + 2
    assert_equivalent(model, result, sizes=((5, 7),))


def test_concat_of_plain_convs_without_activation():
    b = GraphBuilder(3)
    model = b.model(b.op("Concat", [b.conv("input", 3, 2, 1), b.conv("input", 3, 3, 5)], axis=1))
    result, hits, _ = run_family(model, et_dual.rules)
    assert hits == {"dual_stream": 1}
    assert ops(result) == ["Conv"]
    assert_equivalent(model, result, input_ranges={"input": (-1.0, 1.0)})


def test_strided_stream_is_refused():
    b = GraphBuilder(3)
    x = b.op("Relu", [b.conv("input", 3, 4, stride=2)])
    r = b.op("Relu", [b.conv("input", 3, 4, stride=2)])
    _, hits, declines = run_family(b.model(b.op("Concat", [x, r], axis=1)), et_dual.rules)
    assert not hits
    assert any("stride" in r for r in reasons(declines, "dual_stream"))


def test_shared_stream_waits():
    """A stream read elsewhere is not absorbed (it would be computed twice); nothing merges."""
    b = GraphBuilder(3)
    x = b.op("Relu", [b.conv("input", 3, 4)])
    r = b.op("Relu", [b.conv("input", 3, 4)])
    model = b.model(b.op("Concat", [x, r], axis=1), r)
    _, hits, _ = run_family(model, et_dual.rules)
    assert not hits
