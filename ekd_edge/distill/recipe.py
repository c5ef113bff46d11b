"""Recipes: the whole distillation run as TOML data, validated before any work starts.

A recipe names the data, the tokenizer, the teacher ladder (in order of growing capacity), the
student and the training settings. Unknown keys, wrong types and impossible values are errors
that say which key is wrong and what is allowed, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path

from ekd_edge.distill.losses import KD_LOSSES
from ekd_edge.distill.teacher_engine import TEACHER_ENGINES
from ekd_edge.config import build
from ekd_edge.defaults import DEFAULT_CORPUS
from ekd_edge.errors import RecipeError


@dataclass
class DataSettings:
    corpus: str = DEFAULT_CORPUS
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
    from_: str = ""                   # TOML key "from": a teacher (given by checkpoint) whose tokenizer the run adopts
    trim: bool = False                # with from: keep only the pieces the training corpus uses (data/adopt.py)
    max_pieces: int = 0               # with trim: keep at most this many, the most frequent (0 = all used)


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
    device: str = "auto"              # auto (CUDA when present), cpu or cuda; EKD_EDGE_DEVICE overrides
    precision: str = "auto"           # auto (bf16 autocast + bf16 teachers on CUDA, fp32 on the CPU), fp32, bf16


@dataclass
class TeacherSettings:
    name: str
    size: str | dict | None = field(default=None, metadata={"types": (str, dict)})
    steps: int = 0
    lr: float = 0.0                   # 0 = [training] lr
    checkpoint: str = ""              # a local Hugging Face seq2seq checkpoint (models/teacher.py);
                                      # "package:teachers/…" names one shipped inside ekd_edge
    src_lang: str = ""                # the teacher's own language tokens (NLLB "eng_Latn", mBART-50 "en_XX")
    tgt_lang: str = ""
    prefix: str = ""                  # text before every source (T5 "translate English to German: ")


@dataclass
class StudentSettings:
    name: str = "student"
    size: str | dict = field(default="tiny", metadata={"types": (str, dict)})
    steps_per_stage: int = 1000
    lr: float = 0.0                   # 0 = [training] lr
    baselines: list = field(default_factory=list)   # of BASELINES: students the ladder must beat, trained
                                                    # from scratch with the ladder's total steps


# The students an EKD ladder is measured against (methods.run_baselines): no teacher at all, and
# word-level KD from the strongest teacher alone.
BASELINES = ("ce-only", "direct-kd")


@dataclass
class DistillSettings:
    loss: str = "forward_kl"
    alpha: float = 0.5                # weight of the KD term; 1 - alpha goes to label-smoothed CE
    temperature: float = 1.0
    jsd_beta: float = 0.5
    teacher_engine: str = "auto"      # who decodes seq-KD targets: auto, pytorch, ctranslate2 (teacher_engine.py)


METHODS = ("auto", "word_kd", "seq_kd", "speculative", "ce")
WORD_LEVEL = ("word_kd", "speculative")   # compare distributions position by position: one vocabulary


@dataclass
class StageSettings:
    method: str = "auto"              # word_kd for a teacher of the student's vocabulary, else seq_kd
    teacher_cache_k: int = 0
    seqkd_beams: int = 4
    seqkd_nbest: int = 1
    seqkd_mix: str = "distilled"
    spec_k: int = 25
    spec_block: int = 5
    spec_student_temp: float = 1.0
    spec_teacher_temp: float = 1.0
    init: str = "warm"


def check_vocabulary_bounds(stages: list[StageSettings], vocab_size: int, what: str, where: str) -> None:
    """teacher_cache_k and spec_k count pieces of the run's vocabulary: at most ``vocab_size`` (``what`` says
    where that size comes from). A tokenizer adopted from a teacher has its size only once it is made."""
    for k, s in enumerate(stages, start=1):
        at = f"{where} [[stage]] #{k}"
        if not 0 <= s.teacher_cache_k <= vocab_size:
            raise RecipeError(f"{at}: teacher_cache_k must be in 0..{vocab_size} ({what}; 0 = online teacher)")
        if not 1 <= s.spec_k <= vocab_size:
            raise RecipeError(f"{at}: spec_k must be in 1..{vocab_size} ({what})")


def validate_stages(stages: list[StageSettings], teachers: int, kd_loss: str, vocab_size: int | None,
                    where: str) -> None:
    """Reject combinations that cannot work, saying what to change (``vocab_size``: None while the
    vocabulary's size is not known yet; ladder.py checks the bounds once it is)."""
    from ekd_edge.distill.copy_init import parse_init
    from ekd_edge.distill.seqkd import MIXES
    from ekd_edge.distill.teacher_cache import CACHED_LOSSES

    if stages and len(stages) != teachers:
        raise RecipeError(f"{where}: {len(stages)} [[stage]] tables for {teachers} teachers; give one per teacher or none")
    defaults = StageSettings()
    for k, s in enumerate(stages, start=1):
        at = f"{where} [[stage]] #{k}"
        if s.method not in METHODS:
            raise RecipeError(f"{at}: method must be one of {', '.join(METHODS)}, got {s.method!r}")
        if s.teacher_cache_k < 0:
            raise RecipeError(f"{at}: teacher_cache_k must be >= 0 (0 = online teacher)")
        if s.teacher_cache_k and s.method not in ("auto", "word_kd", "seq_kd"):
            raise RecipeError(f"{at}: teacher_cache_k only applies to method = \"word_kd\" or \"seq_kd\"; remove it")
        if s.teacher_cache_k and kd_loss not in CACHED_LOSSES:
            raise RecipeError(f"{at}: [distill] loss = {kd_loss!r} needs every logit, so it cannot use a top-k cache; "
                              f"set teacher_cache_k = 0 or loss to one of {', '.join(CACHED_LOSSES)}")
        if s.method == "speculative" and kd_loss == "mse":
            raise RecipeError(f"{at}: speculative KD compares distributions; set [distill] loss to a divergence, not \"mse\"")
        for name in ("seqkd_beams", "seqkd_nbest", "seqkd_mix"):
            if s.method not in ("seq_kd", "auto") and getattr(s, name) != getattr(defaults, name):
                raise RecipeError(f"{at}: {name} only applies to method = \"seq_kd\"; remove it or change the method")
        for name in ("spec_k", "spec_block", "spec_student_temp", "spec_teacher_temp"):
            if s.method != "speculative" and getattr(s, name) != getattr(defaults, name):
                raise RecipeError(f"{at}: {name} only applies to method = \"speculative\"; remove it or change the method")
        checks = [
            (s.seqkd_beams >= 1, "seqkd_beams must be >= 1"),
            (1 <= s.seqkd_nbest <= s.seqkd_beams, "seqkd_nbest must be in 1..seqkd_beams"),
            (s.seqkd_mix in MIXES, f"seqkd_mix must be one of {', '.join(MIXES)}"),
            (s.spec_k >= 1, "spec_k must be >= 1"),
            (s.spec_block >= 1, "spec_block must be >= 1"),
            (s.spec_student_temp > 0 and s.spec_teacher_temp > 0, "spec_student_temp and spec_teacher_temp must be > 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise RecipeError(f"{at}: {message}")
        if parse_init(s.init) is not None and k != 1:
            raise RecipeError(f"{at}: init = {s.init!r} only applies to stage 1 (later stages warm-start "
                              "from the previous student); remove it")
    if vocab_size is not None:
        check_vocabulary_bounds(stages, vocab_size, "[tokenizer] vocab_size", where)


@dataclass
class Recipe:
    name: str
    seed: int = 0
    data: DataSettings = field(default_factory=DataSettings)
    tokenizer: TokenizerSettings = field(default_factory=TokenizerSettings)
    training: TrainingSettings = field(default_factory=TrainingSettings)
    teachers: list[TeacherSettings] = field(default_factory=list)
    student: StudentSettings | None = field(default_factory=StudentSettings)   # None: a teachers-only recipe
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


def parse_recipe(data: dict, source: str = "<recipe>") -> Recipe:
    allowed_top = {"name", "seed", "teachers_only", "teacher", "stage", *SECTIONS}
    unknown = sorted(set(data) - allowed_top)
    if unknown:
        raise RecipeError(f"{source}: unknown top-level key(s) {', '.join(unknown)} (allowed: {', '.join(sorted(allowed_top))})")
    if not isinstance(data.get("name"), str) or not data["name"]:
        raise RecipeError(f"{source}: the recipe needs a name = \"...\"")
    sections = {key: build(cls, data.get(key, {}), f"{source} [{key}]", RecipeError) for key, cls in SECTIONS.items()}
    teachers_only = data.get("teachers_only", False)
    if not isinstance(teachers_only, bool):
        raise RecipeError(f"{source}: teachers_only must be true or false, got {teachers_only!r}")
    if teachers_only:
        if "student" in data or "stage" in data:
            raise RecipeError(f"{source}: a teachers_only recipe trains no student: remove [student] and [[stage]]")
        sections["student"] = None
    teacher_tables = data.get("teacher", [])
    if not isinstance(teacher_tables, list):
        raise RecipeError(f"{source}: teachers are an array of tables: write [[teacher]]")
    teachers = [build(TeacherSettings, t, f"{source} [[teacher]] #{i + 1}", RecipeError) for i, t in enumerate(teacher_tables)]
    for t in teachers:
        t.checkpoint = resolve_checkpoint(t.checkpoint, f"{source} teacher {t.name!r} checkpoint")
    stage_tables = data.get("stage", [])
    if not isinstance(stage_tables, list):
        raise RecipeError(f"{source}: stages are an array of tables: write [[stage]]")
    stages = [build(StageSettings, t, f"{source} [[stage]] #{i + 1}", RecipeError) for i, t in enumerate(stage_tables)]
    if sections["tokenizer"].from_ and "vocab_size" in data.get("tokenizer", {}):
        # the adopted tokenizer has the teacher's pieces (or the corpus's, trimmed): a size would be ignored
        raise RecipeError(f"{source} [tokenizer]: vocab_size and from = {sections['tokenizer'].from_!r} conflict: "
                          "an adopted tokenizer keeps the teacher's pieces; remove vocab_size (trim = true with "
                          "max_pieces bounds it)")
    seed = data.get("seed", 0)
    if not isinstance(seed, int):
        raise RecipeError(f"{source}: seed must be an integer, got {seed!r}")
    recipe = Recipe(name=data["name"], seed=seed, teachers=teachers, stages=stages, source=source, **sections)
    validate(recipe)
    return recipe


# Names become directory names (teachers/<name>/, runs/<recipe name>/): identifiers, never paths.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def with_lr(settings: TrainingSettings, lr: float) -> TrainingSettings:
    """The training settings with a per-model learning rate, when the recipe gives one (0 = keep)."""
    return replace(settings, lr=lr) if lr else settings


def check_name(name: str, key: str) -> None:
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name) or ".." in name:
        raise RecipeError(f"{key} {name!r}: a name is an identifier (letters, digits, '.', '_', '-'; starting "
                          "with a letter or digit; at most 64 characters), never a path")


def validate(recipe: Recipe) -> None:
    """Check values that types cannot, before any work starts: every message says what to change."""
    from ekd_edge.models.presets import resolve_size

    where = recipe.source
    check_name(recipe.name, f"{where}: name")
    for i, t in enumerate(recipe.teachers):
        check_name(t.name, f"{where} [[teacher]] #{i + 1} name")
    if recipe.student is not None:
        check_name(recipe.student.name, f"{where} [student] name")
    if not recipe.teachers:
        raise RecipeError(f"{where}: the ladder needs at least one [[teacher]]")
    names = [t.name for t in recipe.teachers]
    if len(set(names)) != len(names):
        raise RecipeError(f"{where}: teacher names must be unique, got {names}")
    for t in recipe.teachers:
        if not t.checkpoint and (t.src_lang or t.tgt_lang or t.prefix):
            raise RecipeError(f"{where}: teacher {t.name!r}: src_lang, tgt_lang and prefix steer a teacher given by "
                              "checkpoint; a teacher trained here needs none")
        if t.checkpoint and (t.size is not None or t.steps):
            raise RecipeError(f"{where}: teacher {t.name!r} gives a checkpoint, so it takes neither size nor steps")
        if not t.checkpoint and (t.size is None or t.steps <= 0):
            raise RecipeError(f"{where}: teacher {t.name!r} needs either checkpoint = \"DIR\" or a size and steps > 0")
    student = recipe.student or StudentSettings(name="")   # teachers only: nothing of the student to check
    if student.name in names:
        raise RecipeError(f"{where}: the student's name {recipe.student.name!r} is also a teacher's name")
    wrong = [b for b in student.baselines if b not in BASELINES]
    if wrong or len(set(map(str, student.baselines))) != len(student.baselines):
        raise RecipeError(f"{where} [student] baselines: expected distinct names from {', '.join(BASELINES)}, "
                          f"got {student.baselines!r}")
    d, tr, ds = recipe.data, recipe.training, recipe.distill
    checks = [
        (recipe.tokenizer.vocab_size >= 100, "[tokenizer] vocab_size must be at least 100"),
        (student.steps_per_stage > 0, "[student] steps_per_stage must be > 0"),
        (student.lr >= 0 and all(t.lr >= 0 for t in recipe.teachers), "lr overrides must be >= 0 (0 = [training] lr)"),
        (d.max_length >= 8, "[data] max_length must be at least 8 tokens"),
        (d.max_train_pairs >= 0, "[data] max_train_pairs must be >= 0 (0 = all)"),
        (d.valid_sentences > 0, "[data] valid_sentences must be > 0"),
        (d.empty_lines in ("error", "skip"), "[data] empty_lines must be \"error\" or \"skip\""),
        (d.long_pairs in ("drop", "truncate"), "[data] long_pairs must be \"drop\" or \"truncate\""),
        (tr.checkpoint_every >= 0, "[training] checkpoint_every must be >= 0 (0 = only at each model's end)"),
        (tr.batch_tokens >= 2 * d.max_length, "[training] batch_tokens must hold at least one pair of max_length"),
        (tr.lr > 0, "[training] lr must be > 0"),
        (tr.eval_max_new_tokens >= 1, "[training] eval_max_new_tokens must be >= 1"),
        (tr.threads >= 0, "[training] threads must be >= 0 (0 = torch's default)"),
        (tr.device in ("auto", "cpu", "cuda"), f"[training] device must be auto, cpu or cuda (got {tr.device!r})"),
        (tr.precision in ("auto", "fp32", "bf16"), f"[training] precision must be auto, fp32 or bf16 (got {tr.precision!r})"),
        (not (tr.precision == "bf16" and tr.device == "cpu"), "[training] precision = \"bf16\" needs device = \"cuda\" (or \"auto\" on a GPU machine)"),
        (all(t.steps >= 0 for t in recipe.teachers), "[[teacher]] steps must be >= 0"),
        (tr.warmup_steps >= 0, "[training] warmup_steps must be >= 0"),
        (0.0 <= tr.min_lr_ratio <= 1.0, "[training] min_lr_ratio must be in [0, 1]"),
        (0.0 <= tr.label_smoothing < 1.0, "[training] label_smoothing must be in [0, 1)"),
        (0.0 <= tr.dropout < 1.0, "[training] dropout must be in [0, 1)"),
        (tr.clip_norm >= 0, "[training] clip_norm must be >= 0 (0 = off)"),
        (ds.loss in KD_LOSSES, f"[distill] loss must be one of {', '.join(KD_LOSSES)}"),
        (0.0 <= ds.alpha <= 1.0, "[distill] alpha must be in [0, 1]"),
        (ds.temperature > 0, "[distill] temperature must be > 0"),
        (0.0 <= ds.jsd_beta <= 1.0, "[distill] jsd_beta must be in [0, 1]"),
        (ds.teacher_engine in TEACHER_ENGINES, f"[distill] teacher_engine must be one of {', '.join(TEACHER_ENGINES)}"),
    ]
    for ok, message in checks:
        if not ok:
            raise RecipeError(f"{where}: {message}")
    adopted = recipe.tokenizer.from_
    validate_stages(recipe.stages, len(recipe.teachers), ds.loss, None if adopted else recipe.tokenizer.vocab_size,
                    where)
    if (recipe.tokenizer.trim or recipe.tokenizer.max_pieces) and not adopted:
        raise RecipeError(f"{where} [tokenizer] trim/max_pieces: only apply to a tokenizer adopted from a teacher "
                          "(from = \"TEACHER\"); a tokenizer trained here already has vocab_size pieces")
    if recipe.tokenizer.max_pieces and (recipe.tokenizer.max_pieces < 100 or not recipe.tokenizer.trim):
        raise RecipeError(f"{where} [tokenizer] max_pieces: needs trim = true and at least 100 pieces "
                          f"(got {recipe.tokenizer.max_pieces})")
    if adopted and adopted not in {t.name for t in recipe.teachers if t.checkpoint}:
        raise RecipeError(f"{where} [tokenizer] from = {adopted!r}: must name a teacher given by checkpoint "
                          f"(teachers with a checkpoint: {', '.join(t.name for t in recipe.teachers if t.checkpoint) or 'none'})")
    dims = {}
    for i, t in enumerate(recipe.teachers):
        if t.size is not None:
            dims[t.name] = resolve_size(t.size, f"{where} [[teacher]] #{i + 1} size")
    if recipe.student is not None:
        resolve_size(recipe.student.size, f"{where} [student] size")
        if recipe.teachers[0].name in dims:
            check_copy_init(recipe, dims[recipe.teachers[0].name], f"teacher {recipe.teachers[0].name!r}")


PACKAGE_PREFIX = "package:"


def resolve_checkpoint(text: str, where: str) -> str:
    """A checkpoint path as given, or for ``package:REL`` the directory REL inside the installed package."""
    if not text.startswith(PACKAGE_PREFIX):
        return text
    rel = Path(text[len(PACKAGE_PREFIX):])
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        raise RecipeError(f"{where}: {text!r} must name a folder inside the package, like \"package:teachers/NAME\"")
    return str(Path(str(resources.files("ekd_edge"))) / rel)


def read_text_file(path: Path, what: str) -> str:
    """A UTF-8 text file, or one line saying why it cannot be read."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise RecipeError(f"{path}: cannot read the {what} ({exc.strerror or exc})") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise RecipeError(f"{path}:{line}: the {what} is not UTF-8 text (byte 0x{raw[exc.start]:02x})") from None


def check_copy_init(recipe: Recipe, teacher_dims: dict, teacher_label: str) -> None:
    """Stage 1's copy-init (if any) must fit: same width as the first teacher, a valid layer map."""
    from ekd_edge.distill.copy_init import layer_map, parse_init
    from ekd_edge.models.presets import resolve_size

    first = recipe.stage(1)
    mapping = parse_init(first.init)
    if mapping is None:
        return
    where = recipe.source
    student_dims = resolve_size(recipe.student.size, f"{where} [student] size")
    differ = [k for k in ("d_model", "ffn_dim", "attention_heads") if teacher_dims[k] != student_dims[k]]
    if differ:
        raise RecipeError(f"{where} [[stage]] #1 init = {first.init!r}: copy-init needs a student as wide as "
                          f"{teacher_label}; they differ in {', '.join(differ)}")
    for side in ("encoder_layers", "decoder_layers"):
        try:
            layer_map(mapping, teacher_dims[side], student_dims[side])
        except RecipeError as exc:
            raise RecipeError(f"{where} [[stage]] #1 ({side}): {exc}") from None


def packaged_recipes() -> list[str]:
    folder = resources.files("ekd_edge") / "recipes"
    return sorted(p.name.removesuffix(".toml") for p in folder.iterdir() if p.name.endswith(".toml"))


def load_recipe(name_or_path: str | Path) -> Recipe:
    """A recipe file, or the name of a recipe shipped with the package (``demo``)."""
    path = Path(name_or_path)
    if path.is_file():
        text, source = read_text_file(path, "recipe"), str(path)
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
        return read_text_file(path, "recipe")
    return (resources.files("ekd_edge") / "recipes" / f"{name_or_path}.toml").read_text()
