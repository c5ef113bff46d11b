"""The stage-versus-cost report as one self-contained HTML page: the plot is embedded, nothing is fetched."""

from __future__ import annotations

import base64
import html
import json

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.pareto { background: #eef6ee; font-weight: 600; }
img { max-width: 100%; }
dl { font-size: 0.85em; } dt { font-weight: 600; } dd { margin: 0 0 0.4em 1em; font-family: monospace; }
"""


def render_html(report: dict, png: bytes, header: list[str], body: list[list[str]], stage_lines: list[str]) -> str:
    """The page for ``report``: its table (``header``, ``body``), stage lines and the embedded plot."""
    numeric = {i for i, h in enumerate(header) if h not in ("Pareto", "Name", "Role", "Variant", "Engine")}
    esc = html.escape
    rows_html = []
    for row, cells in zip(report["rows"], body):
        tds = "".join(f'<td class="num">{esc(c)}</td>' if i in numeric else f"<td>{esc(c)}</td>"
                      for i, c in enumerate(cells))
        rows_html.append(f'<tr class="pareto">{tds}</tr>' if row.get("pareto") else f"<tr>{tds}</tr>")
    signature = "".join(
        f"<dt>{esc(str(k))}</dt><dd>{esc(json.dumps(v, ensure_ascii=False) if isinstance(v, (dict, list)) else str(v))}</dd>"
        for k, v in report["signature"].items())
    image = base64.b64encode(png).decode("ascii")
    stages = "".join(f"<li>{esc(line)}</li>" for line in stage_lines) or "<li>no student stages</li>"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(report['title'])}</title><style>{_STYLE}</style></head>
<body>
<h1>{esc(report['title'])}: stage versus deploy cost</h1>
<img alt="BLEU against p50 latency; marker area is size on disk; Pareto-optimal points ringed" src="data:image/png;base64,{image}">
<h2>Models</h2>
<table><thead><tr>{''.join(f'<th>{esc(h)}</th>' for h in header)}</tr></thead>
<tbody>{''.join(rows_html)}</tbody></table>
<p>Highlighted (★): Pareto-optimal, no other model has higher-or-equal BLEU at lower-or-equal p50 latency.</p>
<h2>What each EKD stage buys and costs</h2><ul>{stages}</ul>
<h2>Signature</h2><dl>{signature}</dl>
</body></html>
"""
