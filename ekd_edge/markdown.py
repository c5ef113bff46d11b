"""Markdown for every report: one table renderer and one provenance footer.

    table(["engine", "p50 ms"], [["ct2-int8", 1.97], ["onefile", None]])
    provenance_footer(result["provenance"])

Cells are escaped (a `|` in a model name must not split a row), missing values print as "–",
and numbers are right-aligned unless the caller says otherwise, so a reader can compare digits.
It sits at the bottom of the package: the library's own reports (compare, bench) and the
benchmark scripts all render through it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence

MISSING = "–"
_ALIGN_RULES = {"l": "---", "r": "---:", "c": ":---:"}


def escape(text) -> str:
    """A cell's text: pipes and backslashes escaped, line breaks folded into spaces."""
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def number(value, spec: str = ".2f", suffix: str = "") -> str:
    """``format(value, spec)`` + suffix; None, NaN and infinities print as the missing mark."""
    if value is None or (is_number(value) and not math.isfinite(value)):
        return MISSING
    return format(value, spec) + suffix


def plain(value) -> str:
    """A number as it was recorded (already rounded: 12.3 stays 12.3), or text as it is."""
    return number(value, "")


def count(value) -> str:
    """A whole number with thousands separators: 1,234,567."""
    return number(value, ",")


def p_value(p, spec: str = ".4f") -> str:
    """A bootstrap p-value; None marks the reference system itself."""
    return "ref." if p is None else number(p, spec)


def mean_sd(mean, sd, spec: str = ".2f") -> str:
    return f"{number(mean, spec)} ± {number(sd, spec)}" if mean is not None else MISSING


def _cell(value) -> str:
    if value is None or value == "":
        return MISSING
    if isinstance(value, float):
        return number(value, ".2f")
    return escape(value)


def table(headers: Sequence[str], rows: Iterable[Sequence], align: str | None = None,
          formats: dict[int, Callable] | None = None) -> str:
    """A Markdown table. ``align``: one letter per column (l, r, c); by default a column whose
    cells are all numbers (or missing) is right-aligned. ``formats`` maps a column index to a
    function turning that column's raw value into text (before escaping)."""
    rows = [list(row) for row in rows]
    for row in rows:
        if len(row) != len(headers):
            raise ValueError(f"a row has {len(row)} cells for {len(headers)} columns: {row!r}")
    if align is None:
        align = "".join("r" if rows and all(v is None or is_number(v) for v in (r[i] for r in rows)) else "l"
                        for i in range(len(headers)))
    if len(align) != len(headers) or set(align) - set(_ALIGN_RULES):
        raise ValueError(f"align must give one of l/r/c for each of {len(headers)} columns, got {align!r}")
    formats = formats or {}
    lines = ["| " + " | ".join(escape(h) for h in headers) + " |",
             "| " + " | ".join(_ALIGN_RULES[a] for a in align) + " |"]
    for row in rows:
        cells = [escape(formats[i](v)) if i in formats else _cell(v) for i, v in enumerate(row)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _inline(value) -> str:
    if isinstance(value, (dict, list)):
        return "`" + json.dumps(value, ensure_ascii=False, sort_keys=True) + "`"
    return str(value)


def provenance_footer(prov: dict, heading: str = "Provenance", versions: dict | None = None) -> str:
    """The block every result ends with, from ``Provenance.end()``'s dict: the code (commit and
    whether the tree was clean), the command, the machine (CPU model and the instruction-set
    flags int8 kernels depend on), threads, load before and after, versions, settings, data.

    ``versions``: packages a script recorded beside the environment's. A dict without "commit"
    (a report that records only its environment) gets no commit line."""
    env = prov.get("environment") or {}
    lines = [f"## {heading}", ""]
    if "commit" in prov:
        tree = {True: "dirty tree", False: "clean tree", None: "tree state unknown"}[prov.get("dirty")]
        lines.append(f"- Commit: `{prov['commit']}` ({tree})")
    if prov.get("command"):
        lines.append("- Command: `" + " ".join(map(str, prov["command"])) + "`")
    if env:
        flags = env.get("cpu_flags") or {}
        shown = ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in flags.items()) or "not recorded"
        lines.append(f"- CPU: {env.get('cpu')} ({env.get('machine')}); int8-relevant flags: {shown}")
        lines.append(f"- Cores: {env.get('logical_cores')} logical, {env.get('usable_cores')} usable; "
                     f"threads: {env.get('threads')}")
        implementation = f" ({env['python_implementation']})" if env.get("python_implementation") else ""
        lines.append(f"- OS: {env.get('os')}; Python {env.get('python')}{implementation}")
        packages = {**(env.get("packages") or {}), **(versions or {})}
        if packages:
            lines.append("- Packages: " + ", ".join(f"{k} {v or 'not installed'}" for k, v in packages.items()))
        if env.get("measured_at"):
            lines.append(f"- Measured at (UTC): {env['measured_at']}")
    if "load_average_before" in prov:
        lines.append(f"- Load average (1, 5, 15 min) before: {prov['load_average_before']}, "
                     f"after: {prov.get('load_average_after')}")
    if prov.get("wall_s") is not None:
        lines.append(f"- Wall time: {prov['wall_s']} s")
    for key in ("settings", "data", "models"):
        if prov.get(key):
            lines.append(f"- {key.capitalize()}: {_inline(prov[key])}")
    return "\n".join(lines) + "\n"
