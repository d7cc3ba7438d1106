"""The model report: one static HTML page (inline CSS, no script, no external asset) and its PNG charts
beside it, plus report.json with the same figures. Every value that reaches the page is HTML-escaped.

The talk's table: model, quantisation, file size, mAP, AR@100 (recall@1/5 for embedders) and the
latency per device kind and back end; then one accuracy-against-latency chart per latency column.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from html import escape
from pathlib import Path
from typing import Any

from device.modeleval.charts import Point, accuracy_latency_png, pareto
from device.modeleval.latency import Column, Latency, LatencyTable
from device.vision.manifest import ModelEntry

MB = 1e6


@dataclass
class Row:
    model: str
    kind: str
    quantization: str
    size_bytes: int
    map: float | None = None
    map50: float | None = None
    ar100: float | None = None
    recall1: float | None = None
    recall5: float | None = None
    scope: str = ""
    latency: dict[Column, Latency] = field(default_factory=dict)

    @property
    def person_only(self) -> bool:
        return self.scope.startswith("restricted")


@dataclass
class Meta:
    """What the page says around the table."""

    title: str
    dataset: str
    notes: list[str]  # shown in the warning box: smoke set, latency source
    commands: list[str]  # how to reproduce


def quantization(entry: ModelEntry) -> str:
    """The manifest's quantisation field; for entries written before it existed, the input type says it
    (the int8 models take uint8 or int8 input; the float ones float32)."""
    declared = getattr(entry, "quantization", None)
    if isinstance(declared, str) and declared:
        return declared
    return "float32" if entry.input.dtype == "float32" else "int8"


def make_row(entry: ModelEntry, evaluated: dict[str, Any] | None, latency: LatencyTable) -> Row:
    row = Row(entry.id, entry.kind, quantization(entry), entry.file.stat().st_size)
    if evaluated is not None and entry.kind == "detector":
        row.map, row.map50, row.ar100 = evaluated["map"], evaluated["map50"], evaluated["ar100"]
        row.scope = evaluated["scope"]
    elif evaluated is not None:
        row.recall1, row.recall5 = evaluated["recall"]["@1"], evaluated["recall"]["@5"]
        row.scope = f"{evaluated['images']} images in {evaluated['classes']} classes"
    row.latency = {c: models[entry.id] for c, models in latency.items() if entry.id in models}
    return row


def write_report(out: Path, rows: list[Row], columns: list[Column], meta: Meta) -> Path:
    """index.html, chart-N.png and report.json into `out`; returns the page's path."""
    out.mkdir(parents=True, exist_ok=True)
    charts = []
    for number, column in enumerate(columns, start=1):
        points = _points(rows, column)
        if not points:
            continue
        name = f"chart-{number}.png"
        accuracy_latency_png(points, column.title(), out / name)
        front = ", ".join(p.model for p in pareto(points))
        charts.append((name, f"mAP against latency on {column.title()}. Pareto front: {front}."))
    page = out / "index.html"
    page.write_text(render(rows, columns, charts, meta), encoding="utf-8")
    (out / "report.json").write_text(
        json.dumps(_json(rows, columns, meta), indent=2) + "\n", encoding="utf-8"
    )
    return page


def _points(rows: list[Row], column: Column) -> list[Point]:
    return [
        Point(
            r.model,
            r.latency[column].p50_ms,
            r.map,
            r.size_bytes / MB,
            "person only" if r.person_only else "",
        )
        for r in rows
        if r.map is not None and column in r.latency
    ]


_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:78rem;padding:0 1rem;color:#1d232a}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem}
table{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums}
th,td{border:1px solid #c9d0d6;padding:.35rem .5rem;text-align:right;vertical-align:top}
th{background:#eef1f4}td.l,th.l{text-align:left}td.na{color:#8a949c;text-align:center}
.note{background:#fff6dd;border:1px solid #e5c56d;padding:.6rem .9rem;margin:1rem 0}
figure{margin:1.5rem 0}img{max-width:100%;border:1px solid #c9d0d6}
code,pre{background:#f4f6f8;padding:.1rem .3rem}pre{padding:.6rem;overflow-x:auto}
small{color:#5b6670}
"""


def render(rows: list[Row], columns: list[Column], charts: list[tuple[str, str]], meta: Meta) -> str:
    notes = "".join(f"<p>{escape(n)}</p>" for n in meta.notes)
    figures = (
        "".join(
            f'<figure><img src="{escape(name)}" alt="{escape(caption)}">'
            f"<figcaption>{escape(caption)}</figcaption></figure>"
            for name, caption in charts
        )
        or "<p>No chart: no detector has both an mAP and a latency figure.</p>"
    )
    commands = escape("\n".join(meta.commands))
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(meta.title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{escape(meta.title)}</h1><p>Dataset: <code>{escape(meta.dataset)}</code></p>"
        f'<div class="note">{notes}</div>'
        f"<h2>Models</h2>{_table(rows, columns)}"
        f"<h2>Accuracy against latency</h2><p><small>Marker area: file size. Outlined: on the Pareto "
        "front (no other model is both faster and more accurate). Restricted scopes (person only) are "
        f"not comparable with all-category mAP.</small></p>{figures}"
        f"<h2>Reproduce</h2><pre>{commands}</pre></body></html>\n"
    )


def _table(rows: list[Row], columns: list[Column]) -> str:
    heads = ["model", "kind", "quantisation", "file size", "mAP@[.5:.95]", "mAP@.5", "AR@100", "R@1", "R@5"]
    head = "".join(f'<th class="{"l" if i < 3 else ""}">{escape(h)}</th>' for i, h in enumerate(heads))
    head += "".join(f"<th>{escape(c.title())}<br><small>p50 / p90 ms</small></th>" for c in columns)
    head += '<th class="l">scope</th>'
    body = []
    for r in rows:
        cells = [f'<td class="l">{escape(v)}</td>' for v in (r.model, r.kind, r.quantization)]
        cells.append(f"<td>{r.size_bytes / MB:.1f} MB</td>")
        cells += [_num(v) for v in (r.map, r.map50, r.ar100, r.recall1, r.recall5)]
        cells += [_latency(r.latency.get(c)) for c in columns]
        cells.append(f'<td class="l">{escape(r.scope)}</td>')
        body.append(f'<tr data-model="{escape(r.model)}">{"".join(cells)}</tr>')
    return f'<table id="models"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def _num(value: float | None) -> str:
    return '<td class="na">—</td>' if value is None else f"<td>{value:.3f}</td>"


def _latency(value: Latency | None) -> str:
    if value is None:
        return '<td class="na">—</td>'
    devices = f"<br><small>{value.devices} devices</small>" if value.devices > 1 else ""
    return f"<td>{value.p50_ms:.2f} / {value.p90_ms:.2f}{devices}</td>"


def _json(rows: list[Row], columns: list[Column], meta: Meta) -> dict[str, Any]:
    return {
        "meta": asdict(meta),
        "columns": [{**asdict(c), "title": c.title()} for c in columns],
        "rows": [
            {
                **{f.name: getattr(r, f.name) for f in fields(r) if f.name != "latency"},
                "latency": {c.title(): asdict(v) for c, v in r.latency.items()},
            }
            for r in rows
        ],
    }
