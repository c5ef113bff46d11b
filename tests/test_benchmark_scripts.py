"""The experiment scripts under benchmarks/ run end to end at smoke size, so they cannot rot unseen."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _smoke(name: str, tmp_path: Path) -> dict:
    """Run benchmarks/NAME.py --smoke into tmp_path; its result.json."""
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / f"{name}.py"), "--smoke", "--out", str(out),
                           "--work-dir", str(tmp_path / "work")], capture_output=True, text=True, timeout=900,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:] + proc.stdout[-2000:]
    return json.loads((out / "result.json").read_text())


def _params(size, vocab: int) -> int:
    import torch

    from ekd_edge.models import build_model, count_parameters

    with torch.device("meta"):   # exact counts, no memory
        return count_parameters(build_model(size, vocab))


def test_the_gpu_script_is_sized_like_the_paper():
    """~6M student, teachers of growing size up to ~40M (the paper's 39M senior teacher)."""
    full = _script("ladder_gpu").FULL
    student = _params(full["student"][0], full["vocab"])
    teachers = [_params(size, full["vocab"]) for _, size, _ in full["teachers"]]
    assert 5_000_000 <= student <= 7_000_000
    assert teachers == sorted(teachers) and 35_000_000 <= teachers[-1] <= 45_000_000
    assert teachers[-1] >= 6 * student


@pytest.mark.slow
def test_ladder_gpu_smoke_runs_on_the_cpu(tmp_path, no_network):
    result = _smoke("ladder_gpu", tmp_path)
    names = {r["name"]: r for r in result["compare"]["rows"]}
    assert {"T1", "T2", "T3", "ekd-stage-1", "ekd-stage-2", "ekd-stage-3", "ce-only", "direct-kd"} == set(names)
    assert names["ekd-stage-3"]["bleu_p"] is None and names["direct-kd"]["bleu_p"] is not None
    # the baselines get the ladder's total student steps
    steps = result["models"]
    assert steps["direct-kd"]["steps"] == steps["ce-only"]["steps"] == 3 * steps["ekd-stage-1"]["steps"]
    assert result["device"]["device"] == "cpu" and result["provenance"]["commit"]
    assert "SMOKE" in (tmp_path / "out" / "result.md").read_text()


@pytest.mark.slow
def test_ladder_medium_smoke_compares_every_method_with_direct_kd(tmp_path, no_network):
    result = _smoke("ladder_medium", tmp_path)
    rows = {r["method"]: r for r in result["rows"]}
    assert set(rows) == {"ce-only", "direct-kd", "ekd", "ekd-seqkd"}
    assert rows["direct-kd"]["bleu_p"] is None and all(rows[m]["bleu_p"] is not None for m in ("ce-only", "ekd"))
    assert len({r["steps"] for r in rows.values()}) == 1   # the same total steps for every method
    assert len(rows["ekd"]["valid_bleu_per_stage"]) == 3 and len(rows["ce-only"]["valid_bleu_per_stage"]) == 1
    # the seq-KD variant's first stage really trained on teacher translations
    seq = json.loads((tmp_path / "work" / "ekd-seqkd-seed1" / "students" / "stage-1" / "metrics.json").read_text())
    assert seq["stage_method"]["method"] == "seq_kd" and seq["stage_method"]["seqkd"]["pairs"] > 0
    # all runs shared one cache directory: one top-k cache per (teacher, training pairs), not one per run:
    # s, m, l on the references and s on the seq-KD pairs
    # (a cache is built whole, or in shards for a stage that sees part of the corpus: one key either way)
    caches = {p.name.removesuffix("-shards") for p in (tmp_path / "work" / "cache").glob("teacher-*")}
    assert len(caches) == 4 and not (tmp_path / "work" / "ekd-seed1" / "cache").exists()


def test_smoke_runs_refuse_to_overwrite_committed_results():
    for name in ("ladder_gpu", "ladder_medium"):
        proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / f"{name}.py"), "--smoke"],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode != 0 and "--smoke writes no committed result" in proc.stderr


def test_gpu_smoke_runs_every_method_on_the_cpu(tmp_path, no_network):
    """The prepared GPU check, on the CPU: every ladder and the pruning recovery finish, each stage with
    the method (and kind of teacher) it is there to exercise."""
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_smoke.py"), "--devices", "cpu",
                           "--steps", "2", "--work", str(tmp_path / "work"), "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads((tmp_path / "out" / "result.json").read_text())["results"]["cpu"]
    seen = {(s["method"], s["kind"]) for name, r in result.items() if name != "prune-recovery"
            for s in r["stages"].values()}
    assert seen == {("word_kd", "native"), ("seq_kd", "native"), ("speculative", "native"), ("seq_kd", "foreign"),
                    ("word_kd", "bridged")}
    cached = result["cached-speculative"]["stages"]["stage-1"]
    assert cached["method"] == "word_kd" and result["prune-recovery"]["ok"]


# What each arm of the capacity-gap sweep must have learnt from, in order: written out here, not taken
# from the script, so a wrong teacher list there fails this test.
CAPACITY_GAP_ARMS = {"direct-kd": ["teacher-l"], "ekd-m-l": ["teacher-m", "teacher-l"],
                     "ekd-s-m-l": ["teacher-s", "teacher-m", "teacher-l"],
                     "kd-l-l-l": ["teacher-l", "teacher-l", "teacher-l"]}   # the schedule control
# the names the recipes give those teachers: a teacher listed again needs a name of its own
RECIPE_TEACHER_NAMES = {**CAPACITY_GAP_ARMS, "kd-l-l-l": ["teacher-l", "teacher-l.2", "teacher-l.3"]}


def test_capacity_gap_sizes_span_a_wide_gap_to_teacher_l():
    module = _script("capacity_gap")
    ratios = sorted(module.teacher_l_params() / _params(size, 4000) for size in module.SIZES)
    assert len(ratios) >= 3 and ratios[0] <= 4 and ratios[-1] >= 20
    assert {arm: list(t) for arm, t in module.ARMS.items()} == CAPACITY_GAP_ARMS
    jobs = module.planned_jobs(module.SIZES, [1, 2, 3])
    # the design's 27 runs come first; the schedule control's 9 after them
    assert module.TOTAL_STEPS % 6 == 0 and len(jobs) == 36 and len(set(jobs)) == 36
    assert {arm for _, arm, _ in jobs[:27]} == {"direct-kd", "ekd-m-l", "ekd-s-m-l"}
    assert {arm for _, arm, _ in jobs[27:]} == {"kd-l-l-l"}


@pytest.mark.slow
def test_capacity_gap_smoke_trains_each_arm_with_its_own_teachers(tmp_path, no_network):
    """Two tiny students, one seed, 6 steps: each arm's runs recorded the teachers it names, in order,
    and the same total steps; every final student reached the frontier; a rerun repeats nothing."""
    from ekd_edge.models.teacher import weights_digest

    command = [sys.executable, str(ROOT / "benchmarks" / "capacity_gap.py"), "--smoke", "--workers", "1",
               "--out", str(tmp_path / "out"), "--work-dir", str(tmp_path / "work")]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:] + proc.stdout[-2000:]
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    rows = result["rows"]
    assert {(r["size"], r["arm"]) for r in rows} == {(s, a) for s in ("nano", "micro") for a in CAPACITY_GAP_ARMS}
    shipped = ROOT / "ekd_edge" / "teachers" / "lo-help-en-de"
    for r in rows:
        assert r["teachers"] == CAPACITY_GAP_ARMS[r["arm"]], r["label"]
        # the weights each stage learnt from are the shipped teacher of that name
        assert [s["teacher_weights_sha256"] for s in r["stages"]] == \
            [weights_digest(shipped / t)[:16] for t in CAPACITY_GAP_ARMS[r["arm"]]]
        assert r["steps_per_stage"] == [6 // len(r["teachers"])] * len(r["teachers"]) and r["total_steps"] == 6
        assert (r["bleu_p"] is None) == (r["arm"] == "direct-kd") and r["compared"]
        frontier = r["onefile_int8"]
        assert frontier["size_mb"] > 0 and frontier["latency"]["p50_ms"] > 0
        assert frontier["app_memory"]["peak_rss_mb"] > 0
    # the run directories say the same as the per-run results: their own records, read here directly
    for r in rows:
        run = tmp_path / "work" / r["size"] / f"{r['arm']}-seed1"
        if r["arm"] == "direct-kd":
            record = json.loads((run / "baselines" / "direct-kd" / "metrics.json").read_text())
            assert Path(record["teacher"]).name == "teacher-l" and record["steps"] == 6
        else:
            records = [json.loads((run / "students" / f"stage-{k}" / "metrics.json").read_text())
                       for k in range(1, len(CAPACITY_GAP_ARMS[r["arm"]]) + 1)]
            assert [x["teacher"] for x in records] == RECIPE_TEACHER_NAMES[r["arm"]]
            assert sum(x["steps"] for x in records) == 6
            assert not (run / "students" / f"stage-{len(records) + 1}").exists()
    md = (tmp_path / "out" / "result.md").read_text()
    assert "SMOKE" in md and md.index("**Hypothesis**") < md.index("## By size") < md.index("## Frontier")
    assert (tmp_path / "out" / "frontier.png").read_bytes()[:4] == b"\x89PNG"
    # the ladder against the schedule control, seed by seed: the difference of their own BLEU
    by = {(r["size"], r["arm"]): r for r in rows}
    for size in ("nano", "micro"):
        ladder, control = by[(size, "ekd-s-m-l")], by[(size, "kd-l-l-l")]
        assert ladder["over_control"]["gain"] == round(ladder["bleu"] - control["bleu"], 2)
        assert 0 <= ladder["over_control"]["bleu_p"] <= 1
        assert not any(r.get("over_control") for r in rows if r["arm"] != "ekd-s-m-l")
    assert "## The ladder against the schedule control" in md
    # resuming from the per-run results alone: nothing is trained or measured again
    again = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert again.returncode == 0 and "8 runs done, 0 to go" in again.stdout and "started" not in again.stdout
    # --retime: every student still here is timed again, each its own bundle; one made elsewhere is not
    shutil.rmtree(tmp_path / "work" / "nano" / "direct-kd-seed1" / "onefile-x86")
    retimed = subprocess.run(command + ["--retime"], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert retimed.returncode == 0, retimed.stderr[-2000:] + retimed.stdout[-2000:]
    assert "nano.direct-kd.seed1: not timed" in retimed.stdout and "started" not in retimed.stdout
    timings = {p.stem: json.loads(p.read_text()) for p in (tmp_path / "out" / "timing").glob("*.json")}
    assert set(timings) == {r["label"] for r in rows} - {"nano.direct-kd.seed1"}
    for r in rows:
        if r["label"] in timings:
            bundle = {k: v for k, v in r["provenance"]["models"].items() if k.endswith("onefile-x86")}
            timing = timings[r["label"]]
            assert timing["provenance"]["models"] == bundle
            # one pass of 2 rounds (smoke); the latency is the median of its rounds' (2: their mean)
            rounds = timing["p50_ms_by_round"]
            assert len(rounds) == 2 and min(rounds) > 0
            assert abs(timing["latency"]["p50_ms"] - sum(rounds) / 2) <= 0.002
    assert len({t["pass"] for t in timings.values()}) == 1
    after = json.loads((tmp_path / "out" / "result.json").read_text())
    assert sum(bool(r["quiet"]) for r in after["rows"]) == 7 and after["quiet_host"]["cpu"]
    assert "| 3 of 4 |" in (tmp_path / "out" / "result.md").read_text()
    # a later pass replaces the earlier one in the summary: a student it could not time keeps its old
    # file but is not put beside the new pass's timings (passes differ more than sizes do)
    time.sleep(1.1)   # a pass is named by its start, to the second
    shutil.rmtree(tmp_path / "work" / "micro" / "ekd-m-l-seed1" / "onefile-x86")
    second = subprocess.run(command + ["--retime"], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-2000:] + second.stdout[-2000:]
    kept = json.loads((tmp_path / "out" / "timing" / "micro.ekd-m-l.seed1.json").read_text())
    assert kept["pass"] == timings["micro.ekd-m-l.seed1"]["pass"]
    after = json.loads((tmp_path / "out" / "result.json").read_text())
    quiet = {r["label"] for r in after["rows"] if r["quiet"]}
    assert quiet == set(timings) - {"micro.ekd-m-l.seed1"}
    assert {r["quiet"]["pass"] for r in after["rows"] if r["quiet"]} == {after["quiet_host"]["pass"]}
    assert after["quiet_host"]["pass"] > kept["pass"]


def test_capacity_gap_smoke_refuses_to_overwrite_the_committed_result():
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "capacity_gap.py"), "--smoke"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "--smoke writes no committed result" in proc.stderr
