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
