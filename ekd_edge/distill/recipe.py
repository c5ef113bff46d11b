"""Recipes: the whole distillation run as TOML data, validated before any work starts.

A recipe names the data, the tokenizer, the teacher ladder (in order of growing capacity), the
student and the training settings. Unknown keys, wrong types and impossible values are errors
that say which key is wrong and what is allowed, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import tomllib
from dataclasses import MISSING, dataclass, field, fields
from importlib import resources
from pathlib import Path

from ekd_edge.distill.losses import KD_LOSSES
from ekd_edge.distill.methods import StageSettings, validate_stages
from ekd_edge.errors import RecipeError


@dataclass
class DataSettings:
    corpus: str = "lo-help-en-de"
    src_lang: str = ""
    tgt_lang: str = ""
    max_train_pairs: int = 0          # 0 = the whole training split
    max_length: int = 64              # tokens; longer training pairs are dropped and counted
    valid_sentences: int = 200        # validation subset scored after each model
    empty_lines: str = "error"        # "error" or "skip"
    long_pairs: str = "drop"          # over max_length: "drop" the pair or "truncate" it (counted either way)


@dataclass
class TokenizerSettings:
    vocab_size: int = 8000


@dataclass
class TrainingSettings:
    batch_tokens: int = 2048          # source + target tokens per batch, padding included
    lr: float = 1e-3
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1         # cosine decay ends at lr × this
    label_smoothing: float = 0.1
    weight_decay: float = 0.0
    dropout: float = 0.1
    clip_norm: float = 1.0
    eval_max_new_tokens: int = 96
    threads: int = 0                  # 0 = torch's default
    checkpoint_every: int = 200       # steps between progress checkpoints (0 = only at each model's end)


@dataclass
class TeacherSettings:
    name: str
    size: str | dict | None = None
    steps: int = 0
    lr: float = 0.0                   # 0 = [training] lr
    checkpoint: str = ""              # an existing HF Marian checkpoint using the run's tokenizer


@dataclass
class StudentSettings:
    name: str = "student"
    size: str | dict = "tiny"
    steps_per_stage: int = 1000
    lr: float = 0.0                   # 0 = [training] lr


@dataclass
class DistillSettings:
    loss: str = "forward_kl"
    alpha: float = 0.5                # weight of the KD term; 1 - alpha goes to label-smoothed CE
    temperature: float = 1.0
    jsd_beta: float = 0.5


@dataclass
class Recipe:
    name: str
    seed: int = 0
    data: DataSettings = field(default_factory=DataSettings)
    tokenizer: TokenizerSettings = field(default_factory=TokenizerSettings)
    training: TrainingSettings = field(default_factory=TrainingSettings)
    teachers: list[TeacherSettings] = field(default_factory=list)
    student: StudentSettings = field(default_factory=StudentSettings)
    distill: DistillSettings = field(default_factory=DistillSettings)
    stages: list[StageSettings] = field(default_factory=list)   # [[stage]]: per-teacher method (methods.py)
    source: str = ""                  # where the recipe was read from

    def stage_names(self) -> list[str]:
        return [f"stage-{k + 1}" for k in range(len(self.teachers))]

    def stage(self, k: int) -> StageSettings:
        """Stage k's (1-based) method settings; the defaults (online word-level KD) without [[stage]]."""
        return self.stages[k - 1] if self.stages else StageSettings()


SECTIONS = {"data": DataSettings, "tokenizer": TokenizerSettings, "training": TrainingSettings,
            "student": StudentSettings, "distill": DistillSettings}


def _build(cls, table: dict, where: str):
    if not isinstance(table, dict):
        raise RecipeError(f"{where}: expected a table, got {type(table).__name__}")
    allowed = {f.name: f for f in fields(cls)}
    unknown = sorted(set(table) - set(allowed))
    if unknown:
        raise RecipeError(f"{where}: unknown key(s) {', '.join(unknown)} (allowed: {', '.join(allowed)})")
    values = {}
    for key, value in table.items():
        default = allowed[key].default
        if default is MISSING:
            expected = str
        else:
            expected = type(default) if default is not None else None
        if key == "size":
            if not isinstance(value, (str, dict)):
                raise RecipeError(f"{where}.size: expected a preset name or a table, got {value!r}")
        elif expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        elif expected is not None and (not isinstance(value, expected) or isinstance(value, bool) != (expected is bool)):
            raise RecipeError(f"{where}.{key}: expected {expected.__name__}, got {value!r}")
        values[key] = value
    try:
        return cls(**values)
    except TypeError as exc:
        raise RecipeError(f"{where}: {exc}") from None


def parse_recipe(data: dict, source: str = "<recipe>") -> Recipe:
    allowed_top = {"name", "seed", "teacher", "stage", *SECTIONS}
    unknown = sorted(set(data) - allowed_top)
    if unknown:
        raise RecipeError(f"{source}: unknown top-level key(s) {', '.join(unknown)} (allowed: {', '.join(sorted(allowed_top))})")
    if not isinstance(data.get("name"), str) or not data["name"]:
        raise RecipeError(f"{source}: the recipe needs a name = \"...\"")
    sections = {key: _build(cls, data.get(key, {}), f"{source} [{key}]") for key, cls in SECTIONS.items()}
    teacher_tables = data.get("teacher", [])
    if not isinstance(teacher_tables, list):
        raise RecipeError(f"{source}: teachers are an array of tables: write [[teacher]]")
    teachers = [_build(TeacherSettings, t, f"{source} [[teacher]] #{i + 1}") for i, t in enumerate(teacher_tables)]
    stage_tables = data.get("stage", [])
    if not isinstance(stage_tables, list):
        raise RecipeError(f"{source}: stages are an array of tables: write [[stage]]")
    stages = [_build(StageSettings, t, f"{source} [[stage]] #{i + 1}") for i, t in enumerate(stage_tables)]
    seed = data.get("seed", 0)
    if not isinstance(seed, int):
        raise RecipeError(f"{source}: seed must be an integer, got {seed!r}")
    recipe = Recipe(name=data["name"], seed=seed, teachers=teachers, stages=stages, source=source, **sections)
    validate(recipe)
    return recipe


def validate(recipe: Recipe) -> None:
    """Check values that types cannot: every message says what to change."""
    where = recipe.source
    if not recipe.teachers:
        raise RecipeError(f"{where}: the ladder needs at least one [[teacher]]")
    names = [t.name for t in recipe.teachers]
    if len(set(names)) != len(names):
        raise RecipeError(f"{where}: teacher names must be unique, got {names}")
    for t in recipe.teachers:
        if t.checkpoint and (t.size is not None or t.steps):
            raise RecipeError(f"{where}: teacher {t.name!r} gives a checkpoint, so it takes neither size nor steps")
        if not t.checkpoint and (t.size is None or t.steps <= 0):
            raise RecipeError(f"{where}: teacher {t.name!r} needs either checkpoint = \"DIR\" or a size and steps > 0")
    if recipe.student.name in names:
        raise RecipeError(f"{where}: the student's name {recipe.student.name!r} is also a teacher's name")
    d, tr, ds = recipe.data, recipe.training, recipe.distill
    checks = [
        (recipe.tokenizer.vocab_size >= 100, "[tokenizer] vocab_size must be at least 100"),
        (recipe.student.steps_per_stage > 0, "[student] steps_per_stage must be > 0"),
        (recipe.student.lr >= 0 and all(t.lr >= 0 for t in recipe.teachers), "lr overrides must be >= 0 (0 = [training] lr)"),
        (d.max_length >= 8, "[data] max_length must be at least 8 tokens"),
        (d.max_train_pairs >= 0, "[data] max_train_pairs must be >= 0 (0 = all)"),
        (d.valid_sentences > 0, "[data] valid_sentences must be > 0"),
        (d.empty_lines in ("error", "skip"), "[data] empty_lines must be \"error\" or \"skip\""),
        (d.long_pairs in ("drop", "truncate"), "[data] long_pairs must be \"drop\" or \"truncate\""),
        (tr.checkpoint_every >= 0, "[training] checkpoint_every must be >= 0 (0 = only at each model's end)"),
        (tr.batch_tokens >= 2 * d.max_length, "[training] batch_tokens must hold at least one pair of max_length"),
        (tr.lr > 0, "[training] lr must be > 0"),
        (tr.warmup_steps >= 0, "[training] warmup_steps must be >= 0"),
        (0.0 <= tr.min_lr_ratio <= 1.0, "[training] min_lr_ratio must be in [0, 1]"),
        (0.0 <= tr.label_smoothing < 1.0, "[training] label_smoothing must be in [0, 1)"),
        (0.0 <= tr.dropout < 1.0, "[training] dropout must be in [0, 1)"),
        (tr.clip_norm >= 0, "[training] clip_norm must be >= 0 (0 = off)"),
        (ds.loss in KD_LOSSES, f"[distill] loss must be one of {', '.join(KD_LOSSES)}"),
        (0.0 <= ds.alpha <= 1.0, "[distill] alpha must be in [0, 1]"),
        (ds.temperature > 0, "[distill] temperature must be > 0"),
        (0.0 <= ds.jsd_beta <= 1.0, "[distill] jsd_beta must be in [0, 1]"),
    ]
    for ok, message in checks:
        if not ok:
            raise RecipeError(f"{where}: {message}")
    validate_stages(recipe.stages, len(recipe.teachers), ds.loss, recipe.tokenizer.vocab_size, where)
    from ekd_edge.models.presets import PRESETS

    for label, size in [(f"teacher {t.name!r}", t.size) for t in recipe.teachers if t.size is not None] + [
        ("student", recipe.student.size)
    ]:
        if isinstance(size, str) and size not in PRESETS:
            raise RecipeError(f"{where}: {label} size {size!r} is not a preset ({', '.join(PRESETS)})")


def packaged_recipes() -> list[str]:
    folder = resources.files("ekd_edge") / "recipes"
    return sorted(p.name.removesuffix(".toml") for p in folder.iterdir() if p.name.endswith(".toml"))


def load_recipe(name_or_path: str | Path) -> Recipe:
    """A recipe file, or the name of a recipe shipped with the package (``demo``)."""
    path = Path(name_or_path)
    if path.is_file():
        text, source = path.read_text(), str(path)
    elif str(name_or_path) in packaged_recipes():
        res = resources.files("ekd_edge") / "recipes" / f"{name_or_path}.toml"
        text, source = res.read_text(), f"{name_or_path}.toml"
    else:
        raise RecipeError(f"{name_or_path}: no such recipe file or packaged recipe ({', '.join(packaged_recipes())})")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError(f"{source}: not valid TOML ({exc})") from None
    return parse_recipe(data, source)


def recipe_text(name_or_path: str | Path) -> str:
    """The recipe's TOML text, kept verbatim in the run directory."""
    path = Path(name_or_path)
    if path.is_file():
        return path.read_text()
    return (resources.files("ekd_edge") / "recipes" / f"{name_or_path}.toml").read_text()
