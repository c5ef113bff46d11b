"""Benchmark reports: report.json (everything), report.md (for people), report.png (BLEU against latency).

Every file is written to a temporary file next to its destination and then renamed over it, so a
reader (or a crash) never sees half a report.
"""

from __future__ import annotations

import io
import itertools
import json
import math
from pathlib import Path

from ekd_edge import markdown
from ekd_edge.errors import EkdError
from ekd_edge.files import write_bytes_atomic, write_json_atomic

MARKERS = {"pytorch": "o", "fp32": "s", "int8": "^"}
_SPARE_MARKERS = ("D", "v", "P", "X", "*", "h")
ROLE_COLOURS = {"teacher": "#c0392b", "student": "#1f6fb4"}
_OTHER_COLOUR = "#555555"
# use a log latency axis once the slowest model is this many times slower than the fastest
LOG_X_SPREAD = 10.0
_MARKER_SIZE = 90


def _fmt_params(value) -> str:
    if value is None:
        return markdown.MISSING
    for limit, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if value >= limit:
            return f"{value / limit:.1f}{suffix}"
    return str(value)


def _fmt_adaptive(value) -> str:
    """Two decimals for small numbers (a 0.05 MB nano model), one for large ones."""
    return markdown.number(value, ".2f" if markdown.is_number(value) and abs(value) < 10 else ".1f")


def _fmt_fixed(digits: int):
    return lambda value: markdown.number(value, f".{digits}f")


def _fmt_text(value) -> str:
    return markdown.MISSING if value is None or value == "" else str(value)


# (header, row key, formatter, numeric?)
COLUMNS = (
    ("Name", "name", _fmt_text, False),
    ("Role", "role", _fmt_text, False),
    ("Stage", "stage", _fmt_text, False),
    ("Variant", "variant", _fmt_text, False),
    ("Params", "params", _fmt_params, True),
    ("Size MB", "size_mb", _fmt_adaptive, True),
    ("BLEU", "bleu", _fmt_fixed(2), True),
    ("chrF", "chrf", _fmt_fixed(2), True),
    ("p50 ms", "latency_p50_ms", _fmt_adaptive, True),
    ("p90 ms", "latency_p90_ms", _fmt_adaptive, True),
    ("tokens/s", "tokens_per_s", _fmt_fixed(1), True),
    ("Peak RSS MB", "peak_rss_mb", _fmt_fixed(0), True),
    ("App peak MB", "app_peak_rss_mb", _fmt_fixed(0), True),
    ("App model MB", "app_model_mb", _fmt_fixed(1), True),
)


def _cells(row: dict) -> list[str]:
    return [fmt(row.get(key)) for _, key, fmt, _ in COLUMNS]


def rich_table(rows: list[dict], title: str | None = None):
    """The report's table for the terminal."""
    from rich.table import Table

    table = Table(title=title)
    for header, _, _, numeric in COLUMNS:
        table.add_column(header, justify="right" if numeric else "left", no_wrap=numeric)
    for row in rows:
        table.add_row(*_cells(row))
    return table


def _md_table(rows: list[dict]) -> str:
    return markdown.table([h for h, _, _, _ in COLUMNS], [[row.get(key) for _, key, _, _ in COLUMNS] for row in rows],
                          align="".join("r" if numeric else "l" for _, _, _, numeric in COLUMNS),
                          formats={i: fmt for i, (_, _, fmt, _) in enumerate(COLUMNS)})


def _md_value(value) -> str:
    if isinstance(value, (dict, list)):
        return "`" + json.dumps(value, ensure_ascii=False) + "`"
    return str(value)


# what environment_signature() records: it goes to the provenance footer, the rest to "Run" sections
_ENVIRONMENT_KEYS = ("cpu", "cpu_flags", "logical_cores", "usable_cores", "threads", "os", "machine", "python",
                     "python_implementation", "packages", "measured_at")


def signature_markdown(signature: dict) -> str:
    """A report's signature: what the caller added (data, settings, model hashes) as "Run" sections,
    then the environment as the provenance footer, which ends the report."""
    sig = dict(signature)
    environment = {key: sig.pop(key) for key in _ENVIRONMENT_KEYS if key in sig}
    if not isinstance(environment.get("packages", {}), dict):
        sig["packages"] = environment.pop("packages")
    lines = []
    scalars = {k: v for k, v in sig.items() if not isinstance(v, dict)}
    if scalars:
        lines += ["## Run", ""] + [f"- {k}: {_md_value(v)}" for k, v in scalars.items()] + [""]
    for key, value in sig.items():
        items = [f"- {k}: {_md_value(v)}" for k, v in value.items() if v is not None] if isinstance(value, dict) else []
        if items:
            lines += [f"## {key.replace('_', ' ').capitalize()}", "", *items, ""]
    # a report records the machine it measured on, not the code: the footer is its environment
    return "\n".join(lines + [markdown.provenance_footer({"environment": environment}, heading="Environment")])


def _md_metric_signatures(rows: list[dict]) -> list[str]:
    lines = ["## Metric signatures (sacrebleu)", ""]
    for key, label in (("bleu_signature", "BLEU"), ("chrf_signature", "chrF")):
        distinct = sorted({row.get(key) for row in rows if row.get(key)})
        if len(distinct) == 1:
            lines.append(f"- {label}: `{distinct[0]}`")
        else:
            # differing signatures mean the scores are not comparable: show which row used which
            lines.append(f"- {label} (differs between rows, scores not directly comparable):")
            lines += [f"  - {markdown.escape(row.get('name'))}: `{row.get(key)}`" for row in rows]
    return lines


def render_markdown(rows: list[dict], signature: dict, title: str, sections=()) -> str:
    """The report's Markdown: the rows, each (heading, markdown) section, the metric signatures,
    then the run's signature ending in the provenance footer."""
    lines = [f"# {title}", "", _md_table(rows)]
    n = {row.get("n_sentences") for row in rows if row.get("n_sentences") is not None}
    timed = {row.get("latency_sentences") for row in rows if row.get("latency_sentences") is not None}
    lines += [
        f"BLEU/chrF: greedy decoding on {', '.join(map(str, sorted(n))) or '?'} sentences. "
        f"Latency: batch 1, greedy, one sentence at a time (tokenise + generate + detokenise), "
        f"on {', '.join(map(str, sorted(timed))) or 'the first'} sentences after untimed warm-up. "
        "Peak RSS and load time: measured in a fresh Python process that loads the model through ekd-edge "
        "(torch and transformers included). App peak: the same sentences in a process holding only the app's "
        "runtime (numpy + onnxruntime + the extensions' native library for the one-file model; ctranslate2 + "
        "sentencepiece for CTranslate2); App model = that peak minus the process's resident set before loading. "
        "MB = MiB (2^20 bytes).",
        "",
    ]
    for heading, body in sections:
        lines += [f"## {heading}", "", body.rstrip("\n"), ""]
    lines += _md_metric_signatures(rows) + [""]
    lines.append(signature_markdown(signature))
    return "\n".join(lines)


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# label positions tried in turn (offset in points, horizontal alignment) until one overlaps nothing
_LABEL_SLOTS = (((7, 6), "left"), ((7, -14), "left"), ((-7, 6), "right"), ((-7, -14), "right"),
                ((7, 18), "left"), ((-7, 18), "right"), ((7, -26), "left"), ((-7, -26), "right"))


def place_labels(fig, ax, points: list[dict]) -> None:
    """Label every point with name (variant), moving a label around its point to avoid earlier ones
    and to stay inside the plot."""
    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    # scatter size is an area in points^2; a few pixels of air around the marker
    radius = math.sqrt(_MARKER_SIZE) / 2 * fig.dpi / 72 + 3
    taken = []
    for row in points:
        xy = (row["latency_p50_ms"], row["bleu"])
        # the marker itself is an obstacle for the labels of other points
        px, py = ax.transData.transform(xy)
        taken.append((px - radius, py - radius, px + radius, py + radius))
    for row in points:
        xy = (row["latency_p50_ms"], row["bleu"])
        text = f"{row.get('name')} ({row.get('variant')})"
        label = None
        for offset, align in _LABEL_SLOTS:
            if label is not None:
                label.remove()
            label = ax.annotate(text, xy, xytext=offset, textcoords="offset points", fontsize=9, ha=align, zorder=4)
            box = label.get_window_extent(renderer)
            inside = frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
            if inside and not any(box.x0 < x1 and x0 < box.x1 and box.y0 < y1 and y0 < box.y1
                                  for x0, y0, x1, y1 in taken):
                break
        # when every slot collides the last one is kept: a crowded label beats a missing one
        taken.append(tuple(label.get_window_extent(renderer).extents))


def render_png(rows: list[dict], signature: dict, title: str) -> bytes:
    """BLEU against p50 latency, one labelled point per row; marker = variant, colour = role."""
    # the Agg canvas directly: no pyplot global state, no display backend needed
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    points = [r for r in rows if _finite(r.get("latency_p50_ms")) and _finite(r.get("bleu"))]
    fig = Figure(figsize=(9, 6), dpi=150)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)

    variants = list(dict.fromkeys(str(r.get("variant")) for r in points))
    spare = itertools.cycle(_SPARE_MARKERS)
    markers = {v: MARKERS.get(v) or next(spare) for v in variants}
    for row in points:
        variant, role = str(row.get("variant")), row.get("role")
        ax.scatter(row["latency_p50_ms"], row["bleu"], marker=markers[variant], s=_MARKER_SIZE,
                   color=ROLE_COLOURS.get(role, _OTHER_COLOUR), edgecolors="black", linewidths=0.6, zorder=3)

    latencies = [r["latency_p50_ms"] for r in points]
    if latencies and min(latencies) > 0 and max(latencies) / min(latencies) >= LOG_X_SPREAD:
        from matplotlib.ticker import FuncFormatter, LogLocator

        ax.set_xscale("log")
        # plain numbers (5, 10, 20, 50 ms) read better than 10^1 / 10^2
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
        ax.xaxis.set_minor_formatter(FuncFormatter(lambda x, _: ""))
        ax.set_xlabel("p50 latency per sentence, ms (batch 1, greedy; log scale)")
    else:
        ax.set_xlabel("p50 latency per sentence, ms (batch 1, greedy)")
    ax.set_ylabel("BLEU (sacrebleu)")
    ax.grid(True, which="both", alpha=0.3)
    # room for the labels beside the points
    ax.margins(x=0.2)
    if points:
        low, high = min(r["bleu"] for r in points), max(r["bleu"] for r in points)
        # at least 2 BLEU of height, so that near-equal scores do not look far apart
        if high - low < 2.0:
            middle = (low + high) / 2
            low, high = middle - 1.0, middle + 1.0
        pad = 0.15 * (high - low)
        # BLEU is never negative: show only enough below 0 to keep a marker at 0 whole
        ax.set_ylim(max(low - pad, -0.05 * (high - low)), high + pad)
    else:
        ax.text(0.5, 0.5, "no row has both BLEU and latency", transform=ax.transAxes, ha="center", va="center")

    roles = list(dict.fromkeys(r.get("role") for r in points))
    handles = [Line2D([], [], linestyle="", marker=markers[v], markersize=9, color="#999999",
                      markeredgecolor="black", label=v) for v in variants]
    handles += [Line2D([], [], linestyle="", marker="o", markersize=9, color=ROLE_COLOURS.get(r, _OTHER_COLOUR),
                       markeredgecolor="black", label=str(r)) for r in roles]
    if handles:
        ax.legend(handles=handles, loc="best", fontsize=9, framealpha=0.9, title="variant / role", title_fontsize=9)

    subtitle = [str(signature.get("cpu", ""))]
    if signature.get("threads") is not None:
        subtitle.append(f"threads: {signature['threads']}")
    fig.suptitle(title, fontsize=13)
    ax.set_title(" · ".join(s for s in subtitle if s), fontsize=9, color="#444444")
    ax.autoscale_view()
    fig.tight_layout()
    # labels are placed against the final layout: their positions are measured on screen
    place_labels(fig, ax, points)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def json_safe(value):
    """NaN/inf are not JSON: they become null rather than an unreadable file."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


REPORT_FORMAT = "ekd-edge-report"


def check_report_destination(out_dir: Path, outputs: list[Path], marker: Path) -> None:
    """Files of ``outputs`` that exist are replaced only when ``marker`` (a JSON report) says ekd-edge wrote them."""
    if out_dir.exists() and not out_dir.is_dir():
        raise EkdError(f"{out_dir}: exists and is not a directory; give a directory for the report")
    existing = [p for p in outputs if p.exists()]
    if not existing:
        return
    try:
        payload = json.loads(marker.read_text())
        ours = isinstance(payload, dict) and (payload.get("format") == REPORT_FORMAT
                                              or {"signature", "rows"} <= set(payload))
    except (OSError, ValueError):
        ours = False
    if not ours:
        raise EkdError(f"{existing[0]}: exists and was not written by ekd-edge; refusing to overwrite it "
                       "(choose another --out)")


def write_report(rows: list[dict], out_dir: str | Path, signature: dict, title: str = "ekd-edge benchmark",
                 sections=(), extra: dict | None = None) -> dict:
    """Write report.json, report.md and report.png into ``out_dir``; returns {"json", "md", "png"} -> Path.

    ``sections``: (heading, markdown) parts added to report.md; ``extra``: more keys for report.json.
    """
    rows = [dict(r) for r in rows]
    if not rows:
        raise ValueError("no benchmark rows to report")
    out_dir = Path(out_dir)
    paths = {"json": out_dir / "report.json", "md": out_dir / "report.md", "png": out_dir / "report.png"}
    check_report_destination(out_dir, list(paths.values()), paths["json"])
    payload = json_safe({"format": REPORT_FORMAT, "title": title, "signature": signature, "rows": rows, **(extra or {})})
    write_json_atomic(paths["json"], payload)
    write_bytes_atomic(paths["md"], render_markdown(rows, signature, title, sections).encode("utf-8"))
    write_bytes_atomic(paths["png"], render_png(rows, signature, title))
    return paths
