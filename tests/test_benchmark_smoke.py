"""Every benchmark script runs end to end at its smallest size on tiny real models, and what it writes
adds up: the counts behind each rate, a row for each model asked for, the provenance footer.

The GPU scripts and the ladders with their own smoke sizes are in test_benchmark_scripts.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import needs
from test_stages import BASE

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
       "TOKENIZERS_PARALLELISM": "false"}

# the ladder the scripts that start `ekd-edge distill` run: two nano teachers, two word-KD stages, in seconds
TINY_RECIPE = BASE + '[[stage]]\nmethod = "word_kd"\nteacher_cache_k = 8\n' * 2


def run_script(name: str, *args, timeout: int = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / f"{name}.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, env=ENV, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def tiny_recipe(path: Path) -> Path:
    path.write_text(TINY_RECIPE)
    return path


def table_rows(markdown: str, header: str) -> list[list[str]]:
    """The body rows of the table whose header line starts with ``header``, as cells."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    body = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        body.append([c.strip() for c in line.replace("\\|", "\x00").strip("|").split("|")])
    return body


def assert_footer(markdown: str, heading: str = "## Provenance") -> None:
    """The result ends with the provenance footer: the code and the machine it was measured on."""
    footer = markdown[markdown.rindex(heading):]
    assert "- Commit: `" in footer and "int8-relevant flags:" in footer and "Load average" in footer


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A finished two-teacher, two-stage run made by `ekd-edge distill`, as a user makes one."""
    work = tmp_path_factory.mktemp("tiny-run")
    run_dir = work / "run"
    proc = subprocess.run([sys.executable, "-m", "ekd_edge", "distill", str(tiny_recipe(work / "tiny.toml")),
                           "--run-dir", str(run_dir)], capture_output=True, text=True, timeout=300, env=ENV, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return run_dir


def test_kd_throughput_times_every_method_against_ce(tmp_path, nano_checkpoint):
    run_script("kd_throughput", "--teacher", nano_checkpoint, "--pairs", 64, "--steps", 2, "--rounds", 2,
               "--k", 4, "--out", tmp_path)
    result = json.loads((tmp_path / "result.json").read_text())
    rates, ratios = result["median_tokens_per_s"], result["ratio_to_ce_only"]
    assert set(rates) == {"ce_only", "online_teacher", "cached_top4"}
    assert all(len(v) == 2 and min(v) > 0 for v in result["all_rounds_tokens_per_s"].values())
    assert ratios["ce_only"] == 1.0
    for name in rates:
        assert ratios[name] == pytest.approx(rates[name] / rates["ce_only"], abs=1e-3)
    assert result["cache_bytes"]["4"] > 0 and result["settings"]["pairs"] <= 64
    markdown = (tmp_path / "result.md").read_text()
    assert [row[0] for row in table_rows(markdown, "| method")] == list(rates)
    assert_footer(markdown)


def test_distill_memory_reports_the_peak_of_a_real_run(tmp_path):
    run_script("distill_memory", "--recipe", tiny_recipe(tmp_path / "tiny.toml"), "--run-dir", tmp_path / "run",
               "--out", tmp_path / "out", "--interval", 0.2)
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    peak = result["peak_rss_mib"]
    series = [mib for _, mib in result["rss_series_mib"]]
    # the kernel's peak is at least what was sampled (give or take its batched per-thread counts)
    assert series and peak["sampled"] == max(series) and peak["wait4"] >= peak["sampled"] - 1
    assert 50 < peak["wait4"] < 4096   # an interpreter with torch, a few tiny models
    assert result["corpus"]["train_pairs"] == 200 and 0 < result["corpus"]["tokenized_pairs"] <= 200
    assert (tmp_path / "run" / "run.json").is_file()
    markdown = (tmp_path / "out" / "result.md").read_text()
    assert table_rows(markdown, "| recipe")[0][-2:] == [str(peak["wait4"]), str(peak["sampled"])]
    assert_footer(markdown)


def test_onefile_parity_counts_identical_outputs(tmp_path, sharp_checkpoint):
    # training sentences the sharp model was fitted to: its outputs there end cleanly. On test
    # sentences it loops ("Fmmmm…"), and where to stop a loop is a near-tie that float round-off
    # on one CPU (AVX2 against AVX-512) decides differently from another.
    run_script("onefile_parity", "--checkpoint", sharp_checkpoint, "--sentences", 6, "--beams", 1,
               "--split", "train", "--work", tmp_path / "work", "--out", tmp_path / "out")
    record = json.loads((tmp_path / "out" / "parity.json").read_text())
    assert [(r["variant"], r["num_beams"], r["n"]) for r in record["results"]] == [("fp32", 1, 6), ("int8", 1, 6)]
    for r in record["results"]:
        assert r["string_rate"] == r["n_same_string"] / r["n"] and r["id_rate"] == r["n_same_ids"] / r["n"]
        assert (r["first_mismatch"] is None) == (r["n_same_string"] == r["n"])
    fp32, int8 = record["results"]
    assert fp32["n_same_ids"] == 6   # the float32 one-file model decodes exactly what generate() does
    assert int8["size_bytes"] < fp32["size_bytes"]
    markdown = (tmp_path / "out" / "parity.md").read_text()
    assert [row[:3] for row in table_rows(markdown, "| variant")] == [
        ["fp32", "1", f"{fp32['n_same_string']}/6 ({fp32['string_rate']:.1%})"],
        ["int8", "1", f"{int8['n_same_string']}/6 ({int8['string_rate']:.1%})"]]
    assert_footer(markdown)


@pytest.mark.slow
def test_export_depth_measures_every_variant_against_the_checkpoint(tmp_path, sharp_checkpoint):
    run_script("export_depth", "--checkpoint", sharp_checkpoint, "--test-sentences", 6, "--latency-sentences", 2,
               "--gate-sentences", 6, "--recovery-steps", 2, "--work", tmp_path / "work", "--out", tmp_path / "out")
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    rows = result["rows"]
    assert rows[0]["name"] == "checkpoint (PyTorch fp32)" and rows[1]["name"] == "onnx fp32" and len(rows) == 15
    assert rows[0]["bleu_drop_vs_checkpoint"] == 0 and rows[1]["size_vs_onnx_fp32"] == 1.0
    for r in rows:
        assert r["bleu_drop_vs_checkpoint"] == pytest.approx(rows[0]["bleu"] - r["bleu"], abs=0.011)
        assert r["size_vs_onnx_fp32"] == pytest.approx(r["model_bytes"] / rows[1]["model_bytes"], abs=1e-3)
        assert 0 <= r["bleu"] <= 100 and r["latency_p50_ms"] > 0
    assert rows[1]["parity_rate"] == 1.0 and "test_sentences" in result["provenance"]["settings"]
    markdown = (tmp_path / "out" / "result.md").read_text()
    assert [row[0] for row in table_rows(markdown, "| variant")] == [r["name"] for r in rows]
    assert_footer(markdown)


@pytest.mark.slow
def test_engines_measures_every_engine_and_lever(tmp_path, sharp_checkpoint):
    run_script("engines", "--smoke", "--students", "demo", "--demo-student", sharp_checkpoint, "--sentences", 3,
               "--warmup", 1, "--work", tmp_path / "work", "--out", tmp_path / "out")
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import engines
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    payload = json.loads((tmp_path / "out" / "result.json").read_text())
    student = payload["students"]["demo"]
    assert set(student["engines"]) == {"pytorch", "ct2-int8", "ct2-fp32", *engines.ONEFILE}
    for name, e in student["engines"].items():
        assert 0 < e["p50_ms"] <= e["p90_ms"] and e["size_mb"] > 0
        assert (e.get("app_memory") is None) == (name == "pytorch")
    for pair in student["pairs"].values():
        assert pair["n"] == 3 and 0 <= pair["wins"] <= 3 and pair["p10"] <= pair["median"] <= pair["p90"]
    assert [lv["lever"] for lv in student["levers"]] == [lever for lever, _, _ in engines.LEVERS]
    for lv in student["levers"]:
        sizes = student["engines"][lv["on"]]["size_mb"], student["engines"][lv["off"]]["size_mb"]
        assert lv["size_ratio"] == pytest.approx(sizes[0] / sizes[1])
    markdown = (tmp_path / "out" / "result.md").read_text()
    assert [row[0] for row in table_rows(markdown, "| engine")] == list(student["engines"])
    assert len(table_rows(markdown, "| lever")) == len(engines.LEVERS)
    assert_footer(markdown)


@pytest.mark.slow
def test_ladder_small_compares_six_methods(tmp_path):
    run_script("ladder_small", "--recipe", tiny_recipe(tmp_path / "ladder.toml"), "--run-dir", tmp_path / "run",
               "--test-sentences", 8, "--bootstrap", 20, "--out", tmp_path / "out")
    out = json.loads((tmp_path / "out" / "result.json").read_text())
    methods = {r["method"]: r for r in out["methods"]}
    # the six methods, and the EKD ladder's first stage on its way
    assert set(methods) == {"ekd-stage-1", "ekd-word", "ce-only", "direct-kd", "ekd-seqkd", "ekd-speculative",
                            "ekd-copyinit"}
    assert methods["ekd-word"]["bleu_p"] is None and all(r["bleu_p"] is not None for n, r in methods.items()
                                                         if n != "ekd-word")
    top = next(r for r in out["compare"]["rows"] if r["name"] == "t2")   # the recipe's last teacher
    for name, r in methods.items():
        assert r["gap_bleu_to_top_teacher"] == pytest.approx(r["bleu"] - top["bleu"], abs=0.011)
        assert (r["student_train_wall_s"] is None) == (name == "ekd-stage-1")
    assert {name: [s["method"] for s in stages] for name, stages in out["stage_curves"].items()} == {
        "ekd-word": ["word_kd", "word_kd"], "ekd-seqkd": ["word_kd", "seq_kd"],
        "ekd-speculative": ["word_kd", "speculative"], "ekd-copyinit": ["word_kd", "word_kd"]}
    markdown = (tmp_path / "out" / "result.md").read_text()
    assert [row[0] for row in table_rows(markdown, "| method | params")] == [r["method"] for r in out["methods"]] + [
        "t1 (teacher)", "t2 (teacher)"]
    assert (tmp_path / "out" / "compare-test.md").is_file()
    assert_footer(markdown)


@pytest.mark.slow
def test_external_teacher_smoke_trains_both_students(tmp_path):
    run_script("external_teacher", "--smoke", "--work", tmp_path / "work", "--out", tmp_path / "out")
    out = json.loads((tmp_path / "out" / "result.json").read_text())
    rows = out["rows"]
    assert set(rows) == {"teacher (OPUS layout)", "student-seqkd", "student-trimmed"}
    check = out["teacher"]["rewrite_check"]
    assert check["identical"] == check["sentences"] > 0
    assert rows["student-trimmed"]["bleu_p"] is None and 0 <= rows["student-seqkd"]["bleu_p"] <= 1
    assert (rows["student-seqkd"]["stage_method"]["method"], rows["student-seqkd"]["stage_method"]["teacher_kind"]) \
        == ("seq_kd", "foreign")
    assert rows["student-trimmed"]["stage_method"]["teacher_kind"] == "bridged"
    vocab = out["vocabulary"]
    assert vocab["trimmed_student"] < vocab["teacher"] and rows["student-trimmed"]["student_vocab"] == \
        vocab["trimmed_student"]
    assert out["test"]["sentences"] == 8
    markdown = (tmp_path / "out" / "result.md").read_text()
    assert [row[0] for row in table_rows(markdown, "| system")] == list(rows)
    assert_footer(markdown)


def test_ship_teachers_scores_what_it_ships(tmp_path, tiny_run):
    run_script("ship_teachers", "--run-dir", tiny_run, "--test-sentences", 6, "--ship-to", tmp_path / "shipped",
               "--out", tmp_path / "out")
    import torch
    from safetensors import safe_open

    from ekd_edge.models import load_model

    rows = json.loads((tmp_path / "out" / "result.json").read_text())["rows"]
    assert [r["name"] for r in rows] == ["t1", "t2"]   # by size
    for r in rows:
        shipped = tmp_path / "shipped" / r["name"]
        record = json.loads((shipped / "metrics.json").read_text())
        assert r["test_bleu"] == round(record["test"]["bleu"], 2) and record["test"]["sentences"] == 6
        assert r["params"] == record["params"] == json.loads((tiny_run / "teachers" / r["name"] /
                                                              "metrics.json").read_text())["params"]
        # fp16 on disk, fp32 once loaded; the row's size is the file's
        with safe_open(shipped / "model.safetensors", "pt") as weights:
            assert {weights.get_tensor(key).dtype for key in weights.keys()} == {torch.float16}
        assert next(load_model(shipped).parameters()).dtype == torch.float32
        assert r["size_mb"] == round((shipped / "model.safetensors").stat().st_size / 1e6, 2)
    markdown = (tmp_path / "out" / "result.md").read_text()
    assert [row[0] for row in table_rows(markdown, "| teacher")] == ["t1", "t2"]
    for r in rows:
        assert_footer(markdown, f"## Provenance: {r['name']}")


@pytest.mark.slow
def test_arm_agreement_compares_a_portable_bundle_under_qemu(tmp_path, sharp_checkpoint):
    """Needs the aarch64 root `make test` builds: skipped without it, a failure in CI."""
    import shutil

    from ekd_edge.bench.arm import ArmRoot
    from ekd_edge.export.onnx_export import export_bundle

    root = ArmRoot()
    if not (root.is_ready() and shutil.which(root.qemu)):
        message = f"the aarch64 root ({root.path}) and qemu-aarch64-static (`python -m ekd_edge.bench.arm ensure`)"
        needs(False, f"{message} are not built")
    bundle = tmp_path / "portable-int8"
    export_bundle(sharp_checkpoint, bundle, quantize="int8", quant_arch="arm64", portable=True, max_new_tokens=24)
    run_script("arm_agreement", "--bundle", bundle, "--max-sentences", 4, "--out", tmp_path / "out")
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    [run] = result["runs"]
    agree = run["agreement"]
    assert agree["n"] == 4 and agree["rate"] == agree["identical"] / 4 == 1.0   # portable numerics: the same tokens
    assert run["aarch64"]["machine"] == "aarch64" and run["numerics"] == "portable"
    markdown = (tmp_path / "out" / "result.md").read_text()
    [row] = table_rows(markdown, "| bundle")
    assert row[4] == "**4/4 (100.00 %)**"
    assert_footer(markdown)


def test_smoke_sizes_refuse_to_overwrite_committed_results():
    for name in ("engines", "external_teacher"):
        proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / f"{name}.py"), "--smoke"],
                              capture_output=True, text=True, timeout=120, env=ENV)
        assert proc.returncode != 0 and "--smoke writes no committed result" in proc.stderr


def test_scale_records_growth_and_a_killed_stage_keeps_its_shards(tmp_path):
    """Two synthetic corpora and the kill/rerun stage at smoke size: the teacher passes over the pairs the
    stages train on and no others, the rerun redoes no finished shard and skips none, a changed corpus is
    refused in one line."""
    out = tmp_path / "out"
    run_script("scale", "--smoke", "--work-dir", tmp_path / "work", "--out", out, timeout=900)
    result = json.loads((out / "result.json").read_text())
    sizes = result["sizes"]
    assert [r["pairs"] for r in sizes] == [1500, 3000]
    for r in sizes:
        assert r["stage1"]["layout"] == "shards" and r["stage1"]["steps"] == 2
        assert r["stage1"]["teacher_pairs"] == r["stage1"]["train_pairs"] < r["tokenized"]["pairs"]
        assert r["stage2"]["decoded"] == r["stage2"]["sources"] < r["pairs"]
        assert r["tokenized"]["pairs"] + r["tokenized"]["dropped_long"] == r["pairs"]
        assert r["first_step_s"] > r["stage1_teacher_s"] > 0 and r["peak_rss_mib"] > 100
    assert set(result["growth"]) >= {"peak RSS", "tokenising time", "disk"}
    long = result["long_stage"]
    assert long["killed_run"]["killed"] and len(long["killed_run"]["shards_at_kill"]) >= 2
    assert long["rerun"]["shards_kept"] and long["rerun"]["status"] == 0
    # the rerun passed the teacher over exactly the pairs the killed run had not cached
    assert long["killed_run"]["pairs_in_those_shards"] + long["rerun"]["teacher_pairs_rerun"] == long["cached_pairs"]
    assert long["teacher_within_trained"] and long["cached_pairs"] <= long["train_pairs"]
    refused = long["changed_corpus"]
    assert refused["status"] == 2 and not refused["traceback"] and "changed since this run started" in refused["message"][0]
    markdown = (out / "result.md").read_text()
    assert len(table_rows(markdown, "| pairs |")) == 2
    assert_footer(markdown)
    assert not list((tmp_path / "work").glob("run-*/")) and not list((tmp_path / "work").glob("cache-*/"))
