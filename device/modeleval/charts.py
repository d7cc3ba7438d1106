"""The report's chart: accuracy against latency, one PNG per latency column, the file size as the
marker's area, the Pareto front (no other model is both faster and more accurate) drawn and outlined.

matplotlib's object API with its Agg canvas: no pyplot state, no display, no GUI back end.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from device.modeleval.detection import ExtraMissingError


@dataclass(frozen=True)
class Point:
    model: str
    latency_ms: float
    accuracy: float
    size_mb: float
    note: str = ""  # e.g. "person only": said beside the name, so unlike scopes are not mistaken


def pareto(points: list[Point]) -> list[Point]:
    """The points no other point beats on both axes (lower latency, higher accuracy), fastest first."""
    front: list[Point] = []
    for p in sorted(points, key=lambda p: (p.latency_ms, -p.accuracy)):
        if not front or p.accuracy > front[-1].accuracy:
            front.append(p)
    return front


def accuracy_latency_png(points: list[Point], title: str, path: Path) -> None:
    try:
        from matplotlib.figure import Figure  # noqa: PLC0415 - the optional `models` extra
    except ImportError:
        raise ExtraMissingError(
            "matplotlib is not installed: `pip install -e '.[models]'` (make install does)"
        ) from None
    front = pareto(points)
    on_front = {p.model for p in front}
    figure = Figure(figsize=(10, 5), dpi=100, layout="constrained")
    axes = figure.subplots()
    ordered = sorted(points, key=lambda p: (p.latency_ms, -p.accuracy))
    for number, p in enumerate(ordered, start=1):
        axes.scatter(
            p.latency_ms,
            p.accuracy,
            s=40 + 25 * p.size_mb,  # marker area grows with the file size
            alpha=0.9 if p.model in on_front else 0.45,
            edgecolors="black" if p.model in on_front else "none",
            linewidths=1.5,
            zorder=3,
            label=f"{number}  {p.model} ({p.size_mb:.1f} MB{', ' + p.note if p.note else ''})",
        )
        # A number beside the marker and the name in the legend: names beside markers overlap as soon as
        # two models have the same accuracy (a model and its quantised variant often do).
        axes.annotate(
            str(number), (p.latency_ms, p.accuracy), textcoords="offset points", xytext=(7, 5), fontsize=9
        )
    if len(front) > 1:
        axes.step(
            [p.latency_ms for p in front],
            [p.accuracy for p in front],
            where="post",
            linestyle="--",
            color="black",
            linewidth=1,
            label="Pareto front",
            zorder=2,
        )
    _style(axes, points, title)
    figure.savefig(path, format="png")


def _style(axes: Any, points: list[Point], title: str) -> None:
    """Legend beside the plot, log latency axis, limits with room for the markers."""
    legend = axes.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False)
    for handle in legend.legend_handles:
        if hasattr(handle, "set_sizes"):  # the scatter markers, not the front's line
            handle.set_sizes([40])  # the legend names models; the plot shows their sizes
    # Latencies span two orders of magnitude between an int8 SSD and a float CenterNet.
    axes.set_xscale("log")
    axes.set_xlabel("invoke latency p50 (ms, log scale)")
    axes.set_ylabel("mAP@[.5:.95]")
    top = max((p.accuracy for p in points), default=1.0)
    axes.set_ylim(0, min(1.05, max(0.1, top * 1.15)))
    low = min((p.latency_ms for p in points), default=1.0)
    high = max((p.latency_ms for p in points), default=1.0)
    axes.set_xlim(low / 1.6, high * 1.6)
    axes.set_title(title, fontsize=9)
    axes.grid(alpha=0.3, which="both")
