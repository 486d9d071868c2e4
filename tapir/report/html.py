"""The page as one self-contained HTML file: the style, tables and inline
PNG figures."""

from __future__ import annotations

import base64
import html
from typing import Any

from tapir.report.pieces import Figure, Report, Table


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 auto;max-width:1100px;padding:1.5em;
color:#1d1d1f;line-height:1.4}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.8em}
h3{font-size:1em;margin:1.2em 0 .4em}.meta{color:#555;font-size:.9em}
nav a{margin-right:1em;font-size:.9em}p.intro{color:#333;max-width:60em}
p.note{background:#fff8e1;border-left:3px solid #f0b400;padding:.4em .7em;font-size:.9em}
figure{margin:1em 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.85em;color:#555}
table{border-collapse:collapse;font-size:.82em;margin:.3em 0 1em}
th,td{border:1px solid #ddd;padding:.25em .5em;text-align:left;vertical-align:top}
th{background:#f4f4f6}tbody tr:nth-child(even){background:#fafafa}
td{max-width:28em;overflow-wrap:anywhere}table.kv td:first-child{font-weight:600}
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _table_html(t: Table) -> str:
    out = [f"<h3>{_e(t.title)}</h3>"]
    if t.note:
        out.append(f'<p class="note">{_e(t.note)}</p>')
    if t.rows:
        cls = f' class="{_e(t.css)}"' if t.css else ""
        out.append(f"<table{cls}><thead><tr>" + "".join(f"<th>{_e(h)}</th>" for h in t.header) + "</tr></thead><tbody>")
        for row in t.rows:
            out.append("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>")
        out.append("</tbody></table>")
    return "\n".join(out)


def _figure_html(f: Figure) -> str:
    if f.png is None:
        return f'<p class="note">{_e(f.title)}: {_e(f.note or "no figure")}</p>'
    data = base64.b64encode(f.png).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{_e(f.title)}">'
            f"<figcaption>{_e(f.caption)}</figcaption></figure>")


def render_html(report: Report) -> str:
    run = report.run
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>tapir report: {_e(run['name'])} ({_e(run['id'])})</title>", f"<style>{CSS}</style>",
             "</head><body>",
             f"<h1>tapir run {_e(run['name'])}</h1>",
             f'<p class="meta">run {_e(run["id"])} · status {_e(run["status"])} · started {_e(run["created_at"])}'
             f' · updated {_e(run["updated_at"])} · tapir {_e(run.get("tapir_version"))} · report written '
             f"{_e(report.generated_at)}</p>",
             "<nav>" + "".join(f'<a href="#{_e(s.id)}">{_e(s.title)}</a>' for s in report.sections) + "</nav>"]
    for s in report.sections:
        parts.append(f'<section id="{_e(s.id)}"><h2>{_e(s.title)}</h2>')
        if s.intro:
            parts.append(f'<p class="intro">{_e(s.intro)}</p>')
        for note in s.notes:
            parts.append(f'<p class="note">{_e(note)}</p>')
        parts.extend(_figure_html(f) for f in s.figures)
        parts.extend(_table_html(t) for t in s.tables)
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts)
