"""Charts as inline SVG, drawn on the server by pygal from the reports' figures.

Server-side SVG needs no JavaScript and no asset to serve: the chart is in the page's
HTML the moment it renders, it prints, and it is escaped by pygal's XML writer (names
of enterprises and projects are user input). pygal always adds an inline
``<script>`` holding the config of its optional tooltip library, which we do not load
and which the pages' CSP would refuse; it is removed. Amounts are PFlop·h floats here,
for display only.
"""

from __future__ import annotations

import html
import re
import sys
from collections.abc import Sequence
from datetime import datetime, timedelta
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
    "lost": "#7c2d12",
}


#: A chart's drawing width: half-width charts (two to a row) are drawn at this size,
#: full-width ones at twice it, so that both scale to the same text size on the page.
HALF_WIDTH = 860


def _common(*, wide: bool = False, **extra: Any) -> dict[str, Any]:
    opts: dict[str, Any] = {
        "js": [],
        "disable_xml_declaration": True,
        "style": _STYLE,
        "width": 2 * HALF_WIDTH if wide else HALF_WIDTH,
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


def empty(message: str) -> str:
    """What a chart with nothing to draw shows instead: one line saying why (no axes)."""
    return f'<div class="empty-chart" data-empty="1">{html.escape(message)}</div>'


def _time_labels(start: datetime, end: datetime) -> tuple[list[datetime], str]:
    """Tick times across [start, end] at a step that suits the span, and their format:
    hours within two days, days within three weeks, weeks beyond; never one date twice."""
    span = end - start
    if span <= timedelta(days=2):
        step, fmt = timedelta(hours=6 if span > timedelta(hours=12) else 1), "%d %b %H:%M"
        first = start.replace(minute=0, second=0, microsecond=0)
    else:
        days = 1 if span <= timedelta(days=21) else 7 if span <= timedelta(days=120) else 30
        step, fmt = timedelta(days=days), "%d %b"
        first = start.replace(hour=0, minute=0, second=0, microsecond=0)
    labels, at = [], first
    while at <= end:
        if at >= start:
            labels.append(at)
        at += step
    return labels, fmt


def _padded(lo: float, hi: float, floor: float | None = 0.0) -> tuple[float, float]:
    """A y range with room above and below, so no line sits on the plot's edge."""
    pad = (hi - lo) * 0.15 or abs(hi) * 0.1 or 1.0
    low = lo - pad
    return (max(floor, low) if floor is not None else low, hi + pad)


def pfh(units: int) -> float:
    return units / UNITS_PER_PFH


def burn_down(bd: BurnDown, now: datetime) -> str:
    """Remaining and available budget over the period, and the projection to exhaustion."""
    start, end = bd.start.timestamp(), bd.end.timestamp()
    if not bd.points:
        return empty(f"No budget in {bd.period} yet: grant some to see it burn down.")
    top = max(max(p.remaining_units, p.available_units) for p in bd.points)
    labels, fmt = _time_labels(bd.start, bd.end)
    chart = pygal.DateTimeLine(
        **_common(
            wide=True,
            height=440,
            show_dots=False,
            xrange=(start, end),
            x_value_formatter=lambda d: d.strftime(fmt),
            y_title="PFlop·h",
            show_x_guides=False,
            fill=False,
            # The top tick above the highest value, so the grant's level has a label.
            range=(0, pfh(top) * 1.12 if top > 0 else 1.0),
            y_labels_major_count=6,
        )
    )
    chart.x_labels = labels
    # Available (= remaining − held) first, solid; remaining over it, dashed and wider,
    # so where nothing is held (the two equal) both stay visible.
    chart.add(
        "available: remaining − held",
        [(p.at, pfh(p.available_units)) for p in bd.points],
        stroke_style={"width": 2},
    )
    chart.add(
        "remaining: granted − charged",
        [(p.at, pfh(p.remaining_units)) for p in bd.points],
        stroke_style={"width": 3, "dasharray": "10,6"},
    )
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
    if not any(counts.values()):
        return empty("No jobs yet.")
    shown = [(s, n) for s, n in counts.items() if n or s in ("running", "pending", "completed")]
    top = max(n for _, n in shown)
    chart = pygal.Bar(
        **_common(show_legend=False, height=260, y_title="jobs", range=(0, top * 1.12 or 1))
    )
    chart.x_labels = [s for s, _ in shown]
    chart.add(
        "jobs",
        [{"value": n, "color": STATE_COLORS.get(s, "#64748b"), "label": s} for s, n in shown],
    )
    return _svg(chart)


def quota_bars(granted: int, held: int, charged: int) -> str:
    """Center-wide PFlop·h: granted against held, charged and still available."""
    if granted == 0 and held == 0 and charged == 0:
        return empty("No budget granted yet: grant some on an enterprise's page.")
    chart = pygal.HorizontalBar(**_common(height=220, x_title="PFlop·h", legend_at_bottom=True))
    chart.add("granted", [pfh(granted)])
    chart.add("charged", [pfh(charged)])
    chart.add("held", [pfh(held)])
    chart.add("available", [pfh(granted - held - charged)])
    return _svg(chart)


def usage_bars(labels: Sequence[str], charged: Sequence[int], held: Sequence[int]) -> str:
    """Stacked charged and held PFlop·h per label (top projects, top enterprises)."""
    if not any(charged) and not any(held):
        return empty("Nothing held or charged yet.")
    chart = pygal.StackedBar(**_common(height=280, y_title="PFlop·h", x_label_rotation=20))
    chart.x_labels = list(labels)
    chart.add("charged", [pfh(u) for u in charged])
    chart.add("held", [pfh(u) for u in held])
    return _svg(chart)


def _pct(value: float) -> str:
    """A percentage by its size: 42 %, 3.1 %, 0.052 % (a sliver is still a number)."""
    if value == 0:
        return "0 %"
    if value >= 10:
        return f"{value:.0f} %"
    if value >= 1:
        return f"{value:.1f} %"
    return f"{value:.2g} %"


def used_fraction_bars(
    labels: Sequence[str], fractions: Sequence[float], *, wide: bool = False
) -> str:
    """Share of each enterprise's grant already held or charged, in percent.

    The axis ends just past the largest share (at most 100 %), so that a few running
    jobs against a large grant still draw a bar; each bar prints its value.
    """
    if not labels:
        return empty("No enterprise yet.")
    if not any(f > 0 for f in fractions):
        return empty("Nothing held or charged yet: no enterprise has used its grant.")
    top = min(100.0, max(100 * f for f in fractions) * 1.15)
    chart = pygal.HorizontalBar(
        **_common(
            wide=wide,
            show_legend=False,
            height=max(180, 30 * len(labels) + 70),
            range=(0, top),
            print_values=True,
            print_values_position="top",
            value_formatter=_pct,
        )
    )
    chart.x_labels = list(labels)
    chart.add(
        "used %",
        [{"value": 100 * f, "color": "#dc2626" if f >= 0.9 else "#2563eb"} for f in fractions],
    )
    return _svg(chart)


def busy_nodes(points: Sequence[tuple[datetime, float]], total_nodes: int) -> str:
    """Nodes busy with broker jobs over time, against the cluster's node count."""
    if not points:
        return empty("No activity recorded yet.")
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
    if not points:
        return empty("No job settled here in the window yet.")
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
    if not rows:
        return empty("No nodes seen yet: the worker lists them when it refreshes the cluster.")
    if len(rows) > MAX_NODE_BARS:
        return _rate_histogram(rows)
    colors = _VALIDATION_COLORS
    chart = pygal.Bar(**_common(wide=True, show_legend=False, height=400, y_title="TFLOP/s"))
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
    chart = pygal.StackedBar(
        **_common(wide=True, style=style, height=400, y_title="nodes", x_title="TFLOP/s")
    )
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
    """Each node's billing rate (TFLOP/s) over time, a step per measured version.

    Nothing measured: a line saying so, not an empty frame. Otherwise the time axis runs
    from the first measurement to now with one label per hour, day or week (as the span
    asks), and the rate axis has room above and below the lines.
    """
    measured = [(at, rate) for s in series for at, rate in s.points]
    if not measured:
        return empty(
            "No measured rate yet: run `brokerctl nodes validate CLUSTER`; until then"
            " nodes bill at their partition's rating."
        )
    first = min(at for at, _ in measured)
    start = min(first, now - timedelta(hours=1))
    labels, fmt = _time_labels(start, now)
    values = [rate / 1e6 for _, rate in measured]
    margin = (now - start) * 0.03
    chart = pygal.DateTimeLine(
        **_common(
            wide=True,
            height=480,
            show_dots=True,
            dots_size=3,
            x_value_formatter=lambda d: d.strftime(fmt),
            y_title="TFLOP/s per node",
            legend_at_bottom_columns=6,
            range=_padded(min(values), max(values)),
            xrange=((start - margin).timestamp(), (now + margin).timestamp()),
        )
    )
    chart.x_labels = labels
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
    return _svg(chart)
