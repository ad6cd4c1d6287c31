"""The pieces of zspace's self-contained HTML pages: style, a few lines of script, tables whose
numbers carry their unit, direction and meaning (from ``evaluation.glossary``), inline SVG
charts with values on hover, and the page shell with its table of contents.

Nothing is fetched: images are PNG data URIs, charts are inline SVG, the script is inline.
"""
from __future__ import annotations

import base64
import html
import math
import re
from pathlib import Path

from ..evaluation.glossary import arrow, lookup

CSS = """body{font-family:system-ui,sans-serif;max-width:1150px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.5em}h2{font-size:1.15em;border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
img{max-width:100%;border:1px solid #eee}table{border-collapse:collapse;font-size:.9em;margin:.4em 0}
td,th{border:1px solid #ddd;padding:.25em .6em;text-align:left;vertical-align:top}td.n{text-align:right;
font-variant-numeric:tabular-nums}th{white-space:nowrap}table.sortable th{cursor:pointer;user-select:none;background:#f6f6f6}
table.sortable th:after{content:" \\2195";color:#bbb}table.sortable th.asc:after{content:" \\2191";color:#222}
table.sortable th.desc:after{content:" \\2193";color:#222}pre{background:#f6f6f6;padding:1em;overflow:auto;
font-size:.8em}.note{color:#555;font-size:.92em}.warn{background:#fff4d6;border-left:4px solid #e0a800;
padding:.5em .8em;margin:.6em 0}nav.toc{background:#f8f8f8;border:1px solid #e4e4e4;padding:.4em 1em;
display:inline-block}nav.toc ol{margin:.3em 0;padding-left:1.4em}.meaning{color:#555;font-size:.88em}
.better{white-space:nowrap}.charts{display:flex;flex-wrap:wrap;gap:1em}.charts figure{margin:0}
figcaption{font-size:.85em;color:#444;text-align:center}svg .pt:hover{r:5}.cols{display:flex;gap:1em;
flex-wrap:wrap;align-items:flex-start}.cols>div{flex:1;min-width:260px}td.best{font-weight:bold}"""

# Sortable tables: a click on a header sorts the rows by that column (numbers by their
# data-v value, text otherwise); a second click reverses.
JS = """document.querySelectorAll("table.sortable").forEach(function (t) {
  t.querySelectorAll("th").forEach(function (th, col) {
    th.addEventListener("click", function () {
      var asc = !th.classList.contains("asc");
      t.querySelectorAll("th").forEach(function (h) { h.classList.remove("asc", "desc"); });
      th.classList.add(asc ? "asc" : "desc");
      var body = t.tBodies[0], rows = Array.prototype.slice.call(body.rows);
      function key(r) {
        var c = r.cells[col]; if (!c) return "";
        var v = c.getAttribute("data-v");
        return v !== null && v !== "" && !isNaN(+v) ? +v : c.textContent.trim().toLowerCase();
      }
      rows.sort(function (a, b) {
        var x = key(a), y = key(b);
        if (typeof x !== typeof y) { x = String(x); y = String(y); }
        return (x < y ? -1 : x > y ? 1 : 0) * (asc ? 1 : -1);
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});"""

esc = html.escape


def slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-") or "section"


def fmt(v) -> str:
    if isinstance(v, bool) or v is None:
        return "—" if v is None else str(v)
    if isinstance(v, float):
        return f"{v:.4g}" if math.isfinite(v) else str(v)
    return str(v)


def num_cell(v, title: str = "") -> str:
    """A table cell: numbers right-aligned, sortable by value, their full precision on hover."""
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        full = repr(float(v)) if isinstance(v, float) else str(v)
        tip = esc(f"{full}{' — ' + title if title else ''}")
        return f'<td class="n" data-v="{full}" title="{tip}">{esc(fmt(v))}</td>'
    return f"<td>{esc(fmt(v))}</td>"


def table(headers: list[str], rows: list[list[str]], sortable: bool = True, cls: str = "") -> str:
    """Rows of ready-made ``<td>`` cells (see num_cell) under plain-text headers."""
    classes = " ".join(c for c in ("sortable" if sortable else "", cls) if c)
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(r) + "</tr>" for r in rows)
    return f'<table class="{classes}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def measure_label(key: str) -> tuple[str, str, str, str]:
    """(name, unit, better, meaning) of a metric key for display; unknown keys show as named."""
    split, m = lookup(key)
    if m is None:
        return key, "", "", ""
    name = f"{m.name} ({split})" if split else m.name
    better = {"higher": "↑ higher", "lower": "↓ lower"}.get(m.better, "")
    return name, m.unit, better, m.meaning


def measures_table(values: dict[str, object], skip=()) -> str:
    """One row per measure: name, value, unit, which direction is better, what it means."""
    rows = []
    for key, v in values.items():
        if key in skip:
            continue
        name, unit, better, meaning = measure_label(key)
        rows.append([f'<td title="{esc(key)}">{esc(name)}</td>', num_cell(v, f"{key} ({unit})" if unit else key),
                     f"<td>{esc(unit)}</td>", f'<td class="better">{esc(better)}</td>',
                     f'<td class="meaning">{esc(meaning)}</td>'])
    return table(["measure", "value", "unit", "better", "meaning"], rows)


def img(path: Path, alt: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img alt="{esc(alt)}" src="data:image/png;base64,{data}">'


def warning(text: str) -> str:
    return f'<p class="warn" role="alert">⚠ {esc(text)}</p>'


def note(text: str) -> str:
    return f'<p class="note">{esc(text)}</p>'


def line_chart(title: str, series: list[tuple[str, list[tuple[float, float]]]], xlabel: str = "epoch",
               unit: str = "", width: int = 300, height: int = 190) -> str:
    """A small inline SVG chart: one polyline per (label, points); every point shows its value on
    hover (an SVG <title>)."""
    colours = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")
    pts = [p for _, s in series for p in s if all(math.isfinite(c) for c in p)]
    if not pts:
        return ""
    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
    y0, y1 = min(p[1] for p in pts), max(p[1] for p in pts)
    x1 = x1 if x1 > x0 else x0 + 1
    if y1 <= y0:                      # a flat line: centred in a band around its value
        pad = abs(y0) * 0.05 or 1.0
        y0, y1 = y0 - pad, y1 + pad
    left, right, top, bottom = 58, 8, 8, 30

    def sx(x):
        return left + (x - x0) / (x1 - x0) * (width - left - right)

    def sy(y):
        return top + (y1 - y) / (y1 - y0) * (height - top - bottom)
    parts = [f'<rect x="{left}" y="{top}" width="{width - left - right}" height="{height - top - bottom}" '
             'fill="none" stroke="#ccc"/>']
    for v, anchor in ((y0, "end"), (y1, "end")):
        parts.append(f'<text x="{left - 4}" y="{sy(v) + 4:.1f}" font-size="10" text-anchor="{anchor}">{fmt(v)}</text>')
    for v in (x0, x1):
        parts.append(f'<text x="{sx(v):.1f}" y="{height - bottom + 13}" font-size="10" '
                     f'text-anchor="middle">{fmt(v)}</text>')
    parts.append(f'<text x="{(left + width - right) / 2}" y="{height - 3}" font-size="10" '
                 f'text-anchor="middle">{esc(xlabel)}</text>')
    legend = []
    for i, (label, s) in enumerate(series):
        c = colours[i % len(colours)]
        good = [p for p in s if all(math.isfinite(q) for q in p)]
        if not good:
            continue
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in good)
        parts.append(f'<polyline fill="none" stroke="{c}" stroke-width="1.5" points="{path}"/>')
        for x, y in good:
            parts.append(f'<circle class="pt" cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="{c}">'
                         f"<title>{esc(label)}, {esc(xlabel)} {fmt(x)}: {fmt(y)} {esc(unit)}</title></circle>")
        legend.append(f'<span style="color:{c}">■</span> {esc(label)}')
    return (f'<figure><svg width="{width}" height="{height}" '
            f'role="img" aria-label="{esc(title)}">{"".join(parts)}</svg>'
            f'<figcaption>{esc(title)}{" (" + esc(unit) + ")" if unit else ""}<br>{" ".join(legend)}'
            "</figcaption></figure>")


def history_charts(histories: list[tuple[str, list[dict]]], splits=("train", "test")) -> str:
    """One chart per loss term over the epochs, a line per (label, split)."""
    terms = sorted({k.split("_", 1)[1] for _, h in histories for row in h for k in row
                    if k.startswith(tuple(f"{s}_" for s in splits))})
    charts = []
    for term in terms:
        series = []
        for label, h in histories:
            for split in splits:
                pts = [(float(r["epoch"]), float(r[f"{split}_{term}"])) for r in h
                       if isinstance(r.get(f"{split}_{term}"), (int, float))]
                if pts:
                    series.append((f"{label} {split}".strip(), pts))
        _, m = lookup(f"train_{term}")
        title = f"{m.name if m else term} {arrow(m.better) if m else ''}".strip()
        charts.append(line_chart(title, series, unit=m.unit if m else ""))
    return '<div class="charts">' + "".join(charts) + "</div>" if charts else ""


def page(title: str, sections: list[tuple[str, str]], header: str = "") -> str:
    """The whole document: title, header, a table of contents of the sections, the sections."""
    toc = "".join(f'<li><a href="#{slug(t)}">{esc(t)}</a></li>' for t, _ in sections)
    body = "\n".join(f'<section><h2 id="{slug(t)}">{esc(t)}</h2>\n{content}</section>' for t, content in sections)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
            f"<style>{CSS}</style></head><body>\n<h1>{esc(title)}</h1>\n{header}\n"
            f'<nav class="toc" aria-label="Contents"><strong>Contents</strong><ol>{toc}</ol></nav>\n{body}\n'
            f"<script>{JS}</script>\n</body></html>\n")
