"""Stage versus deploy cost: every teacher and student export in one table, its Pareto front, per-stage gains.

Reads the rows ``benchmark_model`` wrote to ``RUN/report/report.json``. A point is Pareto-optimal
when no other point is at least as good on both axes (BLEU higher or equal, p50 latency lower or
equal) and strictly better on one. For each EKD stage the report states what it bought (BLEU
over the previous stage, same variant) and what it costs to deploy (size on disk, latency).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from pathlib import Path

from ekd_edge import markdown
from ekd_edge.errors import ReportError


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def pareto_front(rows: list[dict], x: str = "latency_p50_ms", y: str = "bleu") -> list[int]:
    """Indices of the rows no other row dominates (lower ``x`` and higher ``y`` are better).

    Rows missing either value take no part. Exact ties are all kept: neither dominates the other.
    """
    points = [(i, r[x], r[y]) for i, r in enumerate(rows) if _finite(r.get(x)) and _finite(r.get(y))]
    front = []
    for i, xi, yi in points:
        dominated = any(xj <= xi and yj >= yi and (xj < xi or yj > yi) for j, xj, yj in points if j != i)
        if not dominated:
            front.append(i)
    return front


def _stage_number(row: dict):
    stage = row.get("stage")
    try:
        return int(stage)
    except (TypeError, ValueError):
        return None


def stage_costs(rows: list[dict]) -> list[dict]:
    """Per EKD stage and variant: BLEU, its gain over the previous stage, and the deploy cost.

    ``bleu_gain`` is against the previous stage's student in the same variant (stage 1 has none);
    ``size_mb`` / ``latency_p50_ms`` are what deploying that model costs, with their change
    against the previous stage.
    """
    students = {}
    for row in rows:
        stage = _stage_number(row)
        if row.get("role") == "student" and stage is not None:
            students[(stage, str(row.get("variant")))] = row
    out = []
    for (stage, variant), row in sorted(students.items()):
        prev = students.get((stage - 1, variant))
        entry = {"stage": stage, "variant": variant, "name": row.get("name"), "bleu": row.get("bleu"),
                 "size_mb": row.get("size_mb"), "latency_p50_ms": row.get("latency_p50_ms"),
                 "bleu_gain": None, "size_change_mb": None, "latency_ratio": None}
        if prev is not None:
            if _finite(row.get("bleu")) and _finite(prev.get("bleu")):
                entry["bleu_gain"] = row["bleu"] - prev["bleu"]
            if _finite(row.get("size_mb")) and _finite(prev.get("size_mb")):
                entry["size_change_mb"] = row["size_mb"] - prev["size_mb"]
            if _finite(row.get("latency_p50_ms")) and _finite(prev.get("latency_p50_ms")) and prev["latency_p50_ms"] > 0:
                entry["latency_ratio"] = row["latency_p50_ms"] / prev["latency_p50_ms"]
        out.append(entry)
    return out


def model_hash(path) -> str | None:
    """Short sha256 of what a model row loads: the bundle manifest (it holds every file's hash) or the weights."""
    if not path:
        return None
    path = Path(path)
    for candidate in (path / "manifest.json", path / "model.safetensors", path / "model.bin"):
        if candidate.is_file():
            digest = hashlib.sha256()
            with open(candidate, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
            return digest.hexdigest()[:16]
    return None


def load_run_report(run_dir) -> dict:
    """``RUN/report/report.json`` (or a report.json given directly), checked for rows."""
    path = Path(run_dir)
    report = path if path.is_file() else path / "report" / "report.json"
    if not report.is_file():
        raise ReportError(f"{report}: no benchmark report; run `ekd-edge demo` or `ekd-edge bench` first")
    try:
        payload = json.loads(report.read_text())
    except ValueError as exc:
        raise ReportError(f"{report}: line {getattr(exc, 'lineno', '?')}: not valid JSON") from None
    rows = payload.get("rows") if isinstance(payload, dict) else None
    if not isinstance(rows, list) or not rows:
        raise ReportError(f"{report}: holds no benchmark rows")
    return payload


def build_report(payload: dict) -> dict:
    """The stage-versus-cost report: rows (with Pareto flag and model hash), front, stages, signature."""
    rows = [dict(r) for r in payload["rows"]]
    front = set(pareto_front(rows))
    for i, row in enumerate(rows):
        row["pareto"] = i in front
        row.setdefault("model_sha256", model_hash(row.get("path")))
    signature = dict(payload.get("signature") or {})
    signature["models"] = {f"{r.get('name')} ({r.get('variant')})": r.get("model_sha256") for r in rows}
    return {"title": payload.get("title") or "ekd-edge report", "signature": signature, "rows": rows,
            "pareto": [f"{rows[i].get('name')} ({rows[i].get('variant')})" for i in sorted(front)],
            "stages": stage_costs(rows)}


_COLOURS = {"teacher": "#c0392b", "student": "#1f6fb4"}


def render_pareto_png(report: dict) -> bytes:
    """BLEU against p50 latency; marker area grows with size on disk; Pareto points ringed and joined."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    rows = [r for r in report["rows"] if _finite(r.get("latency_p50_ms")) and _finite(r.get("bleu"))]
    fig = Figure(figsize=(10, 6.5), dpi=130)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    sizes = [r.get("size_mb") or 0.0 for r in rows]
    biggest = max(sizes) if sizes and max(sizes) > 0 else 1.0
    for row, size in zip(rows, sizes):
        area = 40 + 900 * size / biggest
        ax.scatter(row["latency_p50_ms"], row["bleu"], s=area, alpha=0.75,
                   color=_COLOURS.get(row.get("role"), "#555555"),
                   edgecolors="black" if row.get("pareto") else "white", linewidths=2.2 if row.get("pareto") else 0.8,
                   zorder=3)
    front = sorted((r for r in rows if r.get("pareto")), key=lambda r: r["latency_p50_ms"])
    if len(front) > 1:
        ax.step([r["latency_p50_ms"] for r in front], [r["bleu"] for r in front], where="post", color="black",
                linestyle="--", linewidth=1, zorder=2)
    latencies = [r["latency_p50_ms"] for r in rows]
    if latencies and min(latencies) > 0 and max(latencies) / min(latencies) >= 10:
        ax.set_xscale("log")
    ax.set_xlabel("p50 latency per sentence, ms (batch 1, greedy)")
    ax.set_ylabel("BLEU (sacrebleu)")
    ax.margins(x=0.25, y=0.15)
    ax.grid(True, which="both", alpha=0.3)
    handles = [Line2D([], [], linestyle="", marker="o", markersize=9, color=c, label=role)
               for role, c in _COLOURS.items() if any(r.get("role") == role for r in rows)]
    handles.append(Line2D([], [], linestyle="--", marker="o", markersize=9, color="black", markerfacecolor="white",
                          markeredgewidth=2, label="Pareto-optimal"))
    ax.legend(handles=handles, loc="best", fontsize=9, title="marker area ∝ size on disk", title_fontsize=8)
    sig = report.get("signature", {})
    fig.suptitle(report.get("title", ""), fontsize=13)
    ax.set_title(f"{sig.get('cpu', '')} · threads: {sig.get('threads', '?')} · data: {sig.get('data', '?')}",
                 fontsize=9, color="#444444")
    fig.tight_layout()
    # labels are placed against the final layout, moved around their point to avoid each other
    from ekd_edge.bench.report import place_labels

    place_labels(fig, ax, rows)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def _fmt(value, digits=2) -> str:
    return markdown.number(value, f".{digits}f") if _finite(value) else markdown.MISSING


def table_rows(report: dict) -> tuple[list[str], list[list[str]]]:
    header = ["Pareto", "Name", "Role", "Stage", "Variant", "Engine", "Size MB", "BLEU", "chrF", "p50 ms", "p90 ms",
              "tokens/s", "Peak RSS MB"]
    body = []
    for r in report["rows"]:
        body.append(["★" if r.get("pareto") else "", str(r.get("name")), str(r.get("role")),
                     "–" if r.get("stage") is None else str(r.get("stage")), str(r.get("variant")),
                     str(r.get("engine")), _fmt(r.get("size_mb")), _fmt(r.get("bleu")), _fmt(r.get("chrf")),
                     _fmt(r.get("latency_p50_ms"), 1), _fmt(r.get("latency_p90_ms"), 1),
                     _fmt(r.get("tokens_per_s"), 0), _fmt(r.get("peak_rss_mb"), 0)])
    return header, body


def stage_lines(report: dict) -> list[str]:
    lines = []
    for s in report["stages"]:
        gain = "first stage" if s["bleu_gain"] is None else f"{s['bleu_gain']:+.2f} BLEU over stage {s['stage'] - 1}"
        cost = f"{_fmt(s['size_mb'])} MB on disk, p50 {_fmt(s['latency_p50_ms'], 1)} ms"
        if s["latency_ratio"] is not None:
            cost += f" ({s['latency_ratio']:.2f}× the previous stage's latency, size {s['size_change_mb']:+.2f} MB)"
        lines.append(f"Stage {s['stage']} ({s['variant']}): BLEU {_fmt(s['bleu'])}, {gain}; deploy cost {cost}.")
    return lines


def render_markdown(report: dict, png_name: str = "pareto.png") -> str:
    from ekd_edge.bench.report import signature_markdown

    header, body = table_rows(report)
    # the Pareto mark is kept as it is: an empty cell means "not on the front", not "missing"
    lines = [f"# {report['title']}: stage versus deploy cost", "",
             markdown.table(header, body, align="clllll" + "r" * (len(header) - 6), formats={0: str}),
             f"★ Pareto-optimal (no other model has higher-or-equal BLEU at lower-or-equal p50 latency): "
             f"{', '.join(report['pareto']) or 'none'}.", "", f"![BLEU against p50 latency]({png_name})", "",
             "## What each EKD stage buys and costs", ""]
    lines += [f"- {line}" for line in stage_lines(report)] or ["- no student stages in this run"]
    lines += ["", signature_markdown(report["signature"])]
    return "\n".join(lines)


def write_stage_report(run_dir, out_dir=None) -> dict:
    """Write pareto.json, pareto.md, pareto.png and pareto.html for RUN (default: RUN/report/)."""
    from ekd_edge.bench.html import render_html
    from ekd_edge.bench.report import REPORT_FORMAT, check_report_destination, json_safe
    from ekd_edge.files import write_bytes_atomic, write_json_atomic

    report = build_report(load_run_report(run_dir))
    source = Path(run_dir)
    out = Path(out_dir) if out_dir else (source.parent if source.is_file() else source / "report")
    paths = {"json": out / "pareto.json", "md": out / "pareto.md", "png": out / "pareto.png", "html": out / "pareto.html"}
    check_report_destination(out, list(paths.values()), paths["json"])
    png = render_pareto_png(report)
    write_json_atomic(paths["json"], json_safe({"format": REPORT_FORMAT, **report}))
    write_bytes_atomic(paths["png"], png)
    write_bytes_atomic(paths["md"], render_markdown(report, paths["png"].name).encode())
    write_bytes_atomic(paths["html"], render_html(report, png, *table_rows(report), stage_lines(report)).encode())
    return {"paths": paths, "report": report}
