"""Deletion and insertion curves as inline SVG: one mean line per method, its interquartile band, baselines dashed.

Drawn from numbers in Python, so the page needs no plotting script and no network, and prints sharply.
"""

from __future__ import annotations

import math
from html import escape

import numpy as np

from .report_data import Band

WIDTH, HEIGHT = 560, 300
LEFT, RIGHT, TOP, BOTTOM = 52, 16, 14, 40
# Colour-blind-safe categorical colours (Okabe-Ito), then greys for the baselines.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000")
BASELINE_COLOURS = {"random": "#8a8f98", "center": "#b7bcc4"}


def colour_of(method: str, methods: list[str]) -> str:
    if method in BASELINE_COLOURS:
        return BASELINE_COLOURS[method]
    return PALETTE[methods.index(method) % len(PALETTE)] if method in methods else PALETTE[-1]


def _nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    span = hi - lo
    if span <= 0:
        return [lo]
    raw = span / count
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.ceil(lo / step - 1e-9) * step
    ticks, t = [], start
    while t <= hi + 1e-9 * step:
        ticks.append(round(t, 12))
        t += step
    return ticks


def _fmt(v: float) -> str:
    return f"{v:.3g}" if v != 0 else "0"


def curve_svg(metric: str, bands: dict[str, Band], methods: list[str], *, x_label: str) -> str:
    """An SVG chart of ``bands`` (method -> Band) for one metric."""
    lows = [float(np.min(b.low)) for b in bands.values()]
    highs = [float(np.max(b.high)) for b in bands.values()]
    lo, hi = min(lows), max(highs)
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    pad = (hi - lo) * 0.05
    lo, hi = lo - pad, hi + pad
    if lo < 0 <= min(lows):
        lo = 0.0  # probabilities: no axis below zero unless a curve goes there
    pw, ph = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def sx(f: float) -> float:
        return LEFT + f * pw

    def sy(v: float) -> float:
        return TOP + (hi - v) / (hi - lo) * ph

    parts = [f'<svg class="curve" role="img" viewBox="0 0 {WIDTH} {HEIGHT}" width="100%" '
             f'xmlns="http://www.w3.org/2000/svg" aria-label="{escape(metric)} curves">',
             f"<title>{escape(metric)}: mean curve per method, band = 25th to 75th percentile over images</title>"]
    for t in _nice_ticks(lo, hi):
        y = sy(t)
        parts.append(f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>'
                     f'<text class="tick" x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{_fmt(t)}</text>')
    for f in (0, 0.25, 0.5, 0.75, 1):
        x = sx(f)
        parts.append(f'<line class="grid" x1="{x:.1f}" x2="{x:.1f}" y1="{TOP}" y2="{TOP + ph}"/>'
                     f'<text class="tick" x="{x:.1f}" y="{TOP + ph + 16}" text-anchor="middle">{f:g}</text>')
    parts.append(f'<text class="axis" x="{LEFT + pw / 2:.1f}" y="{HEIGHT - 6}" text-anchor="middle">'
                 f"{escape(x_label)}</text>")
    parts.append(f'<text class="axis" transform="translate(13 {TOP + ph / 2:.1f}) rotate(-90)" '
                 f'text-anchor="middle">class probability</text>')
    # baselines first, so the methods draw on top of them
    order = [m for m in bands if m in BASELINE_COLOURS] + [m for m in bands if m not in BASELINE_COLOURS]
    for method in order:
        band, colour = bands[method], colour_of(method, methods)
        top = " ".join(f"{sx(f):.1f},{sy(v):.1f}" for f, v in zip(band.grid, band.high, strict=True))
        bottom = " ".join(f"{sx(f):.1f},{sy(v):.1f}" for f, v in zip(band.grid[::-1], band.low[::-1], strict=True))
        line = " ".join(f"{sx(f):.1f},{sy(v):.1f}" for f, v in zip(band.grid, band.mean, strict=True))
        dash = ' stroke-dasharray="6 4"' if method in BASELINE_COLOURS else ""
        name = escape(method)
        if method not in BASELINE_COLOURS:
            parts.append(f'<polygon class="band" points="{top} {bottom}" fill="{colour}" data-method="{name}"/>')
        parts.append(f'<polyline class="mean" points="{line}" stroke="{colour}"{dash} data-method="{name}">'
                     f"<title>{name}: mean of {band.n} images</title></polyline>")
    parts.append(f'<rect class="frame" x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}"/>')
    parts.append("</svg>")
    return "".join(parts)
