"""Per-stage methods in a real nano ladder: validation messages, every method runs, restarts reuse."""

import json
import shutil
import tomllib

import pytest

from ekd_edge.distill.ladder import run_recipe
from ekd_edge.distill.recipe import parse_recipe
from ekd_edge.errors import EkdError, RecipeError

BASE = """
name = "nano-methods"
seed = 4
[data]
corpus = "lo-help-en-de"
max_train_pairs = 200
max_length = 24
valid_sentences = 6
[tokenizer]
vocab_size = 200
[training]
batch_tokens = 384
lr = 3e-3
warmup_steps = 1
eval_max_new_tokens = 8
[[teacher]]
name = "t1"
size = {d_model = 32, encoder_layers = 2, decoder_layers = 2, attention_heads = 2, ffn_dim = 64}
steps = 3
[[teacher]]
name = "t2"
size = {d_model = 48, encoder_layers = 1, decoder_layers = 2, attention_heads = 2, ffn_dim = 96}
steps = 3
[student]
size = "nano"
steps_per_stage = 2
"""

STAGES = """
[[stage]]
method = "word_kd"
teacher_cache_k = 16
init = "copy:every_other"
[[stage]]
method = "seq_kd"
seqkd_beams = 2
seqkd_nbest = 2
seqkd_mix = "both"
teacher_cache_k = 8
"""


def recipe(extra: str = STAGES, base: str = BASE):
    return parse_recipe(tomllib.loads(base + extra), "r.toml")


@pytest.mark.parametrize("extra, message", [
    ("[[stage]]\nmethod = \"word_kd\"\n", "1 \\[\\[stage\\]\\] tables for 2 teachers"),
    ("[[stage]]\nmethod = \"mbr\"\n[[stage]]\n", "method must be one of auto, word_kd"),
    ("[[stage]]\nmethod = \"speculative\"\nteacher_cache_k = 8\n[[stage]]\n", "only applies to method = \"word_kd\" or \"seq_kd\""),
    ("[[stage]]\nspec_k = 5\n[[stage]]\n", "spec_k only applies to method = \"speculative\""),
    ("[[stage]]\nmethod = \"word_kd\"\nseqkd_beams = 2\n[[stage]]\n", "seqkd_beams only applies to method = \"seq_kd\""),
    ("[[stage]]\n[[stage]]\ninit = \"copy:first\"\n", "only applies to stage 1"),
    ("[[stage]]\nmethod = \"seq_kd\"\nseqkd_nbest = 5\n[[stage]]\n", "seqkd_nbest must be in 1..seqkd_beams"),
    ("[[stage]]\nteacher_cache_k = 999\n[[stage]]\n", "teacher_cache_k must be in 0..200"),
    ("[[stage]]\ninit = \"clone\"\n[[stage]]\n", "use \"warm\", \"copy:every_other\""),
    ("[[stage]]\nflavour = 1\n[[stage]]\n", "unknown key\\(s\\) flavour"),
])
def test_invalid_stage_combinations_say_what_to_change(extra, message):
    with pytest.raises(RecipeError, match=message):
        recipe(extra)


def test_cache_with_logit_mse_is_rejected():
    with pytest.raises(RecipeError, match="cannot use a top-k cache"):
        recipe(STAGES + "[distill]\nloss = \"mse\"\n")


def test_defaults_without_stage_tables():
    r = recipe("")
    assert r.stages == [] and r.stage(2).method == "auto" and r.stage(1).teacher_cache_k == 0


def test_ladder_with_methods_reuses_caches_and_distilled_data_on_restart(tmp_path, no_network):
    text = BASE + STAGES
    r = parse_recipe(tomllib.loads(text), "r.toml")
    summary = run_recipe(r, tmp_path, text, baselines=True)
    s1 = json.loads((tmp_path / "students/stage-1/metrics.json").read_text())["stage_method"]
    s2 = json.loads((tmp_path / "students/stage-2/metrics.json").read_text())["stage_method"]
    assert s1["copy_init"] == {"encoder": [0], "decoder": [0]} and s1["teacher_cache"]["built_now"]
    assert s2["method"] == "seq_kd" and s2["seqkd"]["decoded_now"] > 0 and s2["teacher_cache"]["built_now"]
    assert set(summary["baselines"]) == {"ce-only", "direct-kd"}
    assert all((tmp_path / "baselines" / n / "model.safetensors").is_file() for n in ("ce-only", "direct-kd"))
    assert summary["baselines"]["direct-kd"]["teacher_cache_k"] == 8 and summary["baselines"]["ce-only"]["teacher"] is None
    assert summary["baselines"]["direct-kd"]["steps"] == 2 * r.student.steps_per_stage
    # a restart that has to redo both stages finds the teacher outputs and the distilled data on disk
    for k in (1, 2):
        shutil.rmtree(tmp_path / f"students/stage-{k}")
    caches = sorted(p.name for p in (tmp_path / "cache").iterdir())
    run_recipe(r, tmp_path, text)
    s1 = json.loads((tmp_path / "students/stage-1/metrics.json").read_text())["stage_method"]
    s2 = json.loads((tmp_path / "students/stage-2/metrics.json").read_text())["stage_method"]
    assert not s1["teacher_cache"]["built_now"]
    assert s2["seqkd"]["decoded_now"] == 0 and not s2["teacher_cache"]["built_now"]
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == caches


def test_speculative_and_ce_stages_and_compare(tmp_path):
    from ekd_edge.distill.compare import compare_run

    text = BASE + "[[stage]]\nmethod = \"ce\"\n[[stage]]\nmethod = \"speculative\"\nspec_k = 5\nspec_block = 3\n"
    r = parse_recipe(tomllib.loads(text), "r.toml")
    run_recipe(r, tmp_path, text)
    s2 = json.loads((tmp_path / "students/stage-2/metrics.json").read_text())["stage_method"]
    assert s2["speculative"]["top_k"] == 5 and s2["speculative"]["block"] == 3
    result = compare_run(tmp_path, split="valid", sentences=12, samples=50, max_new_tokens=8)
    names = [row["name"] for row in result["rows"]]
    assert names == ["t1", "t2", "ekd-stage-1", "ekd-stage-2"]
    assert result["reference_system"] == "ekd-stage-2"
    rows = {row["name"]: row for row in result["rows"]}
    assert rows["ekd-stage-2"]["bleu_p"] is None and 0.0 <= rows["t2"]["chrf_p"] <= 1.0
    assert rows["t2"]["params"] > rows["ekd-stage-2"]["params"]
    table = (tmp_path / "compare" / "valid.md").read_text()
    assert "| ekd-stage-2 | student |" in table and "ref." in table


def test_a_baseline_trained_by_the_second_job_equals_one_trained_in_process(tmp_path, no_network):
    """jobs = 2 moves the baseline to a second process: same weights, same ladder, both reported."""
    text = BASE.replace("steps_per_stage = 2", 'steps_per_stage = 3\nbaselines = ["direct-kd"]').replace(
        "[training]", "[training]\nthreads = 1")
    r = parse_recipe(tomllib.loads(text), "r.toml")
    one = run_recipe(r, tmp_path / "one", text, jobs=1)
    two = run_recipe(r, tmp_path / "two", text, jobs=2)
    assert set(one["baselines"]) == set(two["baselines"]) == {"direct-kd"}
    assert not (tmp_path / "two" / "baselines" / "ce-only").exists()
    assert "second process" in (tmp_path / "two" / "distill.log").read_text()
    for part in ("baselines/direct-kd", "students/stage-2"):
        a = (tmp_path / "one" / part / "model.safetensors").read_bytes()
        b = (tmp_path / "two" / part / "model.safetensors").read_bytes()
        assert a == b, part
    assert two["baselines"]["direct-kd"]["steps"] == 2 * r.student.steps_per_stage


def test_a_failing_second_job_fails_the_run_with_its_last_line(tmp_path, no_network):
    text = BASE.replace("steps_per_stage = 2", 'steps_per_stage = 2\nbaselines = ["ce-only"]')
    r = parse_recipe(tomllib.loads(text), "r.toml")
    run_recipe(r, tmp_path, text, jobs=2)
    shutil.rmtree(tmp_path / "baselines" / "ce-only")
    (tmp_path / "baselines" / "ce-only.progress.pt").write_bytes(b"not a checkpoint")   # resume state it cannot read
    with pytest.raises(EkdError, match="second job failed \\(exit 2\\): error: .*ce-only.progress.pt: corrupt"):
        run_recipe(r, tmp_path, text, jobs=2)
    assert not (tmp_path / "baselines" / "ce-only").exists()


@pytest.mark.parametrize("kind, settings, expected", [
    ("native", {}, "word_kd"),
    ("bridged", {}, "word_kd"),
    ("foreign", {}, "seq_kd"),
    ("foreign", {"seqkd_beams": 2}, "seq_kd"),
    ("native", {"seqkd_beams": 2}, "would be ignored"),
    ("foreign", {"method": "word_kd"}, "has its own tokenizer"),
    ("foreign", {"method": "speculative"}, "has its own tokenizer"),
    ("bridged", {"method": "speculative"}, "through an id map"),
    ("bridged", {"teacher_cache_k": 8}, "teacher_cache_k stores"),
    ("foreign", {"method": "seq_kd", "teacher_cache_k": 8}, "teacher_cache_k stores"),
    ("bridged", {"init": "copy:first"}, "needs a teacher of the student's vocabulary"),
])
def test_auto_method_follows_the_teachers_vocabulary(kind, settings, expected):
    from ekd_edge.distill.methods import resolve_stage
    from ekd_edge.distill.recipe import StageSettings

    stage = StageSettings(**settings)
    if expected in ("word_kd", "seq_kd"):
        assert resolve_stage(stage, kind, 1, "big", "r.toml").method == expected
    else:
        with pytest.raises(RecipeError, match=expected):
            resolve_stage(stage, kind, 1, "big", "r.toml")
