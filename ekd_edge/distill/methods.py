"""Per-stage distillation methods: what a recipe's ``[[stage]]`` tables select, and how a stage runs.

    [[stage]]                         # one per teacher, in ladder order; absent = all defaults
    method = "auto"                   # "auto" | "word_kd" | "seq_kd" | "speculative" | "ce"
    teacher_cache_k = 0               # word_kd / seq_kd: > 0 = offline top-k teacher cache
    seqkd_beams = 4                   # seq_kd: beam size of the teacher's decoding
    seqkd_nbest = 1                   # seq_kd: > 1 = keep the n-best entry closest to the reference
    seqkd_mix = "distilled"           # seq_kd: "distilled" or "both" (with the references)
    spec_k = 25                       # speculative: teacher top-K that accepts a student token
    spec_block = 5                    # speculative: tokens the student drafts per block
    spec_student_temp = 1.0
    spec_teacher_temp = 1.0
    init = "warm"                     # stage 1 only: "copy:every_other" | "copy:first" | "copy:0,2"

auto      word_kd for a teacher that speaks the student's vocabulary (or one it was made from),
          seq_kd for a teacher with its own tokenizer (models/teacher.py: native/bridged/foreign)
word_kd   (1 − α)·CE + α·KD(teacher ‖ student) on the references ([distill] loss, α, T, β)
seq_kd    the same loss on the teacher's beam translations of the training sources
speculative  (1 − α)·CE on references + α·KD on student-drafted, teacher-verified sequences
ce        no teacher at all: label-smoothed cross-entropy only
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from ekd_edge.console import console
from ekd_edge.distill.recipe import BASELINES, WORD_LEVEL, StageSettings
from ekd_edge.errors import RecipeError


@dataclass
class StagePlan:
    """What train() needs for one stage: data stream, online teacher or a KD term, and notes for metrics."""
    stream: object
    teacher: object = None
    kd_term: object = None
    first_batch: int = 0
    notes: dict = field(default_factory=dict)


def resolve_stage(settings: StageSettings, kind: str, k: int, teacher_name: str, where: str) -> StageSettings:
    """The stage's settings with ``auto`` decided by the teacher's kind; combinations that cannot
    work for that kind of teacher are one-line errors saying why and what to write instead."""
    at = f"{where} [[stage]] #{k} (teacher {teacher_name!r})"
    method = settings.method
    if method == "auto":
        method = "seq_kd" if kind == "foreign" else "word_kd"
        defaults = StageSettings()
        tuned = [n for n in ("seqkd_beams", "seqkd_nbest", "seqkd_mix") if getattr(settings, n) != getattr(defaults, n)]
        if method == "word_kd" and tuned:
            raise RecipeError(f"{at}: method \"auto\" is word_kd for this teacher, so {', '.join(tuned)} would be "
                              "ignored; write method = \"seq_kd\" or remove them")
    if kind == "foreign" and method in WORD_LEVEL:
        raise RecipeError(f"{at}: method {method!r} compares next-token distributions, but this teacher has its own "
                          "tokenizer; use method = \"seq_kd\" (or \"auto\"), or make the student speak it "
                          f"with [tokenizer] from = {teacher_name!r}")
    if kind == "bridged" and method == "speculative":
        raise RecipeError(f"{at}: speculative KD needs a teacher of the student's very ids; this one is reached "
                          "through an id map: use word_kd or seq_kd")
    if kind != "native" and settings.teacher_cache_k:
        raise RecipeError(f"{at}: teacher_cache_k stores the teacher's top-k over the student's ids, which this "
                          "teacher does not use; remove it")
    if kind != "native" and settings.init != "warm":
        raise RecipeError(f"{at}: init = {settings.init!r} copies the teacher's weights, embeddings included, so it "
                          "needs a teacher of the student's vocabulary and family; remove it")
    return replace(settings, method=method)


def plan_stage(settings: StageSettings, k: int, recipe, student, teacher, stream, tokenizer,
               train_src: list[str], train_tgt: list[str], cache_root: Path, vocab_map: dict | None = None,
               steps: int | None = None) -> StagePlan:
    """Set a stage up: build or reuse caches and distilled data, choose the KD signal, copy-init.

    ``teacher`` is a models.teacher.Teacher; ``settings`` come resolved (resolve_stage). ``steps`` is
    the stage's length (the recipe's steps_per_stage unless given): a seq-KD stage decodes only the
    sources so many steps train on. A bridged
    teacher teaches word-level through ``vocab_map`` (the run tokenizer's vocab_map.json); a
    foreign one only through its translations.
    """
    from ekd_edge.distill.batches import BatchStream

    ds = recipe.distill
    notes: dict = {"method": settings.method, "teacher_kind": teacher.kind}
    first_batch = (k - 1) * recipe.student.steps_per_stage
    mapping = None
    if settings.init != "warm":
        from ekd_edge.distill.copy_init import copy_init, parse_init

        mapping = parse_init(settings.init)
    if mapping is not None:
        notes["copy_init"] = copy_init(student, teacher.model, mapping)
    if settings.method == "ce":
        return StagePlan(stream, first_batch=first_batch, notes=notes)
    if settings.method == "speculative":
        from ekd_edge.distill.speculative import SpeculativeSettings, SpeculativeTeacher

        spec = SpeculativeSettings(settings.spec_k, settings.spec_block, settings.spec_student_temp,
                                   settings.spec_teacher_temp)
        term = SpeculativeTeacher(teacher.model, spec, ds.loss, ds.temperature, ds.jsd_beta, seed=recipe.seed + k)
        notes["speculative"] = spec.__dict__
        return StagePlan(stream, kd_term=term, first_batch=first_batch, notes=notes)
    if settings.method == "seq_kd":
        from ekd_edge.distill.seqkd import SeqKDSettings, distill_targets, distilled_pairs, stage_sources
        from ekd_edge.distill.teacher_engine import choose_engine, is_prompted

        engine, why = choose_engine(ds.teacher_engine, teacher.family, is_prompted(teacher),
                                    where=f"{recipe.source} stage {k}")
        if why:
            console.log(f"stage {k}: teacher {teacher.name or teacher.directory} decodes through PyTorch: {why}")
        seq = SeqKDSettings(beams=settings.seqkd_beams, nbest=settings.seqkd_nbest, mix=settings.seqkd_mix,
                            max_new_tokens=recipe.data.max_length, engine=engine)
        chosen = stage_sources(stream, first_batch, steps or recipe.student.steps_per_stage, len(train_src),
                               seed=recipe.seed + k)
        if chosen is not None:   # a stage shorter than an epoch: only as many sources as it trains on
            train_src, train_tgt = [train_src[int(i)] for i in chosen], [train_tgt[int(i)] for i in chosen]
        began = time.perf_counter()
        data = distill_targets(teacher, teacher.directory, tokenizer, train_src, train_tgt, cache_root, seq,
                               description=f"stage {k}: seq-KD decoding")
        decode_s = time.perf_counter() - began
        pairs = distilled_pairs(tokenizer, train_src, train_tgt, data.targets, seq.mix, recipe.data.max_length,
                                cache_root, truncate=recipe.data.long_pairs == "truncate")
        if not len(pairs):
            raise RecipeError(f"{recipe.source} stage {k}: none of the teacher's {len(data.targets):,} translations "
                              f"fits [data] max_length {recipe.data.max_length} once tokenised for the student; "
                              "raise max_length or set long_pairs = \"truncate\"")
        stream = BatchStream(pairs, recipe.training.batch_tokens, recipe.seed + k)
        first_batch = 0
        notes["seqkd"] = {"beams": seq.beams, "nbest": seq.nbest, "mix": seq.mix, "pairs": len(pairs), "engine": engine,
                          "sources": len(train_src), "sampled": chosen is not None, "decode_s": round(decode_s, 2),
                          "decoded_now": data.decoded_now, "cache": str(data.directory)}
        if teacher.kind == "foreign":   # its distributions are over another vocabulary: CE on its translations
            notes["word_level"] = False
            return StagePlan(stream, first_batch=first_batch, notes=notes)
    if settings.teacher_cache_k:
        from ekd_edge.distill.teacher_cache import CachedTeacher
        from ekd_edge.distill.teacher_shards import open_teacher_cache

        cache = open_teacher_cache(teacher.model, teacher.directory, stream, cache_root, settings.teacher_cache_k,
                                   ds.temperature, first_batch, recipe.student.steps_per_stage,
                                   description=f"stage {k}: teacher top-{settings.teacher_cache_k}")
        # a sharded cache's record is live (built as the stage goes): saved with the stage, it says how
        # many pairs the teacher saw
        notes["teacher_cache"] = cache.record
        return StagePlan(stream, kd_term=CachedTeacher(cache, stream, ds.loss, ds.temperature, ds.jsd_beta),
                         first_batch=first_batch, notes=notes)
    if teacher.kind == "bridged":
        from ekd_edge.data.tokenizer import UNK_ID
        from ekd_edge.distill.vocab_bridge import BridgedTeacher

        term = BridgedTeacher(teacher, vocab_map["teacher_ids"], UNK_ID, ds.loss, ds.temperature, ds.jsd_beta)
        notes["vocab_map"] = {"teacher_vocab": vocab_map["teacher_vocab"], "student_vocab": vocab_map["student_vocab"]}
        return StagePlan(stream, kd_term=term, first_batch=first_batch, notes=notes)
    return StagePlan(stream, teacher=teacher.model, first_batch=first_batch, notes=notes)


def run_baselines(recipe, run_dir: Path, stream, vocab_size: int, top_teacher_dir: Path, tokenizer_dir: Path,
                  finish, names=BASELINES, cache_root: Path | None = None, top_plan=None) -> None:
    """The two students EKD must beat, each trained for the ladder's total student steps from scratch:
    ``ce-only`` (no teacher) and ``direct-kd`` (word-level KD from the strongest teacher alone).

    ``top_plan(student)`` (a StagePlan) replaces word-level KD for a top teacher that does not speak
    the student's vocabulary: direct-kd then learns from it as the last stage does (its seq-KD
    translations, or KD through the id map), still alone and for the ladder's total steps.

    ``finish(model, out_dir, role, result, extra)`` is the ladder's evaluate-and-save step, so the
    baselines are scored exactly like the EKD stages. Finished baselines are never retrained.
    """
    from ekd_edge.distill.checkpointing import ProgressFile, is_done
    from ekd_edge.distill.recipe import with_lr
    from ekd_edge.distill.trainer import train
    from ekd_edge.models import build_model, load_model

    total = recipe.student.steps_per_stage * len(recipe.teachers)
    for name in names:
        out_dir = Path(run_dir) / "baselines" / name
        if is_done(out_dir):
            continue
        student = build_model(recipe.student.size, vocab_size, seed=recipe.seed + 1000, dropout=recipe.training.dropout)
        batches, notes = stream, None
        if name == "direct-kd" and top_plan is not None:
            plan = top_plan(student)
            batches, teacher, kd_term, cache_k, notes = plan.stream, plan.teacher, plan.kd_term, 0, plan.notes
        else:
            teacher = load_model(top_teacher_dir, expected_vocab=tokenizer_dir) if name == "direct-kd" else None
            kd_term, cache_k = None, recipe.stage(len(recipe.teachers)).teacher_cache_k
        if teacher is not None and cache_k:   # the same KD signal as the last EKD stage: its top-k cache
            from ekd_edge.distill.teacher_cache import CachedTeacher
            from ekd_edge.distill.teacher_shards import open_teacher_cache

            ds = recipe.distill
            cache = open_teacher_cache(teacher, top_teacher_dir, stream, cache_root or Path(run_dir) / "cache", cache_k,
                                       ds.temperature, 0, total, description=f"baseline {name}: teacher top-{cache_k}")
            kd_term, teacher = CachedTeacher(cache, stream, ds.loss, ds.temperature, ds.jsd_beta), None
        result = train(student, batches, total, with_lr(recipe.training, recipe.student.lr), teacher=teacher,
                       kd_term=kd_term, distill=recipe.distill if name == "direct-kd" else None,
                       description=f"baseline {name}",
                       seed=recipe.seed + 2000, progress=ProgressFile.for_model(out_dir, "baseline", total),
                       checkpoint_every=recipe.training.checkpoint_every)
        finish(student, out_dir, "baseline", result,
               {"baseline": name, "teacher": str(top_teacher_dir) if name == "direct-kd" else None,
                "teacher_cache_k": cache_k if name == "direct-kd" else None,
                **({"stage_method": notes} if notes is not None else {})})
