"""Stage versus deploy cost: Pareto front, per-stage gains, and `ekd-edge report` on a tiny run."""

import json

import pytest

from ekd_edge.bench.pareto import pareto_front, stage_costs


def _row(name, bleu, p50, role="student", stage=None, variant="fp32", size=1.0):
    return {"name": name, "role": role, "stage": stage, "variant": variant, "bleu": bleu, "latency_p50_ms": p50,
            "size_mb": size}


def test_pareto_front():
    rows = [
        _row("fast-bad", 5.0, 1.0),
        _row("slow-good", 9.0, 10.0),
        _row("dominated", 4.0, 2.0),       # fast-bad is faster and better
        _row("middle", 7.0, 5.0),
        _row("tie-a", 7.0, 5.0),           # identical point: neither dominates the other
        _row("no-bleu", None, 0.5),        # missing values take no part
        _row("worse-same-speed", 8.0, 10.0),  # slow-good: same latency, higher BLEU
    ]
    assert pareto_front(rows) == [0, 1, 3, 4]


def test_pareto_front_of_one_and_none():
    assert pareto_front([_row("a", 1.0, 1.0)]) == [0]
    assert pareto_front([_row("a", None, None)]) == []


def test_stage_costs_compare_same_variant():
    rows = [
        _row("teacher", 10.0, 30.0, role="teacher", variant="pytorch", size=16.0),
        _row("stage-1", 6.0, 10.0, stage=1, variant="int8", size=2.0),
        _row("stage-2", 9.0, 12.0, stage=2, variant="int8", size=2.5),
        _row("stage-2", 9.1, 20.0, stage=2, variant="fp32", size=6.0),
    ]
    costs = {(c["stage"], c["variant"]): c for c in stage_costs(rows)}
    assert set(costs) == {(1, "int8"), (2, "int8"), (2, "fp32")}
    assert costs[(1, "int8")]["bleu_gain"] is None
    assert costs[(2, "int8")]["bleu_gain"] == pytest.approx(3.0)
    assert costs[(2, "int8")]["size_change_mb"] == pytest.approx(0.5)
    assert costs[(2, "int8")]["latency_ratio"] == pytest.approx(1.2)
    # no stage-1 fp32 row: nothing to compare with
    assert costs[(2, "fp32")]["bleu_gain"] is None


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, nano_checkpoint, lo_valid):
    """A run directory whose report holds real rows: the nano checkpoint benchmarked as two stages."""
    from ekd_edge.bench import benchmark_model, environment_signature, write_report

    src, refs = lo_valid.src[:8], lo_valid.tgt[:8]
    rows = []
    for stage in (1, 2):
        rows.append(benchmark_model(nano_checkpoint, src, refs, name=f"stage-{stage}", role="student", stage=stage,
                                    threads=1, latency_sentences=3, warmup=1, max_new_tokens=16,
                                    measure_memory=False))
    teacher = dict(rows[1], name="teacher", role="teacher", stage=None, bleu=rows[1]["bleu"] + 1.0,
                   latency_p50_ms=rows[1]["latency_p50_ms"] * 3)
    run = tmp_path_factory.mktemp("run")
    signature = environment_signature(1)
    signature["data"] = "lo-help-en-de:valid[:8]"
    write_report(rows + [teacher], run / "report", signature)
    return run


def test_report_command_writes_table_plot_html_json(tiny_run):
    from ekd_edge.cli import main

    assert main(["report", str(tiny_run)]) == 0
    out = tiny_run / "report"
    payload = json.loads((out / "pareto.json").read_text())
    assert [r["name"] for r in payload["rows"]] == ["stage-1", "stage-2", "teacher"]
    # every row carries its model's hash, and the signature collects them
    assert all(r["model_sha256"] for r in payload["rows"])
    assert payload["signature"]["data"] == "lo-help-en-de:valid[:8]"
    assert payload["pareto"], "some model is always Pareto-optimal"
    assert [s["stage"] for s in payload["stages"]] == [1, 2]
    assert payload["stages"][1]["bleu_gain"] == pytest.approx(0.0)  # the same checkpoint twice
    markdown = (out / "pareto.md").read_text()
    assert "★" in markdown and "Stage 2 (pytorch)" in markdown and "![BLEU against p50 latency](pareto.png)" in markdown
    assert (out / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = (out / "pareto.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and "data:image/png;base64," in html
    assert "http://" not in html and "https://" not in html  # self-contained


def test_report_without_a_benchmark_is_a_one_line_error(tmp_path, capsys):
    from ekd_edge.cli import main

    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr()
    assert "report.json" in (err.out + err.err)
