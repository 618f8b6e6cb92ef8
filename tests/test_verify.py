"""Verification catches border-only bugs and reports per-output differences."""

from __future__ import annotations

import numpy as np

from etc.verification import verify
from tests.fold_helpers import graph


def test_border_only_difference_is_caught(rng):
    """Bias added before a padded conv equals bias after it only in the interior: verify must say no."""
    w = rng.normal(size=(4, 3, 3, 3)).astype(np.float32)
    shift = np.array([0.3, -0.2, 0.5], np.float32).reshape(1, 3, 1, 1)
    before = graph(
        "s = Add(input, shift)\noutput = Conv <pads = [1, 1, 1, 1]> (s, w, b)",
        w=w,
        b=np.zeros(4, np.float32),
        shift=shift,
    )
    interior_bias = np.einsum("oihw,i->o", w.astype(np.float64), shift.reshape(-1)).astype(np.float32)
    after = graph("output = Conv <pads = [1, 1, 1, 1]> (input, w, b)", w=w, b=interior_bias)
    report = verify(before, after)
    assert not report.equivalent
    assert report.rows[0]["max_abs"] > 1e-3


def test_identical_models_are_equivalent_with_zero_error(rng):
    m = graph(
        "output = Conv <pads = [1, 1, 1, 1]> (input, w, b)",
        w=rng.normal(size=(4, 3, 3, 3)).astype(np.float32),
        b=np.zeros(4, np.float32),
    )
    report = verify(m, m)
    assert report.equivalent and report.rows[0]["max_abs"] == 0.0
    assert any("17x23" in p for p in report.probes)  # an odd size was probed


def _one_channel(body: str, **inits):
    return graph(body, inputs="float[1,1,H,W] input", outputs="float[1,1,H,W] output", **inits)


def test_float64_arbiter_accepts_a_more_accurate_rewrite_and_rejects_a_wrong_one():
    """A cancels two large products (float32 error ~1e-3); B computes the same 0.3x exactly; C is 0.01 off."""
    cancelling = _one_channel(
        "a = Conv(input, wa)\nb = Conv(input, wb)\nd = Sub(a, b)\noutput = Relu(d)",
        wa=np.full((1, 1, 1, 1), 1e4 + 0.3, np.float32),
        wb=np.full((1, 1, 1, 1), 1e4, np.float32),
    )
    exact = _one_channel("c = Conv(input, w)\noutput = Relu(c)", w=np.full((1, 1, 1, 1), 0.3, np.float32))
    wrong = _one_channel(
        "c = Conv(input, w, b)\noutput = Relu(c)",
        w=np.full((1, 1, 1, 1), 0.3, np.float32),
        b=np.full(1, 0.01, np.float32),
    )
    good = verify(cancelling, exact)
    assert good.rows[0]["max_abs"] > 1e-5  # float32 alone would call it different
    assert good.equivalent and good.rows[0]["float64_arbiter"]
    assert not verify(cancelling, wrong).equivalent


def test_known_outputs_stand_in_for_an_equal_probe_only(rng):
    """Outputs handed over for a probe equal to one verify makes are used instead of a run (a wrong one is
    caught, so they are really used); outputs for another input are ignored."""
    from etc import runtime
    from etc.verification import VERIFY_SIZES

    m = graph(
        "output = Conv <pads = [1, 1, 1, 1]> (input, w, b)",
        w=rng.normal(size=(4, 3, 3, 3)).astype(np.float32),
        b=np.zeros(4, np.float32),
    )
    probe = runtime.input_sets(m, None, sizes=VERIFY_SIZES, seed=0)[0]
    right = runtime.run(runtime.session(m), probe)
    wrong = {name: value + 1.0 for name, value in right.items()}
    assert verify(m, m, known=((), [(probe, right)])).equivalent
    assert not verify(m, m, known=((), [(probe, wrong)])).equivalent
    other = {name: value + 0.5 for name, value in probe.items()}
    assert verify(m, m, known=((), [(other, wrong)])).equivalent


def test_probe_sizes_grow_to_fit_the_widest_window():
    """A 17x17 conv after a stride-2 conv reads 34 input pixels: the probes grow past that, parity kept, while a
    3x3 model keeps the default sizes."""
    from etc import runtime, shapes
    from etc.testing import GraphBuilder

    small = GraphBuilder(3)
    small_model = small.model(small.conv("input", 3, 3, 3))
    assert shapes.widest_window(small_model) == (3, 3)
    assert shapes.fit_windows(small_model, runtime.DEFAULT_SIZES) == runtime.DEFAULT_SIZES

    b = GraphBuilder(3)
    down = b.conv("input", 3, 4, 3, stride=2)
    model = b.model(b.conv(down, 4, 3, (17, 9)))
    assert shapes.widest_window(model) == (34, 18)
    sizes = shapes.fit_windows(model, ((17, 23), (16, 16)))
    assert sizes == ((39, 23), (38, 22))
    assert all(h % 2 == oh % 2 and w % 2 == ow % 2 for (h, w), (oh, ow) in zip(sizes, ((17, 23), (16, 16))))
    report = verify(model, model)
    assert report.equivalent and any("39x23" in p for p in report.probes), report.probes
