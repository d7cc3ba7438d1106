"""The report's chart: accuracy against latency, one PNG per latency column, the file size as the
marker's area, the Pareto front (no other model is both faster and more accurate) drawn and outlined.

matplotlib's object API with its Agg canvas: no pyplot state, no display, no GUI back end.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

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
    figure = Figure(figsize=(7.5, 4.8), dpi=100, layout="constrained")
    axes = figure.subplots()
    on_front = {p.model for p in front}
    for index, p in enumerate(sorted(points, key=lambda p: p.latency_ms)):
        axes.scatter(
            p.latency_ms,
            p.accuracy,
            s=40 + 25 * p.size_mb,  # marker area grows with the file size
            alpha=0.9 if p.model in on_front else 0.45,
            edgecolors="black" if p.model in on_front else "none",
            linewidths=1.5,
            zorder=3,
        )
        label = f"{p.model} ({p.size_mb:.1f} MB{', ' + p.note if p.note else ''})"
        # Labels alternate above and below their marker, so neighbours with equal accuracy stay legible.
        offset = (8, 6) if index % 2 == 0 else (8, -14)
        axes.annotate(
            label, (p.latency_ms, p.accuracy), textcoords="offset points", xytext=offset, fontsize=8
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
        axes.legend(loc="lower right", fontsize=8)
    axes.set_xlabel("invoke latency p50 (ms)")
    axes.set_ylabel("mAP@[.5:.95]")
    top = max((p.accuracy for p in points), default=1.0)
    axes.set_ylim(0, min(1.05, max(0.1, top * 1.2)))
    right = max((p.latency_ms for p in points), default=1.0)
    axes.set_xlim(0, right * 1.35)
    axes.set_title(title, fontsize=9)
    axes.grid(alpha=0.3)
    figure.savefig(path, format="png")
