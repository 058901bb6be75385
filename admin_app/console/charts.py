"""Charts drawn on the server as SVG geometry: bars per day, no script and nothing fetched."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date

WIDTH, HEIGHT = 600, 160
GAP_RATIO = 0.2


@dataclass(frozen=True)
class Bar:
    """One day's bar: where it is drawn and what its tooltip says."""

    x: float
    y: float
    width: float
    height: float
    label: str


@dataclass(frozen=True)
class BarChart:
    """A titled series of daily bars with its largest value and its first, middle and last dates."""

    title: str
    bars: tuple[Bar, ...]
    peak_text: str
    axis: tuple[tuple[float, str], ...]
    total_text: str
    width: int = WIDTH
    height: int = HEIGHT


def bar_chart(title: str, days: Sequence[date], values: Sequence[float], show: Callable[[float], str]) -> BarChart:
    """Bars for `values` (one per day in `days`), each labelled with `show(value)`."""
    peak = max(values, default=0) or 0
    slot = WIDTH / max(len(values), 1)
    width = slot * (1 - GAP_RATIO)
    bars = []
    for i, (day, value) in enumerate(zip(days, values, strict=True)):
        height = 0.0 if not peak else HEIGHT * float(value) / float(peak)
        if value and height < 1:
            height = 1.0  # a day with any usage stays visible
        bars.append(Bar(x=i * slot + (slot - width) / 2, y=HEIGHT - height, width=width, height=height,
                        label=f"{day.isoformat()}: {show(value)}"))
    marks = sorted({0, len(days) // 2, len(days) - 1}) if days else []
    axis = tuple((i * slot + slot / 2, days[i].strftime("%b %d")) for i in marks)
    return BarChart(title=title, bars=tuple(bars), peak_text=show(peak), axis=axis, total_text=show(sum(values)))
