# -*- test-case-name: rustpbx_py.test.test_web_ladder -*-
"""
The dashboard's small chart: calls and failures per hour over the last
day, as an inline SVG bar chart (no JavaScript, no chart library).  Each
hour is one bar, its failed part drawn in red on top of the rest, with the
hour and figures in a tooltip.
"""

from __future__ import annotations

import time
from typing import List, Sequence

from twisted.web.template import Tag

from rustpbx_py.web.ladder import SVG_NS, _el

WIDTH = 480
HEIGHT = 150
LEFT = 34
BOTTOM = 22
TOP = 12
OK_COLOUR = "#4f83c2"
FAILED_COLOUR = "#c62828"


def _hour(seconds: float) -> str:
    return time.strftime("%H:00", time.gmtime(seconds))


def calls_chart(hours: Sequence, title: str = "Calls per hour, last 24 h (UTC)") -> Tag:
    """
    The bar chart of C{hours} (L{rustpbx_py.web.history.HourCount}s,
    oldest first): bars scaled to the busiest hour, a label every six
    hours, the scale's top on the left.
    """
    peak = max([h.calls for h in hours] + [1])
    plot_w = WIDTH - LEFT - 8
    plot_h = HEIGHT - TOP - BOTTOM
    slot = plot_w / max(len(hours), 1)
    bar = max(slot - 3, 1)
    body: List[Tag] = [
        _el("title", [title]),
        _el("rect", x=0, y=0, width=WIDTH, height=HEIGHT, fill="#ffffff"),
        _el("line", x1=LEFT, y1=TOP + plot_h, x2=WIDTH - 8, y2=TOP + plot_h, stroke="#999999"),
        _el("line", x1=LEFT, y1=TOP, x2=LEFT, y2=TOP + plot_h, stroke="#999999"),
        _el("text", [str(peak)], x=LEFT - 4, y=TOP + 8, text_anchor="end", font_size=10, fill="#555555"),
        _el("text", ["0"], x=LEFT - 4, y=TOP + plot_h, text_anchor="end", font_size=10, fill="#555555"),
    ]
    for i, h in enumerate(hours):
        x = LEFT + i * slot + 1.5
        total_h = plot_h * h.calls / peak
        failed_h = plot_h * min(h.failed, h.calls) / peak
        ok_h = total_h - failed_h
        bars: List[Tag] = [_el("title", [f"{_hour(h.start)}: {h.calls} calls, {h.failed} failed"])]
        # An invisible full-height bar: the tooltip works on empty hours too.
        bars.append(_el("rect", x=f"{x:.1f}", y=TOP, width=f"{bar:.1f}", height=plot_h, fill="transparent"))
        if ok_h > 0:
            bars.append(_el("rect", x=f"{x:.1f}", y=f"{TOP + plot_h - ok_h:.1f}", width=f"{bar:.1f}",
                            height=f"{ok_h:.1f}", fill=OK_COLOUR, class_="chart-calls"))
        if failed_h > 0:
            bars.append(_el("rect", x=f"{x:.1f}", y=f"{TOP + plot_h - total_h:.1f}", width=f"{bar:.1f}",
                            height=f"{failed_h:.1f}", fill=FAILED_COLOUR, class_="chart-failed"))
        body.append(_el("g", bars, class_="chart-hour"))
        if i % 6 == 0:
            body.append(_el("text", [_hour(h.start)], x=f"{x:.1f}", y=HEIGHT - 6, font_size=10, fill="#555555"))
    body.append(_el("rect", x=WIDTH - 150, y=2, width=10, height=10, fill=OK_COLOUR))
    body.append(_el("text", ["calls"], x=WIDTH - 136, y=11, font_size=10))
    body.append(_el("rect", x=WIDTH - 95, y=2, width=10, height=10, fill=FAILED_COLOUR))
    body.append(_el("text", ["failed"], x=WIDTH - 81, y=11, font_size=10))
    return _el("svg", body, xmlns=SVG_NS, width=WIDTH, height=HEIGHT, viewBox=f"0 0 {WIDTH} {HEIGHT}",
               font_family="sans-serif", class_="calls-chart", role="img", aria_label=title)
