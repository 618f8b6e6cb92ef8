"""Plain-text formatting shared by the command line and the demo (no heavy imports)."""

from __future__ import annotations

import math


def table(rows: list[list[object]], header: list[str]) -> str:
    """A plain left/right aligned text table."""
    cells = [[str(c) for c in header], *[[cell(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = []
    for n, row in enumerate(cells):
        parts = [c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(parts).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def cell(value: object) -> str:
    """A table cell: floats to 4 significant digits, scientific outside [1e-3, 1e5), infinities by name."""
    if isinstance(value, float):
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
            return f"{value:.2e}"
        return f"{value:.4g}"
    return str(value)


def json_safe(value: object) -> object:
    """``value`` as strict JSON types: tuples and sets as lists, numpy scalars and arrays as Python values,
    objects with ``as_dict`` expanded, non-finite floats as None (identical outputs have an infinite PSNR: None
    means "no error to measure") and anything else unknown as its string, so ``json.dumps(allow_nan=False)``
    takes it."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [json_safe(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if hasattr(value, "as_dict"):
        return json_safe(value.as_dict())
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return json_safe(value.tolist())
    return str(value)
