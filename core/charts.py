"""Small pieces of presentation shared by the single-device and multi-device reports: numbers and plans as
text, and the accuracy-latency scatter plot as inline SVG (no scripts, no downloads)."""

from __future__ import annotations

from typing import Any


def fmt(value: Any, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def plan_text(plan: dict[str, Any] | None) -> str:
    if not plan:
        return "(uncompressed)"
    parts = [f"{layer}: " + ",".join(f"{k}={v}" for k, v in sorted(d.items()))
             for layer, d in sorted(plan.get("layers", {}).items())]
    parts += [f"{k}={v}" for k, v in sorted(plan.get("model", {}).items())]
    return "; ".join(parts) or "(uncompressed)"


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
    """A scatter plot as inline SVG: every point with a tooltip, the Pareto front joined, the budget line."""
    from html import escape as html_escape

    if not points:
        return "<p>(no measured candidates)</p>"
    pad_l, pad_r, pad_t, pad_b = 64, 16, 16, 44
    xs, ys = [p["x"] for p in points], [p["y"] for p in points]
    x_lo, x_hi = min(xs + ([budget] if budget else [])), max(xs + ([budget] if budget else []))
    y_lo, y_hi = min(ys), max(ys)
    span = x_hi - x_lo or x_hi or 1
    x_lo, x_hi = max(0.0, x_lo - 0.05 * span) if x_lo >= 0 else x_lo - 0.05 * span, x_hi + 0.05 * span
    y_lo, y_hi = y_lo - 0.05 * (y_hi - y_lo or 0.01), y_hi + 0.05 * (y_hi - y_lo or 0.01)

    def sx(v: float) -> float:
        return pad_l + (v - x_lo) / (x_hi - x_lo) * (width - pad_l - pad_r)

    def sy(v: float) -> float:
        return height - pad_b - (v - y_lo) / (y_hi - y_lo) * (height - pad_t - pad_b)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" class="plot">',
             f'<rect x="{pad_l}" y="{pad_t}" width="{width - pad_l - pad_r}" height="{height - pad_t - pad_b}" '
             'fill="none" stroke="#999"/>']
    for k in range(5):
        xv, yv = x_lo + (x_hi - x_lo) * k / 4, y_lo + (y_hi - y_lo) * k / 4
        parts.append(f'<text x="{sx(xv):.1f}" y="{height - pad_b + 16}" text-anchor="middle">{xv:.3g}</text>')
        parts.append(f'<text x="{pad_l - 6}" y="{sy(yv) + 4:.1f}" text-anchor="end">{yv:.4g}</text>')
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
