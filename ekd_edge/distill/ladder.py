"""Evolving knowledge distillation: one student climbs a ladder of teachers of growing capacity.

    tokenizer ─► teachers T1 < T2 < … < Tn (trained here, or given as checkpoints)
    student S0 (random) ─KD from T1─► S1 ─KD from T2─► S2 … ─KD from Tn─► Sn

Stage k warm-starts from stage k−1's student, so each stage only has to close the gap to a
teacher a little stronger than the last one. Every finished model is saved with metrics.json;
a model whose directory already holds metrics.json is never trained again, so an interrupted
run picks up at the first unfinished model.

Run directory:
    recipe.toml · run.json · tokenizer/ · teachers/<name>/ · students/stage-<k>/
    cache/ (tokenised corpus, teacher caches, seq-KD targets: reused on restart)
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

from ekd_edge.console import console
from ekd_edge.data.corpus import load_corpus
from ekd_edge.data.tokenizer import load_tokenizer, train_tokenizer, vocab_fingerprint
from ekd_edge.distill import distributed
from ekd_edge.distill.batches import BatchStream, tokenize_to_disk, truncate_pairs  # noqa: F401 (re-exported)
from ekd_edge.distill.checkpointing import ProgressFile
from ekd_edge.distill.methods import plan_stage, run_baselines
from ekd_edge.distill.recipe import Recipe
from ekd_edge.distill.trainer import evaluate, train
from ekd_edge.errors import EkdError
from ekd_edge.models import build_model, count_parameters, load_model, save_model
from ekd_edge.models.checkpoint import check_checkpoint, check_same_vocab


def with_lr(settings, lr: float):
    """The training settings with a per-model learning rate, when the recipe gives one."""
    return replace(settings, lr=lr) if lr else settings


def is_done(model_dir: Path) -> bool:
    return (model_dir / "metrics.json").is_file() and (model_dir / "model.safetensors").is_file()


def prepare_run_dir(run_dir: Path, recipe: Recipe, recipe_text: str, write: bool = True) -> None:
    """Create the run directory, or check that an existing one belongs to the same recipe."""
    marker = run_dir / "recipe.toml"
    if run_dir.exists() and any(run_dir.iterdir()):
        if not marker.is_file():
            raise EkdError(f"{run_dir}: exists and holds files that are not an ekd-edge run; choose another --run-dir")
        if marker.read_text() != recipe_text:
            raise EkdError(f"{run_dir}: holds a run of a different recipe; choose another --run-dir or delete it")
    if write and not marker.is_file():  # an existing marker holds this very text: leave it untouched
        run_dir.mkdir(parents=True, exist_ok=True)
        tmp = run_dir / ".recipe.toml.tmp"
        tmp.write_text(recipe_text)
        tmp.replace(marker)


def run_recipe(recipe: Recipe, run_dir: str | Path, recipe_text: str, resume: bool = False,
               baselines: bool = False) -> dict:
    """Train every model of the recipe that is not finished yet; return the run summary.

    A model interrupted mid-training continues from its progress checkpoint (checkpointing.py);
    ``resume`` only insists that ``run_dir`` already holds this recipe's run. Under torchrun every
    rank runs this function; rank 0 alone writes (distributed.py).
    """
    run_dir = Path(run_dir)
    ctx = distributed.context()
    if resume and not (run_dir / "recipe.toml").is_file():
        raise EkdError(f"{run_dir}: nothing to resume (no recipe.toml); run without --resume to start")
    prepare_run_dir(run_dir, recipe, recipe_text, write=False)  # refuse a foreign directory first
    started = time.perf_counter()
    if recipe.training.threads:
        torch.set_num_threads(recipe.training.threads)

    # Data: fail on bad input before any training starts.
    corpus = load_corpus(recipe.data.corpus, recipe.data.src_lang or None, recipe.data.tgt_lang or None)
    train_text = corpus.split("train", empty=recipe.data.empty_lines).head(recipe.data.max_train_pairs or None)
    valid = corpus.split("valid", empty=recipe.data.empty_lines).head(recipe.data.valid_sentences)
    console.log(f"data: {corpus.name} train {len(train_text):,} pairs"
                + (f" ({train_text.skipped_empty} empty skipped)" if train_text.skipped_empty else "")
                + f", valid subset {len(valid)}")
    prepare_run_dir(run_dir, recipe, recipe_text, write=ctx.is_main)  # the data is sound: now write
    distributed.barrier()

    tokenizer_dir = run_dir / "tokenizer"
    if ctx.is_main and not (tokenizer_dir / "vocab.json").is_file():
        with console.status("training the joint SentencePiece tokenizer"):
            tmp = run_dir / ".tokenizer.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            train_tokenizer(train_text.src + train_text.tgt, tmp, recipe.tokenizer.vocab_size)
            tmp.rename(tokenizer_dir)
    distributed.barrier()
    tokenizer = load_tokenizer(tokenizer_dir)
    vocab_size = len(tokenizer)

    # Given teachers must speak the run's vocabulary: checked now, not after hours of training.
    for teacher in recipe.teachers:
        if teacher.checkpoint:
            check_checkpoint(teacher.checkpoint)
            check_same_vocab(teacher.checkpoint, tokenizer_dir)

    # On disk, memory-mapped (batches.py): a large corpus never sits in Python lists; reused on restart.
    truncate_to = recipe.data.max_length if recipe.data.long_pairs == "truncate" else None
    pairs = tokenize_to_disk(tokenizer, train_text.src, train_text.tgt, long_pair_limit(recipe), run_dir / "cache",
                             truncate_to=truncate_to, description=f"tokenizing {len(train_text):,} training pairs")
    what = "truncated" if recipe.data.long_pairs == "truncate" else "dropped"
    console.log(f"tokenized: {len(pairs):,} pairs, {pairs.target_tokens():,} target tokens"
                f" ({pairs.dropped_long} longer than {recipe.data.max_length} tokens {what})")
    stream = BatchStream(pairs, recipe.training.batch_tokens, recipe.seed)
    dropout = recipe.training.dropout

    def finish(model, out_dir: Path, role: str, result, extra: dict) -> dict:
        if not ctx.is_main:  # rank 0 evaluates and writes; the others wait for the checkpoint
            distributed.barrier()
            return {}
        with console.status(f"{out_dir.name}: translating {len(valid)} validation sentences"):
            metrics = evaluate(model, tokenizer, valid.src, valid.tgt, recipe.training.eval_max_new_tokens)
        record = {
            "role": role,
            "params": count_parameters(model),
            "steps": result.steps if result else 0,
            "wall_s": round(result.wall_s, 1) if result else 0.0,
            "train_tokens_per_s": round(result.tokens_per_s, 1) if result else None,
            "final_train_loss": round(result.final_loss, 4) if result else None,
            "valid": metrics,
            "vocab": vocab_fingerprint(tokenizer_dir),
            **extra,
        }
        save_model(model, out_dir, tokenizer_dir=tokenizer_dir, extra=record)
        ProgressFile.for_model(out_dir, role, 0).remove()  # finished: metrics.json now marks it done
        console.log(f"{out_dir.relative_to(run_dir)}: valid BLEU {metrics['bleu']:.2f} chrF {metrics['chrf']:.2f}"
                    f" ({record['params']:,} params, {record['wall_s']} s)")
        distributed.barrier()
        return record

    summary: dict = {"recipe": recipe.name, "teachers": {}, "stages": {}}
    teacher_dirs: list[Path] = []
    for i, teacher in enumerate(recipe.teachers):
        out_dir = run_dir / "teachers" / teacher.name
        teacher_dirs.append(Path(teacher.checkpoint) if teacher.checkpoint else out_dir)
        if teacher.checkpoint or is_done(out_dir):
            continue
        model = build_model(teacher.size, vocab_size, seed=recipe.seed + i, dropout=dropout)
        result = train(model, stream, teacher.steps, with_lr(recipe.training, teacher.lr),
                       description=f"teacher {teacher.name}", seed=recipe.seed + i,
                       progress=ProgressFile.for_model(out_dir, "teacher", teacher.steps),
                       checkpoint_every=recipe.training.checkpoint_every)
        finish(model, out_dir, "teacher", result, {"size": teacher.size})

    previous: Path | None = None
    for k, (teacher, teacher_dir) in enumerate(zip(recipe.teachers, teacher_dirs), start=1):
        out_dir = run_dir / "students" / f"stage-{k}"
        if not is_done(out_dir):
            if previous is None:
                student = build_model(recipe.student.size, vocab_size, seed=recipe.seed + 1000, dropout=dropout)
            else:
                student = load_model(previous, expected_vocab=tokenizer_dir)
            teacher_model = load_model(teacher_dir, expected_vocab=tokenizer_dir)
            plan = plan_stage(recipe.stage(k), k, recipe, student, teacher_model, teacher_dir, stream, tokenizer,
                              train_text.src, train_text.tgt, run_dir)
            result = train(student, plan.stream, recipe.student.steps_per_stage,
                           with_lr(recipe.training, recipe.student.lr), teacher=plan.teacher, kd_term=plan.kd_term,
                           distill=recipe.distill, description=f"stage {k} ← {teacher.name} ({plan.notes['method']})",
                           first_batch=plan.first_batch, seed=recipe.seed + 1000 + k,
                           progress=ProgressFile.for_model(out_dir, "student", recipe.student.steps_per_stage),
                           checkpoint_every=recipe.training.checkpoint_every)
            finish(student, out_dir, "student", result,
                   {"stage": k, "teacher": teacher.name, "warm_start": str(previous) if previous else None,
                    "distill": asdict(recipe.distill), "stage_method": plan.notes})
        previous = out_dir

    if baselines:  # CE-only and direct-KD students with the ladder's total steps (methods.py)
        summary["baselines"] = run_baselines(recipe, run_dir, stream, vocab_size, teacher_dirs[-1], tokenizer_dir, finish)

    for teacher, teacher_dir in zip(recipe.teachers, teacher_dirs):
        summary["teachers"][teacher.name] = _read_metrics(teacher_dir)
    for k in range(1, len(recipe.teachers) + 1):
        summary["stages"][f"stage-{k}"] = _read_metrics(run_dir / "students" / f"stage-{k}")
    summary["wall_s_this_invocation"] = round(time.perf_counter() - started, 1)
    if ctx.is_main:
        tmp = run_dir / "run.json.tmp"
        tmp.write_text(json.dumps(summary, indent=2))
        tmp.replace(run_dir / "run.json")
    return summary


def long_pair_limit(recipe: Recipe) -> int:
    """Token limit handed to tokenize_pairs: pairs over it are dropped there ("drop" policy)."""
    return recipe.data.max_length if recipe.data.long_pairs == "drop" else 1 << 30


def _read_metrics(model_dir: Path) -> dict:
    path = model_dir / "metrics.json"
    record = json.loads(path.read_text()) if path.is_file() else {}
    record["path"] = str(model_dir)
    return record


def model_dirs(run_dir: str | Path) -> list[tuple[str, str, int | None, Path]]:
    """(name, role, stage, path) of every finished model of a run, teachers first."""
    run_dir = Path(run_dir)
    summary = json.loads((run_dir / "run.json").read_text())
    out = [(name, "teacher", None, Path(m["path"])) for name, m in summary["teachers"].items()]
    out += [(name, "student", int(name.split("-")[1]), Path(m["path"])) for name, m in summary["stages"].items()]
    return out
