"""Paired bootstrap statistics and the choice of reference system (on fixed text, fully offline)."""

from pathlib import Path

import pytest

from ekd_edge.distill.compare import default_reference, markdown_table, paired_bootstrap
from ekd_edge.errors import EkdError


def test_paired_bootstrap_separates_a_clearly_better_system(lo_valid):
    refs = lo_valid.tgt[:60]
    good = list(refs)
    good[::4] = ["Hallo"] * len(good[::4])      # three quarters exact
    bad = ["Hallo Welt"] * len(refs)
    close = list(good)
    close[1] = "Hallo"                          # one sentence worse: no significant difference
    stats = paired_bootstrap({"good": good, "bad": bad, "close": close}, refs, "good", samples=200)
    assert stats["good"]["bleu_p"] is None and stats["good"]["bleu"] > 50
    assert stats["bad"]["bleu_p"] < 0.05 and stats["bad"]["chrf_p"] < 0.05
    assert stats["close"]["bleu_p"] > 0.05 and stats["close"]["bleu"] < stats["good"]["bleu"]
    assert 0 < stats["good"]["bleu_ci"] < 20 and stats["good"]["chrf_ci"] > 0


def test_reference_is_the_last_ekd_stage():
    models = [("t1", "teacher", Path("a")), ("ekd-stage-2", "student", Path("b")),
              ("ekd-stage-10", "student", Path("c")), ("ce-only", "baseline", Path("d"))]
    assert default_reference(models) == "ekd-stage-10"
    assert default_reference([models[0], models[3]]) == "ce-only"
    with pytest.raises(EkdError, match="no student"):
        default_reference([models[0]])


def test_markdown_table_marks_the_reference():
    row = {"name": "s", "role": "student", "params": 1234, "bleu": 10.0, "bleu_mean": 10.1, "bleu_ci": 1.5,
           "bleu_p": None, "chrf": 30.0, "chrf_mean": 30.2, "chrf_ci": 2.0, "chrf_p": None}
    text = markdown_table({"split": "test", "sentences": 5, "bootstrap_samples": 100, "reference_system": "s",
                           "rows": [row, {**row, "name": "b", "bleu_p": 0.01234, "chrf_p": 0.5}]})
    assert "| s | student | 1,234 | 10.00 | 10.10 ± 1.50 | ref. |" in text
    assert "| 0.0123 |" in text
