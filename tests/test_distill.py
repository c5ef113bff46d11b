"""The EKD ladder end to end on nano models: teachers, stages, warm starts, resume, vocab checks."""

import json
from pathlib import Path

import pytest
import torch

from ekd_edge.distill.ladder import run_recipe
from ekd_edge.distill.recipe import parse_recipe
from ekd_edge.errors import CheckpointError, EkdError, RecipeError
from ekd_edge.models import load_model

RECIPE_TOML = """
name = "nano-ladder"
seed = 3
[data]
corpus = "lo-help-en-de"
max_train_pairs = 300
max_length = 32
valid_sentences = 8
[tokenizer]
vocab_size = 200
[training]
batch_tokens = 512
lr = 3e-3
warmup_steps = 2
eval_max_new_tokens = 8
[[teacher]]
name = "t-small"
size = "nano"
steps = 4
[[teacher]]
name = "t-big"
size = {d_model = 48, encoder_layers = 1, decoder_layers = 2, attention_heads = 2, ffn_dim = 96}
steps = 4
[student]
size = "nano"
steps_per_stage = 3
"""


def recipe_from(text, source="nano.toml"):
    import tomllib

    return parse_recipe(tomllib.loads(text), source)


@pytest.fixture(scope="module")
def nano_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run") / "nano"
    summary = run_recipe(recipe_from(RECIPE_TOML), run_dir, RECIPE_TOML)
    return run_dir, summary


def test_ladder_trains_teachers_and_every_stage(nano_run):
    run_dir, summary = nano_run
    assert list(summary["teachers"]) == ["t-small", "t-big"]
    assert list(summary["stages"]) == ["stage-1", "stage-2"]
    stage2 = json.loads((run_dir / "students" / "stage-2" / "metrics.json").read_text())
    assert stage2["teacher"] == "t-big" and stage2["warm_start"].endswith("stage-1") and stage2["steps"] == 3
    assert 0.0 <= stage2["valid"]["bleu"] <= 100.0 and "nrefs:1" in stage2["valid"]["bleu_signature"]
    big = json.loads((run_dir / "teachers" / "t-big" / "metrics.json").read_text())
    assert big["params"] > stage2["params"]
    for model_dir in [run_dir / "teachers" / "t-small", run_dir / "students" / "stage-1"]:
        assert (model_dir / "model.safetensors").is_file() and (model_dir / "vocab.json").is_file()
    assert json.loads((run_dir / "run.json").read_text())["recipe"] == "nano-ladder"


def test_stage_two_starts_from_stage_one(nano_run):
    run_dir, _ = nano_run
    s1 = load_model(run_dir / "students" / "stage-1")
    s2 = load_model(run_dir / "students" / "stage-2")
    fresh = __import__("ekd_edge.models", fromlist=["build_model"]).build_model("nano", s1.config.vocab_size, seed=1003)
    # stage 2 starts at stage 1's weights, so it stays nearer to them than to a fresh initialisation.
    w1, w2, w0 = (m.model.shared.weight for m in (s1, s2, fresh))
    assert (w2 - w1).norm() < (w2 - w0).norm()


def test_rerun_trains_nothing_again(nano_run):
    run_dir, _ = nano_run
    weights = sorted(run_dir.glob("*/*/model.safetensors"))
    stamps = {p: p.stat().st_mtime_ns for p in weights}
    run_recipe(recipe_from(RECIPE_TOML), run_dir, RECIPE_TOML)
    assert {p: p.stat().st_mtime_ns for p in weights} == stamps


def test_recipe_with_other_comments_and_layout_resumes_its_run(nano_run):
    run_dir, _ = nano_run
    weights = sorted(run_dir.glob("*/*/model.safetensors"))
    stamps = {p: p.stat().st_mtime_ns for p in weights}
    kept = (run_dir / "recipe.toml").read_text()
    reworded = "# a new first line of prose\n" + RECIPE_TOML.replace("seed = 3", "seed   =   3   # reworded")
    assert reworded != RECIPE_TOML and "seed = 3" in RECIPE_TOML
    run_recipe(recipe_from(reworded), run_dir, reworded)
    assert {p: p.stat().st_mtime_ns for p in weights} == stamps
    assert (run_dir / "recipe.toml").read_text() == kept


def test_run_dir_of_another_recipe_is_refused(nano_run):
    run_dir, _ = nano_run
    other = RECIPE_TOML.replace("seed = 3", "seed = 4")
    with pytest.raises(EkdError, match="different recipe"):
        run_recipe(recipe_from(other), run_dir, other)


def test_foreign_directory_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(EkdError, match="not an ekd-edge run"):
        run_recipe(recipe_from(RECIPE_TOML), tmp_path, RECIPE_TOML)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_word_level_kd_from_a_teacher_with_another_vocabulary_fails_before_training(tmp_path, nano_checkpoint):
    text = RECIPE_TOML.replace('name = "t-small"\nsize = "nano"\nsteps = 4', f'name = "t-small"\ncheckpoint = "{nano_checkpoint}"')
    text += '[[stage]]\nmethod = "word_kd"\n[[stage]]\nmethod = "word_kd"\n'
    run_dir = tmp_path / "run"
    with pytest.raises(RecipeError, match=r"\[\[stage\]\] #1 \(teacher 't-small'\): method 'word_kd' compares next-token "
                                          r"distributions, but this teacher has its own tokenizer; use method = \"seq_kd\""):
        run_recipe(recipe_from(text), run_dir, text)
    assert not (run_dir / "teachers").exists() and not (run_dir / "students").exists()


def test_a_ladder_mixes_seq_kd_from_a_foreign_teacher_with_word_kd(tmp_path, nano_checkpoint):
    """Stage 1 from a checkpoint with its own vocabulary (seq-KD, chosen by "auto"), stage 2 word-level
    KD from a teacher trained here: one ladder, each stage with what its teacher can teach."""
    text = RECIPE_TOML.replace('name = "t-small"\nsize = "nano"\nsteps = 4', f'name = "t-small"\ncheckpoint = "{nano_checkpoint}"')
    summary = run_recipe(recipe_from(text), tmp_path / "run", text)
    first, second = summary["stages"]["stage-1"]["stage_method"], summary["stages"]["stage-2"]["stage_method"]
    assert (first["method"], first["teacher_kind"], first["word_level"]) == ("seq_kd", "foreign", False)
    assert (second["method"], second["teacher_kind"]) == ("word_kd", "native")


def test_corrupt_teacher_checkpoint_is_named(tmp_path, nano_checkpoint):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(nano_checkpoint, broken)
    (broken / "model.safetensors").write_bytes(b"\x00garbage")
    text = RECIPE_TOML.replace('name = "t-small"\nsize = "nano"\nsteps = 4', f'name = "t-small"\ncheckpoint = "{broken}"')
    with pytest.raises(CheckpointError, match="corrupt weights file"):
        run_recipe(recipe_from(text), tmp_path / "run", text)


def test_trained_student_beats_its_random_start(nano_run):
    """Not a quality claim: a sanity check that distillation steps lower the loss on training data."""
    from ekd_edge.data.tokenizer import load_tokenizer

    run_dir, _ = nano_run
    tokenizer = load_tokenizer(run_dir / "tokenizer")
    s2 = load_model(run_dir / "students" / "stage-2")
    fresh = __import__("ekd_edge.models", fromlist=["build_model"]).build_model("nano", len(tokenizer), seed=1003)
    from ekd_edge.data import load_corpus

    train = load_corpus("lo-help-en-de").split("train").head(32)
    enc = tokenizer(train.src, text_target=train.tgt, padding=True, truncation=True, max_length=32, return_tensors="pt")
    enc["labels"][enc["labels"] == tokenizer.pad_token_id] = -100
    with torch.no_grad():
        assert s2.eval()(**enc).loss < fresh.eval()(**enc).loss


def test_every_stage_starts_exactly_from_the_previous_students_saved_weights(tmp_path, monkeypatch):
    """The EKD warm start: stage k's weights when its training begins are stage k−1's saved ones."""
    import torch
    from safetensors.torch import load_file

    from ekd_edge.distill import ladder

    real_train = ladder.train
    starts = {}

    def recording_train(model, stream, steps, settings, **kwargs):
        starts[kwargs.get("description", "")] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return real_train(model, stream, steps, settings, **kwargs)

    monkeypatch.setattr(ladder, "train", recording_train)
    run_dir = tmp_path / "run"
    run_recipe(recipe_from(RECIPE_TOML), run_dir, RECIPE_TOML)
    stage2_start = next(v for k, v in starts.items() if k.startswith("stage 2"))
    saved1 = load_file(run_dir / "students" / "stage-1" / "model.safetensors")
    assert saved1, "stage 1 saved no weights"
    for name, tensor in saved1.items():
        assert torch.equal(stage2_start[name], tensor), name
    stage1_start = next(v for k, v in starts.items() if k.startswith("stage 1"))
    assert not torch.equal(stage1_start["model.shared.weight"], saved1["model.shared.weight"])  # it trained
    log = (run_dir / "distill.log").read_text()
    assert "valid BLEU" in log and "stage-2" in log   # the run's log file follows it


def test_teachers_only_recipe_and_only_flag(tmp_path):
    teachers_only = "teachers_only = true\n" + RECIPE_TOML[: RECIPE_TOML.index("[student]")]
    run_dir = tmp_path / "run"
    summary = run_recipe(recipe_from(teachers_only), run_dir, teachers_only, only=["t-big"])
    assert list(summary["teachers"]) == ["t-big"] and summary["stages"] == {}
    assert (run_dir / "teachers" / "t-big" / "metrics.json").is_file()
    assert not (run_dir / "teachers" / "t-small").exists() and not (run_dir / "students").exists()
    summary = run_recipe(recipe_from(teachers_only), run_dir, teachers_only)
    assert list(summary["teachers"]) == ["t-small", "t-big"] and not (run_dir / "students").exists()


def test_the_run_adopts_a_given_teachers_tokenizer(tmp_path, nano_checkpoint):
    text = RECIPE_TOML.replace('[[teacher]]\nname = "t-small"\nsize = "nano"\nsteps = 4\n',
                               f'[[teacher]]\nname = "t-small"\ncheckpoint = "{nano_checkpoint}"\n')
    text = text.replace("[tokenizer]\nvocab_size = 200", '[tokenizer]\nfrom = "t-small"')
    run_dir = tmp_path / "run"
    run_recipe(recipe_from(text), run_dir, text)
    assert (run_dir / "tokenizer" / "vocab.json").read_bytes() == (nano_checkpoint / "vocab.json").read_bytes()
    assert (run_dir / "students" / "stage-2" / "metrics.json").is_file()


def test_tokenizer_from_must_name_a_teacher_given_by_checkpoint():
    text = RECIPE_TOML.replace("[tokenizer]\nvocab_size = 200", '[tokenizer]\nfrom = "t-small"')
    with pytest.raises(EkdError, match=r"\[tokenizer\] from = 't-small': must name a teacher given by checkpoint"):
        recipe_from(text)


def test_package_checkpoints_resolve_inside_the_package_only():
    from ekd_edge.distill.recipe import resolve_checkpoint

    assert (Path(resolve_checkpoint("package:recipes", "x")) / "demo.toml").is_file()
    with pytest.raises(EkdError, match="inside the package"):
        resolve_checkpoint("package:../../etc", "x")
    assert resolve_checkpoint("/some/dir", "x") == "/some/dir"
