"""A PSNR-vs-latency scatter plot drawn with Pillow (no matplotlib): axes, ticks, grid, labelled points, legend.

    from bench.plot import Point, draw
    draw([Point(812.0, 30.1, "ETDS", "etc", "int8"), ...], Path("bench/psnr_latency.png"), title="...")

Colour = family (seed), shape = variant (circle original, square etc, triangle official plain), hollow = FP32,
filled = INT8. Each point is labelled with its family and precision.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

WIDTH, HEIGHT = 1100, 720
MARGIN = {"left": 90, "right": 250, "top": 60, "bottom": 80}
COLOURS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14), (23, 190, 207)]
SHAPES = {"original": "circle", "etc": "square", "etc align4": "diamond", "official plain": "triangle"}
SHORT = {"original": "orig", "etc": "ETC", "etc align4": "ETC-a4", "official plain": "official"}
VARIANT_LABEL = {
    "original": "original export",
    "etc": "ETC fold,rep,et",
    "etc align4": "ETC, widths x4",
    "official plain": "official plain",
}


@dataclass(frozen=True)
class Point:
    ms: float
    psnr: float
    family: str
    variant: str  # original | etc | official plain
    precision: str  # fp32 | int8


def _font(size: int) -> ImageFont.ImageFont:
    for name in ("DejaVuSans.ttf", "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"):
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    return ImageFont.load_default()


def nice_ticks(lo: float, hi: float, count: int = 8) -> list[float]:
    """Round tick values covering [lo, hi] (steps of 1, 2 or 5 times a power of ten)."""
    span = max(hi - lo, 1e-9)
    raw = span / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.floor(lo / step) * step
    ticks, t = [], first
    while t <= hi + step * 1e-6:
        if t >= lo - step * 1e-6:
            ticks.append(round(t, 10))
        t += step
    return ticks


def _padded(values: list[float], frac: float = 0.08) -> tuple[float, float]:
    lo, hi = min(values), max(values)
    pad = (hi - lo) * frac or max(abs(lo) * 0.05, 0.5)
    return lo - pad, hi + pad


def _marker(
    draw: ImageDraw.ImageDraw, x: float, y: float, shape: str, colour, filled: bool, r: int = 8
) -> None:
    fill = colour if filled else (255, 255, 255)
    if shape == "circle":
        draw.ellipse([x - r, y - r, x + r, y + r], fill=fill, outline=colour, width=3)
    elif shape == "square":
        draw.rectangle([x - r, y - r, x + r, y + r], fill=fill, outline=colour, width=3)
    elif shape == "diamond":
        r += 2
        draw.polygon([(x, y - r), (x + r, y), (x, y + r), (x - r, y)], fill=fill, outline=colour, width=3)
    else:
        draw.polygon(
            [(x, y - r - 2), (x - r - 1, y + r), (x + r + 1, y + r)], fill=fill, outline=colour, width=3
        )


def draw(points: list[Point], path: Path, title: str = "") -> Path:
    """Writes the scatter plot of ``points`` to ``path`` (PNG) and returns the path."""
    img = Image.new("RGB", (WIDTH, HEIGHT), "white")
    d = ImageDraw.Draw(img)
    small, normal, big = _font(13), _font(15), _font(18)
    left, top = MARGIN["left"], MARGIN["top"]
    right, bottom = WIDTH - MARGIN["right"], HEIGHT - MARGIN["bottom"]
    if not points:
        d.text((left, top), "no data", fill="black", font=big)
        img.save(path)
        return path
    x0, x1 = _padded([p.ms for p in points])
    y0, y1 = _padded([p.psnr for p in points])
    x0 = max(x0, 0.0)

    def sx(v: float) -> float:
        return left + (v - x0) / (x1 - x0) * (right - left)

    def sy(v: float) -> float:
        return bottom - (v - y0) / (y1 - y0) * (bottom - top)

    for t in nice_ticks(x0, x1):
        X = sx(t)
        d.line([(X, top), (X, bottom)], fill=(230, 230, 230))
        d.line([(X, bottom), (X, bottom + 6)], fill="black", width=2)
        label = f"{t:g}"
        d.text((X - d.textlength(label, font=small) / 2, bottom + 9), label, fill="black", font=small)
    for t in nice_ticks(y0, y1):
        Y = sy(t)
        d.line([(left, Y), (right, Y)], fill=(230, 230, 230))
        d.line([(left - 6, Y), (left, Y)], fill="black", width=2)
        label = f"{t:g}"
        d.text((left - 10 - d.textlength(label, font=small), Y - 8), label, fill="black", font=small)
    d.rectangle([left, top, right, bottom], outline="black", width=2)
    xlabel = "onnxruntime CPU latency, ms (lower is better)"
    d.text(
        ((left + right - d.textlength(xlabel, font=normal)) / 2, bottom + 35),
        xlabel,
        fill="black",
        font=normal,
    )
    ylabel = "PSNR-Y, dB (higher is better)"
    tmp = Image.new("RGBA", (int(d.textlength(ylabel, font=normal)) + 4, 22), (255, 255, 255, 0))
    ImageDraw.Draw(tmp).text((2, 2), ylabel, fill="black", font=normal)
    rotated = tmp.rotate(90, expand=True)
    img.paste(rotated, (18, int((top + bottom - rotated.height) / 2)), rotated)
    if title:
        d.text(((WIDTH - d.textlength(title, font=big)) / 2, 20), title, fill="black", font=big)

    families = sorted({p.family for p in points})
    colour = {f: COLOURS[i % len(COLOURS)] for i, f in enumerate(families)}
    boxes: list[tuple[float, float, float, float]] = []
    for p in sorted(points, key=lambda q: (q.family, q.variant, q.precision)):
        X, Y = sx(p.ms), sy(p.psnr)
        _marker(d, X, Y, SHAPES.get(p.variant, "circle"), colour[p.family], p.precision == "int8")
        boxes.append((X - 10, Y - 10, X + 10, Y + 10))
    for p in sorted(points, key=lambda q: (q.family, q.variant, q.precision)):
        X, Y = sx(p.ms), sy(p.psnr)
        label = f"{p.family} {SHORT.get(p.variant, p.variant)} {p.precision.upper()}"
        box = _place(d, label, small, X, Y, boxes, (left, top, right, bottom))
        boxes.append(box)
        d.line([(X, Y), _nearest(box, X, Y)], fill=colour[p.family], width=1)
        d.text((box[0], box[1]), label, fill=colour[p.family], font=small)

    lx, ly = right + 20, top + 10
    d.text((lx, ly), "seed (colour)", fill="black", font=normal)
    ly += 24
    for f in families:
        d.rectangle([lx, ly + 3, lx + 14, ly + 17], fill=colour[f])
        d.text((lx + 22, ly + 1), f, fill="black", font=small)
        ly += 22
    ly += 14
    d.text((lx, ly), "variant (shape)", fill="black", font=normal)
    ly += 24
    for variant, shape in SHAPES.items():
        _marker(d, lx + 7, ly + 10, shape, (60, 60, 60), False, r=6)
        d.text((lx + 22, ly + 1), VARIANT_LABEL[variant], fill="black", font=small)
        ly += 22
    ly += 14
    d.text((lx, ly), "precision (fill)", fill="black", font=normal)
    ly += 24
    for name, filled in (("FP32 (hollow)", False), ("INT8 (filled)", True)):
        _marker(d, lx + 7, ly + 10, "circle", (60, 60, 60), filled, r=6)
        d.text((lx + 22, ly + 1), name, fill="black", font=small)
        ly += 22
    img.save(path)
    return path


def _overlaps(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _place(d, label, font, x, y, taken, frame) -> tuple[float, float, float, float]:
    """A label box near (x, y) inside ``frame`` that overlaps no taken box (rings of candidates, nearest first)."""
    w, h = d.textlength(label, font=font), 15
    for radius in range(12, 400, 10):
        for dx, dy in ((1, -1), (1, 1), (-1, -1), (-1, 1), (0, -1.4), (0, 1.4), (1.2, 0), (-1.2, 0)):
            bx = x + dx * radius - (w if dx < 0 else 0) - (w / 2 if dx == 0 else 0)
            by = y + dy * radius - (h if dy < 0 else 0) - (h / 2 if dy == 0 else 0)
            box = (bx, by, bx + w, by + h)
            inside = (
                frame[0] + 2 <= bx
                and bx + w <= frame[2] - 2
                and frame[1] + 2 <= by
                and by + h <= frame[3] - 2
            )
            if inside and not any(_overlaps(box, t) for t in taken):
                return box
    return (x + 10, y - 20, x + 10 + w, y - 5)


def _nearest(box: tuple[float, float, float, float], x: float, y: float) -> tuple[float, float]:
    """The point of ``box`` nearest to (x, y): where a leader line from the marker meets the label."""
    return (min(max(x, box[0]), box[2]), min(max(y, box[1]), box[3]))
