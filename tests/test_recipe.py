"""Recipe parsing: the packaged recipes are valid, and every kind of mistake is named."""

from pathlib import Path

import pytest

from ekd_edge.distill.recipe import load_recipe, packaged_recipes, parse_recipe
from ekd_edge.errors import RecipeError

MINIMAL = {
    "name": "t",
    "teacher": [{"name": "t1", "size": "nano", "steps": 2}],
    "student": {"size": "nano", "steps_per_stage": 2},
}


def with_changes(**sections):
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in MINIMAL.items()}
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key].update(value)
        else:
            data[key] = value
    return data


@pytest.mark.parametrize("name", packaged_recipes())
def test_packaged_recipes_are_valid(name):
    recipe = load_recipe(name)
    assert recipe.teachers and (recipe.student is None or recipe.student.steps_per_stage > 0)


def test_minimal_recipe_gets_defaults():
    recipe = parse_recipe(with_changes())
    assert recipe.distill.loss == "forward_kl" and recipe.stage_names() == ["stage-1"]


@pytest.mark.parametrize("changes,message", [
    ({"trainig": {"lr": 1.0}}, "unknown top-level key(s) trainig"),
    ({"training": {"learning_rate": 1.0}}, "unknown key(s) learning_rate"),
    ({"training": {"lr": "fast"}}, "[training].lr: expected float"),
    ({"training": {"lr": -1.0}}, "lr must be > 0"),
    ({"distill": {"loss": "kl"}}, "loss must be one of forward_kl, reverse_kl, jsd, mse"),
    ({"distill": {"alpha": 1.5}}, "alpha must be in [0, 1]"),
    ({"student": {"size": "gigantic", "steps_per_stage": 2}}, "unknown preset 'gigantic'"),
    ({"teacher": []}, "at least one [[teacher]]"),
    ({"teacher": [{"name": "a", "size": "nano", "steps": 1}, {"name": "a", "size": "nano", "steps": 1}]}, "unique"),
    ({"teacher": [{"name": "a", "checkpoint": "x", "steps": 3}]}, "takes neither size nor steps"),
    ({"teacher": [{"name": "a", "size": "nano"}]}, "needs either checkpoint"),
    ({"data": {"empty_lines": "ignore"}}, "empty_lines must be"),
    ({"student": {"steps_per_stage": True}}, "expected int"),
    ({"student": {"baselines": ["direct_kd"]}}, "[student] baselines: expected distinct names from ce-only, direct-kd"),
    ({"student": {"baselines": ["ce-only", "ce-only"]}}, "[student] baselines: expected distinct names"),
    ({"student": {"baselines": "direct-kd"}}, "[student].baselines: expected list"),
])
def test_mistakes_are_named(changes, message):
    with pytest.raises(RecipeError) as err:
        parse_recipe(with_changes(**changes), "r.toml")
    assert message in str(err.value) and str(err.value).startswith("r.toml")


def test_recipe_file_errors(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("name = \n")
    with pytest.raises(RecipeError, match="not valid TOML"):
        load_recipe(bad)
    with pytest.raises(RecipeError, match="no such recipe"):
        load_recipe(tmp_path / "missing.toml")


def test_packaged_demo_climbs_the_shipped_teachers_and_keeps_the_capacity_gap():
    """The demo trains no teacher; its teachers grow, and the top one is at least 8x the student."""
    import json

    from ekd_edge.models import build_model, count_parameters

    recipe = load_recipe("demo")
    assert all(t.checkpoint and not t.steps for t in recipe.teachers)
    params = [json.loads((Path(t.checkpoint) / "metrics.json").read_text())["params"] for t in recipe.teachers]
    assert params == sorted(params) and len(params) == 3
    vocab = json.loads((Path(recipe.teachers[-1].checkpoint) / "config.json").read_text())["vocab_size"]
    student = count_parameters(build_model(recipe.student.size, vocab))
    assert params[-1] >= 8 * student
    assert recipe.tokenizer.from_ == recipe.teachers[-1].name and recipe.student.baselines == ["direct-kd"]
