"""Charts as inline SVG, drawn on the server by pygal from the reports' figures.

Server-side SVG needs no JavaScript and no asset to serve: the chart is in the page's
HTML the moment it renders, it prints, and it is escaped by pygal's XML writer (names
of enterprises and projects are user input). pygal always adds an inline
``<script>`` holding the config of its optional tooltip library, which we do not load
and which the pages' CSP would refuse; it is removed. Amounts are PFlop·h floats here,
for display only.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import pygal  # type: ignore[import-untyped]
from pygal.style import Style  # type: ignore[import-untyped]

from ..services.reports import BurnDown, RateSeries
from ..units import UNITS_PER_PFH

# pygal appends a finder with only the legacy ``find_module`` to ``sys.meta_path`` (for
# its map plugins, which we do not use); on Python 3.11 every later failed import then
# warns ImportWarning, an error under ``-W error``, breaking ``try: import x`` fallbacks.
sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, pygal.PluginImportFixer)]

_SCRIPT = re.compile(r"<script\b[^>]*>.*?</script>", re.S)
_STYLE = Style(
    background="transparent",
    plot_background="transparent",
    foreground="#1f2933",
    foreground_strong="#111827",
    foreground_subtle="#9aa5b1",
    font_family="system-ui, -apple-system, 'Segoe UI', sans-serif",
    label_font_size=12,
    major_label_font_size=12,
    legend_font_size=13,
    value_font_size=12,
    tooltip_font_size=12,
    guide_stroke_color="#d1d5db",
    major_guide_stroke_color="#d1d5db",
    colors=("#2563eb", "#16a34a", "#dc2626", "#f59e0b", "#7c3aed", "#0891b2", "#64748b"),
)
STATE_COLORS = {
    "accepted": "#94a3b8",
    "pending": "#f59e0b",
    "running": "#2563eb",
    "suspended": "#a855f7",
    "completed": "#16a34a",
    "failed": "#dc2626",
    "cancelled": "#64748b",
    "timeout": "#ea580c",
    "out_of_memory": "#be123c",
    "node_fail": "#b45309",
    "boot_fail": "#a16207",
    "preempted": "#0d9488",
    "rejected": "#7f1d1d",
    "unknown": "#d1d5db",
}


def _common(**extra: Any) -> dict[str, Any]:
    opts: dict[str, Any] = {
        "js": [],
        "disable_xml_declaration": True,
        "style": _STYLE,
        "width": 860,
        "height": 320,
        "legend_at_bottom": True,
        "legend_at_bottom_columns": 3,
        "stroke_style": {"width": 2},
        "margin": 10,
        "margin_bottom": 28,
        "print_values": False,
        "truncate_legend": 40,
        "truncate_label": 24,
    }
    opts.update(extra)
    return opts


def _svg(chart: Any) -> str:
    return _SCRIPT.sub("", str(chart.render(is_unicode=True)))


def pfh(units: int) -> float:
    return units / UNITS_PER_PFH


def burn_down(bd: BurnDown, now: datetime) -> str:
    """Remaining and available budget over the period, and the projection to exhaustion."""
    start, end = bd.start.timestamp(), bd.end.timestamp()
    chart = pygal.DateTimeLine(
        **_common(
            show_dots=False,
            xrange=(start, end),
            x_value_formatter=lambda d: d.strftime("%d %b"),
            y_title="PFlop·h",
            show_x_guides=False,
            fill=False,
        )
    )
    chart.add("remaining: granted − charged", [(p.at, pfh(p.remaining_units)) for p in bd.points])
    chart.add("available: − held", [(p.at, pfh(p.available_units)) for p in bd.points])
    proj = bd.projection
    if proj.rate_units_per_day > 0 and proj.available_units > 0:
        days_left = (end - now.timestamp()) / 86400
        burnt = proj.rate_units_per_day * days_left
        if proj.exhaustion_at is not None and proj.exhaustion_at <= bd.end:
            tail = (proj.exhaustion_at, 0.0)
        else:
            tail = (bd.end, pfh(max(0, round(proj.available_units - burnt))))
        chart.add(
            "projection (7-day rate)",
            [(now, pfh(proj.available_units)), tail],
            stroke_style={"dasharray": "6,5", "width": 2.5},
        )
    else:
        chart.add("projection (7-day rate)", [])
    return _svg(chart)


def state_bars(counts: dict[str, int]) -> str:
    """Jobs by state, one coloured bar each."""
    shown = [(s, n) for s, n in counts.items() if n or s in ("running", "pending", "completed")]
    chart = pygal.Bar(**_common(show_legend=False, height=260, y_title="jobs"))
    chart.x_labels = [s for s, _ in shown]
    chart.add(
        "jobs",
        [{"value": n, "color": STATE_COLORS.get(s, "#64748b"), "label": s} for s, n in shown],
    )
    return _svg(chart)


def quota_bars(granted: int, held: int, charged: int) -> str:
    """Center-wide PFlop·h: granted against held, charged and still available."""
    chart = pygal.HorizontalBar(**_common(height=220, x_title="PFlop·h", legend_at_bottom=True))
    chart.add("granted", [pfh(granted)])
    chart.add("charged", [pfh(charged)])
    chart.add("held", [pfh(held)])
    chart.add("available", [pfh(granted - held - charged)])
    return _svg(chart)


def usage_bars(labels: Sequence[str], charged: Sequence[int], held: Sequence[int]) -> str:
    """Stacked charged and held PFlop·h per label (top projects, top enterprises)."""
    chart = pygal.StackedBar(**_common(height=280, y_title="PFlop·h", x_label_rotation=20))
    chart.x_labels = list(labels)
    chart.add("charged", [pfh(u) for u in charged])
    chart.add("held", [pfh(u) for u in held])
    return _svg(chart)


def used_fraction_bars(labels: Sequence[str], fractions: Sequence[float]) -> str:
    """Share of each enterprise's grant already held or charged, in percent."""
    chart = pygal.HorizontalBar(
        **_common(show_legend=False, height=max(180, 26 * len(labels) + 60), range=(0, 100))
    )
    chart.x_labels = list(labels)
    chart.add(
        "used %",
        [
            {"value": round(100 * f, 1), "color": "#dc2626" if f >= 0.9 else "#2563eb"}
            for f in fractions
        ],
    )
    return _svg(chart)


def busy_nodes(points: Sequence[tuple[datetime, float]], total_nodes: int) -> str:
    """Nodes busy with broker jobs over time, against the cluster's node count."""
    chart = pygal.DateTimeLine(
        **_common(
            show_dots=False,
            fill=True,
            x_value_formatter=lambda d: d.strftime("%d %b %H:%M"),
            y_title="nodes",
            range=(0, max(total_nodes, 1)),
        )
    )
    chart.add("busy nodes", [(at, round(v, 2)) for at, v in points])
    if points:
        chart.add(
            "nodes in the cluster",
            [(points[0][0], total_nodes), (points[-1][0], total_nodes)],
            fill=False,
            stroke_style={"dasharray": "4,4", "width": 1.5},
        )
    return _svg(chart)


def billed_rate(points: Sequence[tuple[str, float]], rated_tflops: float) -> str:
    """Per day, the TFLOP/s per node that settled jobs were charged at, against the rating."""
    chart = pygal.Line(**_common(show_dots=True, dots_size=3, y_title="TFLOP/s per node"))
    chart.x_labels = [d for d, _ in points]
    chart.x_labels_major_every = max(1, len(points) // 10)
    chart.show_minor_x_labels = False
    chart.add("billed rate", [round(v / 1e6, 4) for _, v in points])
    chart.add("partition rating", [rated_tflops] * len(points), show_dots=False)
    return _svg(chart)


_VALIDATION_COLORS = {"validated": "#16a34a", "degraded": "#dc2626", "unvalidated": "#94a3b8"}
#: Above this many nodes the rates are drawn as a histogram, not one bar per node.
MAX_NODE_BARS = 64


def node_rates(rows: Sequence[tuple[str, float, str]]) -> str:
    """Each node's billing rate (TFLOP/s), coloured by validation; a histogram for many."""
    if len(rows) > MAX_NODE_BARS:
        return _rate_histogram(rows)
    colors = _VALIDATION_COLORS
    chart = pygal.Bar(**_common(show_legend=False, height=260, y_title="TFLOP/s"))
    chart.x_labels = [name for name, _, _ in rows]
    chart.add(
        "rate",
        [{"value": rate, "color": colors.get(v, "#64748b"), "label": v} for _, rate, v in rows],
    )
    return _svg(chart)


def _rate_histogram(rows: Sequence[tuple[str, float, str]]) -> str:
    """Nodes per rate bin (two significant digits), stacked by validation."""
    bins = sorted({float(f"{rate:.2g}") for _, rate, _ in rows})
    style = Style(**{**_STYLE.to_dict(), "colors": tuple(_VALIDATION_COLORS.values())})
    chart = pygal.StackedBar(**_common(style=style, height=260, y_title="nodes", x_title="TFLOP/s"))
    chart.x_labels = [f"{b:g}" for b in bins]
    for validation in _VALIDATION_COLORS:
        counts = dict.fromkeys(bins, 0)
        for _, rate, v in rows:
            if v == validation:
                counts[float(f"{rate:.2g}")] += 1
        chart.add(validation, [counts[b] for b in bins])
    return _svg(chart)


#: Above this many nodes the rate history draws the ones whose rate moved most.
MAX_RATE_LINES = 12


def rate_history(series: Sequence[RateSeries], now: datetime) -> str:
    """Each node's billing rate (TFLOP/s) over time, a step per measured version."""
    chart = pygal.DateTimeLine(
        **_common(
            show_dots=True,
            dots_size=2.5,
            x_value_formatter=lambda d: d.strftime("%d %b"),
            y_title="TFLOP/s per node",
            legend_at_bottom_columns=6,
        )
    )
    for s in series:
        steps: list[tuple[datetime, float]] = []
        for i, (at, rate) in enumerate(s.points):
            tflops = round(rate / 1e6, 4)
            if i:
                steps.append((at, steps[-1][1]))
            steps.append((at, tflops))
        if steps and steps[-1][0] < now:
            steps.append((now, steps[-1][1]))
        chart.add(s.node, steps)
    if not series:
        chart.add("no measured rate yet", [])
    return _svg(chart)
