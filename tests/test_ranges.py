"""Value ranges: sound per-channel intervals (checked against real onnxruntime outputs)."""

from __future__ import annotations

import numpy as np
import pytest

from etc import runtime
from etc.graph import to_gs
from etc.ranges import Interval, ValueRanges
from tests.fold_helpers import graph


def _intervals(model, ranges=None):
    g = to_gs(model)
    vr = ValueRanges(g, ranges)
    return g, vr


def _observed_inside(model, g, vr, ranges=None, sizes=((5, 7), (16, 16))):
    """Every graph output value seen on random inputs (corners included) lies in its interval."""
    specs = runtime.input_specs(model)
    for seed, size in enumerate(sizes):
        feeds = runtime.make_inputs(specs, ranges, size, seed)
        lo, hi = (ranges or {}).get("input", (0.0, 1.0))
        corner = {
            k: np.where(np.random.default_rng(seed).random(v.shape) > 0.5, hi, lo).astype(v.dtype)
            for k, v in feeds.items()
        }
        for feed in (feeds, corner):
            outs = runtime.run(model, feed)
            for tensor in g.outputs:
                value = outs[tensor.name]
                box = vr[tensor].channels(value.shape[1])
                per_channel = value.transpose(1, 0, 2, 3).reshape(value.shape[1], -1)
                assert np.all(per_channel.min(axis=1) >= box.lo - 1e-5)
                assert np.all(per_channel.max(axis=1) <= box.hi + 1e-5)


def test_conv_relu_clip_chain_is_sound(rng):
    m = graph(
        "c = Conv <pads = [1, 1, 1, 1]> (input, w, b)\nr = Relu(c)\nd = Conv (r, w2, b2)\n"
        "output = Clip(d, lo, hi)",
        outputs="float[1,2,?,?] output",
        w=rng.normal(size=(4, 3, 3, 3)).astype(np.float32),
        b=rng.normal(size=4).astype(np.float32),
        w2=rng.normal(size=(2, 4, 1, 1)).astype(np.float32),
        b2=rng.normal(size=2).astype(np.float32),
        lo=np.float32(-0.5),
        hi=np.float32(2.0),
    )
    g, vr = _intervals(m)
    _observed_inside(m, g, vr)
    relu_out = next(n for n in g.nodes if n.op == "Relu").outputs[0]
    assert vr[relu_out].nonnegative
    assert vr[g.outputs[0]].lo.min() >= -0.5 and vr[g.outputs[0]].hi.max() <= 2.0


def test_zero_padding_widens_the_conv_interval():
    w = np.ones((1, 1, 3, 3), np.float32)
    padded = graph(
        "output = Conv <pads = [1, 1, 1, 1]> (input, w, b)",
        inputs="float[1,1,H,W] input",
        outputs="float[1,1,H,W] output",
        w=w,
        b=np.zeros(1, np.float32),
    )
    g, vr = _intervals(padded, {"input": (1.0, 2.0)})
    # interior minimum is 9; a corner pixel sees 4 real values and 5 zeros
    assert vr[g.outputs[0]].lo[0] <= 4.0
    _observed_inside(padded, g, vr, {"input": (1.0, 2.0)})


def test_depth_to_space_and_concat_keep_channels(rng):
    m = graph(
        'r = Relu(input)\nc = Concat <axis = 1> (input, r)\noutput = DepthToSpace <blocksize = 2, mode = "CRD"> (c)',
        inputs="float[1,4,H,W] input",
        outputs="float[1,2,?,?] output",
    )
    g, vr = _intervals(m, {"input": (-1.0, 1.0)})
    out = vr[g.outputs[0]]
    assert out.per_channel and out.lo.tolist() == [-1.0, 0.0]
    _observed_inside(m, g, vr, {"input": (-1.0, 1.0)})


def test_unknown_ops_are_unbounded():
    m = graph("output = Exp(input)", outputs="float[1,3,H,W] output")
    g, vr = _intervals(m)
    assert not vr[g.outputs[0]].nonnegative
    assert np.isinf(vr[g.outputs[0]].hi).all()


def test_interval_helpers():
    iv = Interval.of([0, -1], [1, 2])
    assert iv.per_channel and not iv.nonnegative
    assert iv.hull().lo.tolist() == [-1.0]
    assert iv.channels(2) is iv
    with pytest.raises(ValueError):
        Interval.of([0, 1, 2], [1, 2])
