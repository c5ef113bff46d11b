"""The one Markdown table renderer and provenance footer every report and benchmark result uses."""

from __future__ import annotations

import math

import pytest

from ekd_edge.markdown import MISSING, count, mean_sd, number, p_value, plain, provenance_footer, table


def _cells(line: str) -> list[str]:
    """A table line's cells, split only at pipes that are not escaped."""
    cells, current, chars = [], "", iter(line.strip()[1:-1])
    for ch in chars:
        if ch == "\\":
            current += ch + next(chars)
        elif ch == "|":
            cells.append(current.strip())
            current = ""
        else:
            current += ch
    return cells + [current.strip()]


def test_a_pipe_in_a_cell_does_not_add_a_column():
    text = table(["model", "BLEU"], [["student|tiny", 27.9], ["a\\b|c\nd", 1.0]])
    lines = text.splitlines()
    assert len(lines) == 4 and all(len(_cells(line)) == 2 for line in lines)
    assert _cells(lines[2]) == ["student\\|tiny", "27.90"]
    assert _cells(lines[3])[0] == "a\\\\b\\|c d"   # backslash escaped first, line break folded


def test_missing_values_print_as_the_missing_mark():
    text = table(["a", "b", "c", "d", "e"], [[None, float("nan"), float("inf"), "", 0.0]])
    assert _cells(text.splitlines()[2]) == [MISSING, MISSING, MISSING, MISSING, "0.00"]
    assert number(None) == number(math.nan) == number(-math.inf) == MISSING
    assert mean_sd(None, 1.0) == MISSING and mean_sd(10.1, 1.5) == "10.10 ± 1.50"
    assert count(None) == MISSING and count(1234567) == "1,234,567"
    assert plain(12.3) == "12.3" and plain(None) == MISSING


def test_numeric_columns_are_right_aligned_by_default():
    text = table(["name", "BLEU", "steps", "note"], [["a", 1.5, 3, "x"], ["b", None, 4, 2.0]])
    assert _cells(text.splitlines()[1]) == ["---", "---:", "---:", "---"]
    # the caller may say otherwise, one letter per column
    text = table(["name", "BLEU"], [["a", 1.5]], align="cl")
    assert _cells(text.splitlines()[1]) == [":---:", "---"]


def test_formats_turn_raw_values_into_text_before_escaping():
    text = table(["p", "ratio"], [[None, 0.5], [0.01234, 2.0]], formats={0: p_value, 1: lambda v: number(v, ".3f", "x")})
    assert [_cells(line) for line in text.splitlines()[2:]] == [["ref.", "0.500x"], ["0.0123", "2.000x"]]
    assert p_value(0.01234, ".3f") == "0.012"


@pytest.mark.parametrize("rows, align", [([["a"]], None), ([["a", 1, 2]], None), ([["a", 1]], "l"), ([["a", 1]], "lx")])
def test_a_row_or_alignment_of_the_wrong_length_is_refused(rows, align):
    with pytest.raises(ValueError):
        table(["name", "BLEU"], rows, align=align)


def _provenance(dirty) -> dict:
    return {"commit": "0123abc", "dirty": dirty, "command": ["python", "benchmarks/x.py", "--smoke"],
            "environment": {"cpu": "Test CPU 9000", "machine": "x86_64", "cpu_flags": {"avx512_vnni": True, "avx2": False},
                            "logical_cores": 8, "usable_cores": 2, "threads": 1, "os": "Linux", "python": "3.11.7",
                            "packages": {"torch": "2.0", "onnxruntime": None}},
            "load_average_before": [0.5, 0.4, 0.3], "load_average_after": [1.5, 0.6, 0.35], "wall_s": 12.5,
            "settings": {"k": 8}, "data": {"test": "abc123"}}


def test_the_footer_names_code_machine_and_load():
    footer = provenance_footer(_provenance(dirty=False), versions={"ctranslate2": "4.5"})
    assert footer.startswith("## Provenance\n")
    assert "`0123abc` (clean tree)" in footer
    assert "`python benchmarks/x.py --smoke`" in footer
    assert "Test CPU 9000" in footer and "avx512_vnni yes" in footer and "avx2 no" in footer
    assert "threads: 1" in footer and "2 usable" in footer
    assert "[0.5, 0.4, 0.3]" in footer and "[1.5, 0.6, 0.35]" in footer
    assert "onnxruntime not installed" in footer and "ctranslate2 4.5" in footer
    assert '"k": 8' in footer and "abc123" in footer
    assert "(dirty tree)" in provenance_footer(_provenance(dirty=True))
    assert "tree state unknown" in provenance_footer(_provenance(dirty=None))


def test_a_footer_without_a_commit_describes_the_environment_only():
    footer = provenance_footer({"environment": _provenance(False)["environment"]}, heading="Environment")
    assert footer.startswith("## Environment\n") and "Commit" not in footer and "Test CPU 9000" in footer
    # a result recorded before the int8 flags were says so rather than showing none
    env = {k: v for k, v in _provenance(False)["environment"].items() if k != "cpu_flags"}
    assert "int8-relevant flags: not recorded" in provenance_footer({"environment": env})


def test_a_recorded_provenance_renders():
    """The real thing: what Provenance.end() records names this checkout and this machine."""
    from ekd_edge.bench.provenance import Provenance

    prov = Provenance.begin(threads=1).end()
    footer = provenance_footer(prov)
    assert "- Commit: `" in footer and prov["environment"]["cpu"] in footer and "int8-relevant flags: " in footer
    assert "not recorded" not in footer and "Load average (1, 5, 15 min) before: [" in footer
