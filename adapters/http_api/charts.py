"""Charts drawn on the server as SVG (no library in the page, nothing fetched): money in and
out per day. Every bar carries its day and amounts as data attributes and a <title>, so what
the chart shows can be read back (by a screen reader, a test) and equals the API's numbers."""
from __future__ import annotations

from typing import Any
from xml.sax.saxutils import quoteattr

WIDTH, HEIGHT, LEFT, BOTTOM, TOP = 780, 240, 84, 28, 16
IN_COLOUR, OUT_COLOUR = "#16a34a", "#dc2626"


def _sat(value: int) -> str:
    return f"{value:,} sat"


def _btc(value: int) -> str:
    return f"{value / 100_000_000:.8f}".rstrip("0").rstrip(".") + " BTC"


def daily_flows_svg(flows: dict[str, Any]) -> str:
    days = flows["days"]
    top = max([1, *(d["in_sat"] for d in days), *(d["out_sat"] for d in days)])
    plot_w, plot_h = WIDTH - LEFT - 8, HEIGHT - BOTTOM - TOP
    slot = plot_w / max(1, len(days))
    bar = max(1.0, slot * 0.38)
    label = (f"Money in and out per day over the last {len(days)} days: {_sat(flows['in_sat'])} in, "
             f"{_sat(flows['out_sat'])} out")
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" width="100%" '
           f'role="img" aria-label={quoteattr(label)} class="chart" data-in-sat="{flows["in_sat"]}" '
           f'data-out-sat="{flows["out_sat"]}">',
           f"<title>{label}</title>",
           f'<line x1="{LEFT}" y1="{TOP + plot_h}" x2="{WIDTH - 8}" y2="{TOP + plot_h}" stroke="#9ca3af"/>',
           f'<line x1="{LEFT}" y1="{TOP}" x2="{WIDTH - 8}" y2="{TOP}" stroke="#e5e7eb" stroke-dasharray="3 3"/>',
           f'<text x="{LEFT - 6}" y="{TOP + 4}" text-anchor="end" font-size="11" fill="#4b5563">{_btc(top)}</text>',
           f'<text x="{LEFT - 6}" y="{TOP + plot_h}" text-anchor="end" font-size="11" fill="#4b5563">0</text>']
    for i, d in enumerate(days):
        x = LEFT + i * slot + slot * 0.1
        tip = f"{d['day']}: {_sat(d['in_sat'])} in, {_sat(d['out_sat'])} out"
        out.append(f'<g class="day" data-day="{d["day"]}" data-in-sat="{d["in_sat"]}" '
                   f'data-out-sat="{d["out_sat"]}"><title>{tip}</title>')
        for j, (value, colour) in enumerate(((d["in_sat"], IN_COLOUR), (d["out_sat"], OUT_COLOUR))):
            h = plot_h * value / top
            if value:
                h = max(h, 1.5)
            out.append(f'<rect x="{x + j * bar:.1f}" y="{TOP + plot_h - h:.1f}" width="{bar:.1f}" '
                       f'height="{h:.1f}" fill="{colour}"/>')
        out.append("</g>")
        if i % 5 == 0 or i == len(days) - 1:
            out.append(f'<text x="{x + bar:.1f}" y="{HEIGHT - 10}" text-anchor="middle" font-size="11" '
                       f'fill="#4b5563">{d["day"][5:]}</text>')
    out += [f'<rect x="{WIDTH - 150}" y="2" width="10" height="10" fill="{IN_COLOUR}"/>',
            f'<text x="{WIDTH - 136}" y="11" font-size="11">in</text>',
            f'<rect x="{WIDTH - 100}" y="2" width="10" height="10" fill="{OUT_COLOUR}"/>',
            f'<text x="{WIDTH - 86}" y="11" font-size="11">out</text>', "</svg>"]
    return "".join(out)
