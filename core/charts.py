"""Small pieces of presentation shared by the single-device and multi-device reports: numbers and plans as
text, and the accuracy-latency scatter plot as inline SVG (no scripts, no downloads)."""

from __future__ import annotations

import math
import re
from typing import Any


def fmt(value: Any, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def natural_key(name: str) -> list[Any]:
    """Sort "conv2" before "conv10" and "3" before "10": layer names often carry graph indices."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def model_decisions(plan: dict[str, Any]) -> dict[str, Any]:
    """The plan's model-wide decisions that mean something: INT8 settings (``int8_*``) only when some layer is
    INT8, so a float model is never labelled with a quantization scheme it does not use."""
    has_int8 = any(d.get("bits", 32) <= 8 for d in plan.get("layers", {}).values())
    return {k: v for k, v in plan.get("model", {}).items() if has_int8 or not k.startswith("int8_")}


def target_text(target: dict[str, Any]) -> str:
    """"onnxruntime (threads=1, graph_optimization=all)": a target section as a reader writes it."""
    options = ", ".join(f"{k}={','.join(map(str, v)) if isinstance(v, list) else v}"
                        for k, v in target.items() if k != "name")
    return f"{target.get('name', '?')} ({options})" if options else str(target.get("name", "?"))


def plan_text(plan: dict[str, Any] | None) -> str:
    if not plan:
        return "(uncompressed)"
    layers = plan.get("layers", {})
    parts = [f"{layer}: " + ",".join(f"{k}={v}" for k, v in sorted(layers[layer].items()))
             for layer in sorted(layers, key=natural_key)]
    parts += [f"{k}={v}" for k, v in sorted(model_decisions(plan).items())]
    return "; ".join(parts) or "(uncompressed)"


def nice_ticks(lo: float, hi: float, count: int = 5) -> tuple[list[float], int]:
    """Ticks at round steps (1, 2 or 5 times a power of ten) covering [lo, hi], and the decimals that tell
    neighbouring ticks apart (no "1, 1, 1, 0.9999", no scientific notation)."""
    raw = (hi - lo) / max(count - 1, 1) or abs(hi) or 1.0
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.floor(lo / step + 1e-9) * step
    ticks = [first + i * step for i in range(int(math.ceil((hi - first) / step - 1e-9)) + 1)]
    return ticks, max(0, -math.floor(math.log10(step) + 1e-9))


def value_range(values: list[float], min_span: float, unit_interval: bool) -> tuple[float, float]:
    """An axis range around ``values`` at least ``min_span`` wide (a 0.2-point accuracy spread must not look like
    a cliff); metrics in [0, 1] are not drawn past 1."""
    lo, hi = min(values), max(values)
    pad = max(0.05 * (hi - lo), (min_span - (hi - lo)) / 2, 0.0)
    lo, hi = lo - pad, hi + pad
    if unit_interval and hi > 1.0:
        lo, hi = lo - (hi - 1.0), 1.0
    return lo, hi


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both axes (lower x, higher y), by increasing x."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best_y = [], float("-inf")
    for i in order:
        if points[i][1] > best_y:
            front.append(i)
            best_y = points[i][1]
    return front


def svg_scatter(points: list[dict[str, Any]], x_label: str, y_label: str, budget: float | None = None,
                width: int = 640, height: int = 380) -> str:
    """A scatter plot as inline SVG: every point with a tooltip, the Pareto front joined, the budget line.
    The x axis starts at 0 (latencies and sizes are compared as ratios); the y axis spans at least 2% of its
    values (a metric in [0, 1] at least 0.02), so one test image more or less does not look like a cliff."""
    from html import escape as html_escape

    if not points:
        return "<p>(no measured candidates)</p>"
    pad_l, pad_r, pad_t, pad_b = 64, 32, 16, 44
    xs, ys = [p["x"] for p in points], [p["y"] for p in points]
    x_ticks, x_decimals = nice_ticks(0.0, max(xs + ([budget] if budget else [])) * 1.05)
    x_lo, x_hi = x_ticks[0], x_ticks[-1]
    unit = all(0.0 <= y <= 1.0 for y in ys)
    y_ticks, y_decimals = nice_ticks(*value_range(ys, 0.02 if unit else 0.02 * max(abs(y) for y in ys), unit))
    y_lo, y_hi = y_ticks[0], y_ticks[-1]

    def sx(v: float) -> float:
        return pad_l + (v - x_lo) / (x_hi - x_lo or 1) * (width - pad_l - pad_r)

    def sy(v: float) -> float:
        return height - pad_b - (v - y_lo) / (y_hi - y_lo or 1) * (height - pad_t - pad_b)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" class="plot">',
             f'<rect x="{pad_l}" y="{pad_t}" width="{width - pad_l - pad_r}" height="{height - pad_t - pad_b}" '
             'fill="none" stroke="#999"/>']
    parts += [f'<text x="{sx(v):.1f}" y="{height - pad_b + 16}" text-anchor="middle">{v:.{x_decimals}f}</text>'
              for v in x_ticks]
    parts += [f'<text x="{pad_l - 6}" y="{sy(v) + 4:.1f}" text-anchor="end">{v:.{y_decimals}f}</text>'
              for v in y_ticks]
    parts.append(f'<text x="{(width + pad_l) / 2}" y="{height - 8}" text-anchor="middle">{html_escape(x_label)}</text>')
    parts.append(f'<text x="14" y="{(height - pad_b) / 2}" transform="rotate(-90 14 {(height - pad_b) / 2})" '
                 f'text-anchor="middle">{html_escape(y_label)}</text>')
    if budget:
        parts.append(f'<line x1="{sx(budget):.1f}" x2="{sx(budget):.1f}" y1="{pad_t}" y2="{height - pad_b}" '
                     'stroke="#c00" stroke-dasharray="5,4"/>')
        parts.append(f'<text x="{sx(budget) + 4:.1f}" y="{pad_t + 12}" fill="#c00">budget</text>')
    front = pareto_front([(p["x"], p["y"]) for p in points])
    if len(front) > 1:
        path = " ".join(f"{sx(points[i]['x']):.1f},{sy(points[i]['y']):.1f}" for i in front)
        parts.append(f'<polyline points="{path}" fill="none" stroke="#2a7" stroke-width="2"/>')
    for i, p in enumerate(points):
        colour = {"best": "#d60", "baseline": "#05c"}.get(p.get("role", ""), "#2a7" if i in front else "#888")
        radius = 6 if p.get("role") else 4
        parts.append(f'<circle cx="{sx(p["x"]):.1f}" cy="{sy(p["y"]):.1f}" r="{radius}" fill="{colour}">'
                     f'<title>{html_escape(p["label"])}</title></circle>')
    parts.append("</svg>")
    return "\n".join(parts)
