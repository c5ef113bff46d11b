"""Evolving knowledge distillation: one student climbs a ladder of teachers of growing capacity.

    tokenizer ─► teachers T1 < T2 < … < Tn (trained here, or given as checkpoints)
    student S0 (random) ─KD from T1─► S1 ─KD from T2─► S2 … ─KD from Tn─► Sn

Stage k warm-starts from stage k−1's student, so each stage only has to close the gap to a
teacher a little stronger than the last one. Every finished model is saved with metrics.json;
a model whose directory already holds metrics.json is never trained again, so an interrupted
run picks up at the first unfinished model.

Run directory:
    recipe.toml · run.json · distill.log · tokenizer/ · teachers/<name>/ · students/stage-<k>/
    baselines/<name>/ · cache/ (tokenised corpus, teacher caches, seq-KD targets: reused on restart)

Baselines (the recipe's ``[student] baselines``, or all of them with ``--baselines``) train after
the ladder, or with ``jobs = 2`` at the same time in a second process (``distill --only NAME`` on
the same run directory, which shares the parent's lock): on a 2-core machine the comparison then
costs no extra wall time.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import asdict, replace
from pathlib import Path

import torch

from ekd_edge.console import console, log_to
from ekd_edge.data.corpus import load_corpus
from ekd_edge.data.tokenizer import load_tokenizer, tokenizer_sentences, train_tokenizer, vocab_fingerprint
from ekd_edge.distill import distributed
from ekd_edge.distill.batches import BatchStream, tokenize_to_disk
from ekd_edge.distill.checkpointing import ProgressFile, is_done
from ekd_edge.data.adopt import adopt_tokenizer, read_vocab_map
from ekd_edge.distill.methods import plan_stage, resolve_stage, run_baselines
from ekd_edge.distill.recipe import BASELINES, Recipe, check_copy_init, with_lr
from ekd_edge.distill.trainer import evaluate, train
from ekd_edge.distill.identity import check_run_identity, check_tokenizer, data_identity, teacher_identity
from ekd_edge.errors import CorpusError, EkdError, RecipeError
from ekd_edge.files import LOCK_NAME, RunLock, replace_dir, staged, write_json_atomic, write_text_atomic
from ekd_edge.models import build_model, count_parameters, load_model, save_model
from ekd_edge.models.teacher import (check_teacher_checkpoint, load_teacher, load_teacher_tokenizer, teacher_kind,
                                     teacher_prompt, weights_digest)


def same_recipe(kept_text: str, recipe_text: str) -> bool:
    """The same settings, whatever the comments and layout: editing a recipe's prose must not orphan its runs."""
    if kept_text == recipe_text:
        return True
    try:
        return tomllib.loads(kept_text) == tomllib.loads(recipe_text)
    except tomllib.TOMLDecodeError:
        return False


def prepare_run_dir(run_dir: Path, recipe: Recipe, recipe_text: str, write: bool = True) -> None:
    """Create the run directory, or check that an existing one belongs to the same recipe."""
    marker = run_dir / "recipe.toml"
    # the lock, the log and the cache (the training text is checked into it before the run is set
    # up) come before recipe.toml marks a directory as a run
    if run_dir.exists() and any(p.name not in (LOCK_NAME, "distill.log", "cache") for p in run_dir.iterdir()):
        if not marker.is_file():
            raise EkdError(f"{run_dir}: exists and holds files that are not an ekd-edge run; choose another --run-dir")
        if not same_recipe(marker.read_text(), recipe_text):
            raise EkdError(f"{run_dir}: holds a run of a different recipe; choose another --run-dir or delete it")
    if write and not marker.is_file():  # an existing marker holds these very settings: leave it untouched
        write_text_atomic(marker, recipe_text)


LOCK_DELEGATE_ENV = "EKD_EDGE_LOCK_DELEGATE"   # set for a second job: the pid of the parent holding the lock


def run_recipe(recipe: Recipe, run_dir: str | Path, recipe_text: str, resume: bool = False,
               baselines: bool = False, only: list[str] | None = None, jobs: int = 1,
               cache_dir: str | Path | None = None) -> dict:
    """Train every model of the recipe that is not finished yet; return the run summary.

    A model interrupted mid-training continues from its progress checkpoint (checkpointing.py);
    ``resume`` only insists that ``run_dir`` already holds this recipe's run. ``only`` names the
    teachers or baselines to train now (nothing else is trained): teachers of one run on several
    machines. ``baselines`` adds every baseline to the recipe's own; ``jobs = 2`` trains them in a
    second process beside the ladder. ``cache_dir`` (default RUN/cache) holds the tokenised corpus,
    teacher caches and seq-KD targets; runs that share one reuse each other's (all are keyed by
    content). Under torchrun every rank runs this function; rank 0 alone writes (distributed.py).
    """
    run_dir = Path(run_dir)
    distributed.prefer_device(recipe.training.device)
    distributed.prefer_precision(recipe.training.precision)
    ctx = distributed.context()
    choices = [t.name for t in recipe.teachers] + (list(BASELINES) if recipe.student is not None else [])
    unknown = sorted(set(only or ()) - set(choices))
    if unknown:
        raise EkdError(f"--only: no teacher or baseline named {', '.join(unknown)} in {recipe.source}"
                       f" (choose from: {', '.join(choices)})")
    if jobs < 1:
        raise EkdError(f"--jobs must be at least 1, got {jobs}")
    wanted = [] if recipe.student is None else [b for b in BASELINES if b in recipe.student.baselines or baselines]
    if resume and not (run_dir / "recipe.toml").is_file():
        raise EkdError(f"{run_dir}: nothing to resume (no recipe.toml); run without --resume to start")
    prepare_run_dir(run_dir, recipe, recipe_text, write=False)  # refuse a foreign directory first
    if not ctx.is_main:
        return _run_locked(recipe, run_dir, recipe_text, wanted, only, jobs, cache_dir)
    # One process per run directory: a second one would train the same model from the same progress
    # file. The one exception is this run's own second job, started by the lock's holder.
    created = not run_dir.exists()
    delegate = os.environ.get(LOCK_DELEGATE_ENV)
    try:
        with RunLock(run_dir, on_stale=console.log, delegate_of=int(delegate) if delegate else None), \
                log_to(run_dir / "distill.log"):
            return _run_locked(recipe, run_dir, recipe_text, wanted, only, jobs, cache_dir)
    except EkdError:
        # Refused before any model trained (e.g. no pair fits max_length): a directory this call
        # created holds only its own bookkeeping, so the corrected recipe can start afresh there.
        if created and not any((run_dir / part).exists() for part in ("teachers", "students", "baselines")):
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    finally:  # a run refused before it wrote anything leaves no directory behind
        if created and run_dir.is_dir() and all(p.name in (LOCK_NAME, "distill.log") for p in run_dir.iterdir()):
            shutil.rmtree(run_dir, ignore_errors=True)


def _run_locked(recipe: Recipe, run_dir: Path, recipe_text: str, baselines: list[str], only: list[str] | None,
                jobs: int, cache_dir: str | Path | None) -> dict:
    ctx = distributed.context()
    started = time.perf_counter()
    cache_root = Path(cache_dir) if cache_dir else run_dir / "cache"
    threads = recipe.training.threads
    if jobs > 1 and not threads:   # the jobs share the cores instead of each taking all of them
        threads = max(1, len(os.sched_getaffinity(0)) // jobs)
    if threads:
        torch.set_num_threads(threads)

    # Data: fail on bad input before any training starts.
    corpus = load_corpus(recipe.data.corpus, recipe.data.src_lang or None, recipe.data.tgt_lang or None)
    for i, teacher in enumerate(recipe.teachers):   # given teachers are checked before anything is written
        if teacher.checkpoint:
            check_teacher_checkpoint(teacher.checkpoint, f"{recipe.source} [[teacher]] #{i + 1} ({teacher.name!r})")
    current = {"recipe": recipe.name, "data": data_identity(corpus), "teachers": teacher_identity(recipe.teachers)}
    identity = check_run_identity(run_dir, current, write=False)
    valid = corpus.split("valid", empty=recipe.data.empty_lines).head(recipe.data.valid_sentences)
    # The training split streams into a store on disk (data/text_store.py): every line checked as
    # load_parallel checks it, none held in memory; keyed by the files' contents, reused on restart.
    train_text = train_store(corpus, current["data"], recipe, cache_root)
    for split, text in (("train", train_text), ("valid", valid)):
        if not len(text):
            raise CorpusError(f"{corpus.files[split][0]}: no sentence pairs in the {split} split "
                              f"(the file is empty{' or every pair was empty' if text.skipped_empty else ''})")
    console.log(f"data: {corpus.name} train {len(train_text):,} pairs"
                + (f" ({train_text.skipped_empty} empty skipped)" if train_text.skipped_empty else "")
                + f", valid subset {len(valid)}")

    # The tokenizer is made before anything is written, and everything that depends on it is checked
    # against it: a vocabulary the corpus cannot fill, a teacher's language codes, a stage that cannot
    # work with its teacher's vocabulary are recipe mistakes the user fixes and reruns, with no
    # half-made run directory in the way.
    tokenizer_dir = run_dir / "tokenizer"
    with distributed.waiting_for_main(), tempfile.TemporaryDirectory(prefix="ekd-edge-tokenizer.") as scratch:
        fresh = Path(scratch) / "tokenizer"
        if ctx.is_main and not (tokenizer_dir / "vocab.json").is_file():
            adopted = {t.name: t.checkpoint for t in recipe.teachers}.get(recipe.tokenizer.from_)
            if adopted:   # the student speaks a given teacher's vocabulary (data/adopt.py)
                settings = recipe.tokenizer
                made = adopt_tokenizer(adopted, load_teacher_tokenizer(adopted), fresh, train_text.src, train_text.tgt,
                                       trim=settings.trim, max_pieces=settings.max_pieces,
                                       teacher_digest=weights_digest(adopted))
                console.log(f"tokenizer: adopted from teacher {settings.from_!r} ({adopted}): "
                            f"{made['teacher_vocab']:,} → {made['student_vocab']:,} ids"
                            + (" (trimmed to the corpus)" if settings.trim else ""))
            else:
                with console.status("training the joint SentencePiece tokenizer"):
                    train_tokenizer(tokenizer_sentences(train_text.src, train_text.tgt), fresh,
                                    recipe.tokenizer.vocab_size)
        if ctx.is_main:
            kinds, stage_settings = check_ladder(recipe, fresh if fresh.is_dir() else tokenizer_dir)
        prepare_run_dir(run_dir, recipe, recipe_text, write=ctx.is_main)  # the inputs are sound: now write
        identity = check_run_identity(run_dir, current, write=ctx.is_main)
        if fresh.is_dir():
            with staged(tokenizer_dir) as tmp:
                shutil.copytree(fresh, tmp, dirs_exist_ok=True)
                replace_dir(tmp, tokenizer_dir)
    if not ctx.is_main:   # the other ranks check what rank 0 made
        kinds, stage_settings = check_ladder(recipe, tokenizer_dir, quiet=True)
    tokenizer = load_tokenizer(tokenizer_dir)
    vocab_size = len(tokenizer)
    check_tokenizer(run_dir, identity, vocab_fingerprint(tokenizer_dir), write=ctx.is_main)
    vocab_map = read_vocab_map(tokenizer_dir)
    top, last = recipe.teachers[-1], len(recipe.teachers)
    top_plan = None
    if recipe.student is not None and kinds[top.name] != "native":
        def top_plan(student):   # direct-kd from a top teacher of another vocabulary: as its stage teaches
            settings = replace(stage_settings[last], init="warm")
            teacher = load_teacher(top.name, top.checkpoint, kinds[top.name], tokenizer, top.src_lang, top.tgt_lang,
                                   top.prefix, where=f"{recipe.source} [[teacher]] #{last} ({top.name!r})")
            plan = plan_stage(settings, last, recipe, student, teacher, stream, tokenizer, train_text.src,
                              train_text.tgt, cache_root, vocab_map, steps=recipe.student.steps_per_stage * last)
            return replace(plan, first_batch=0)

    # On disk, memory-mapped (batches.py): a large corpus never sits in Python lists; reused on restart.
    truncate_to = recipe.data.max_length if recipe.data.long_pairs == "truncate" else None
    pairs = tokenize_to_disk(tokenizer, train_text.src, train_text.tgt, long_pair_limit(recipe), cache_root,
                             truncate_to=truncate_to, description=f"tokenizing {len(train_text):,} training pairs")
    what = "truncated" if recipe.data.long_pairs == "truncate" else "dropped"
    if not len(pairs):
        raise RecipeError(f"{recipe.source} [data] max_length {recipe.data.max_length}: every one of the "
                          f"{len(train_text):,} training pairs is longer; raise max_length or set long_pairs = \"truncate\"")
    console.log(f"tokenized: {len(pairs):,} pairs, {pairs.target_tokens():,} target tokens"
                f" ({pairs.dropped_long} longer than {recipe.data.max_length} tokens {what})")
    stream = BatchStream(pairs, recipe.training.batch_tokens, recipe.seed)
    dropout = recipe.training.dropout

    def finish(model, out_dir: Path, role: str, result, extra: dict) -> dict:
        record: dict = {}
        with distributed.waiting_for_main():   # rank 0 evaluates and writes; the others wait for the checkpoint
            if ctx.is_main:
                with console.status(f"{out_dir.name}: translating {len(valid)} validation sentences"):
                    metrics = evaluate(model, tokenizer, valid.src, valid.tgt, recipe.training.eval_max_new_tokens)
                record = {
                    "role": role,
                    "params": count_parameters(model),
                    "steps": result.steps if result else 0,
                    "wall_s": round(result.wall_s, 1) if result else 0.0,
                    "train_tokens_per_s": round(result.tokens_per_s, 1) if result else None,
                    "final_train_loss": round(result.final_loss, 4) if result else None,
                    "first_step_at": result.first_step_at if result else None,   # wall clock: time to the first step
                    "train_pairs": result.pairs if result else 0,   # batch rows of every step (a pair seen twice counts twice)
                    "valid": metrics,
                    "vocab": vocab_fingerprint(tokenizer_dir),
                    "languages": {"src": corpus.src_lang, "tgt": corpus.tgt_lang},   # bundles carry it on (export)
                    **extra,
                }
                save_model(model, out_dir, tokenizer_dir=tokenizer_dir, extra=record)
                ProgressFile.for_model(out_dir, role, 0).remove()  # finished: metrics.json now marks it done
                console.log(f"{out_dir.relative_to(run_dir)}: valid BLEU {metrics['bleu']:.2f} chrF {metrics['chrf']:.2f}"
                            f" ({record['params']:,} params, {record['wall_s']} s)")
        return record

    summary: dict = {"recipe": recipe.name, "teachers": {}, "stages": {}}
    teacher_dirs: list[Path] = []
    for i, teacher in enumerate(recipe.teachers):
        out_dir = run_dir / "teachers" / teacher.name
        teacher_dirs.append(Path(teacher.checkpoint) if teacher.checkpoint else out_dir)
        if teacher.checkpoint or is_done(out_dir) or (only and teacher.name not in only):
            continue
        model = build_model(teacher.size, vocab_size, seed=recipe.seed + i, dropout=dropout)
        result = train(model, stream, teacher.steps, with_lr(recipe.training, teacher.lr),
                       description=f"teacher {teacher.name}", seed=recipe.seed + i,
                       progress=ProgressFile.for_model(out_dir, "teacher", teacher.steps),
                       checkpoint_every=recipe.training.checkpoint_every)
        finish(model, out_dir, "teacher", result, {"size": teacher.size})

    if only:   # a baseline named by --only (a second job's whole work): nothing else runs
        baselines = [b for b in baselines + list(BASELINES) if b in only]
    baselines = list(dict.fromkeys(baselines))
    if "direct-kd" in baselines and not (recipe.teachers[-1].checkpoint or is_done(teacher_dirs[-1])):
        raise EkdError(f"baseline direct-kd: the top teacher {recipe.teachers[-1].name!r} is not trained yet "
                       f"({teacher_dirs[-1]}); train the teachers first")
    pending = [b for b in baselines if not is_done(run_dir / "baselines" / b)]
    helper = None
    if jobs > 1 and pending and not only and ctx.world_size == 1:
        helper = SecondJob.start(run_dir, pending, threads, cache_dir)
        pending = []

    try:
        previous: Path | None = None
        stages = [] if recipe.student is None or only else list(enumerate(zip(recipe.teachers, teacher_dirs), start=1))
        for k, (teacher, teacher_dir) in stages:
            out_dir = run_dir / "students" / f"stage-{k}"
            if not is_done(out_dir):
                if previous is None:
                    student = build_model(recipe.student.size, vocab_size, seed=recipe.seed + 1000, dropout=dropout)
                else:
                    student = load_model(previous, expected_vocab=tokenizer_dir)
                stage_teacher = load_teacher(teacher.name, teacher_dir, kinds[teacher.name], tokenizer,
                                             teacher.src_lang, teacher.tgt_lang, teacher.prefix,
                                             where=f"{recipe.source} [[teacher]] #{k} ({teacher.name!r})")
                plan = plan_stage(stage_settings[k], k, recipe, student, stage_teacher, stream, tokenizer,
                                  train_text.src, train_text.tgt, cache_root, vocab_map)
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

        if pending:   # the students the ladder must beat (methods.py)
            run_baselines(recipe, run_dir, stream, vocab_size, teacher_dirs[-1], tokenizer_dir, finish, names=pending,
                          cache_root=cache_root, top_plan=top_plan)
        if helper is not None:
            helper.wait()
    except BaseException:   # a failed or interrupted ladder takes its second job down with it
        if helper is not None:
            helper.stop()
        raise

    for teacher, teacher_dir in zip(recipe.teachers, teacher_dirs):
        if only and not is_done(teacher_dir):
            continue
        summary["teachers"][teacher.name] = _read_metrics(teacher_dir)
    for k, _ in stages:
        summary["stages"][f"stage-{k}"] = _read_metrics(run_dir / "students" / f"stage-{k}")
    if baselines:
        summary["baselines"] = {b: _read_metrics(run_dir / "baselines" / b) for b in baselines}
    summary["wall_s_this_invocation"] = round(time.perf_counter() - started, 1)
    if ctx.is_main:
        write_json_atomic(run_dir / "run.json", summary)
    return summary


class SecondJob:
    """Baselines trained by a second process beside the ladder: ``distill RUN/recipe.toml --only NAME``.

    It shares the parent's lock (LOCK_DELEGATE_ENV), dies with the parent, and writes its console
    output to RUN/baselines/second-job.log; its model directories are what the parent reads back.
    """

    def __init__(self, run_dir: Path, names: list[str], proc: subprocess.Popen, log: Path):
        self.run_dir, self.names, self.proc, self.log = run_dir, names, proc, log

    @classmethod
    def start(cls, run_dir: Path, names: list[str], threads: int, cache_dir=None) -> "SecondJob":
        log = run_dir / "baselines" / "second-job.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "ekd_edge", "distill", str(run_dir / "recipe.toml"), "--run-dir", str(run_dir)]
        for name in names:
            command += ["--only", name]
        if cache_dir:
            command += ["--cache-dir", str(cache_dir)]
        env = {**os.environ, LOCK_DELEGATE_ENV: str(os.getpid())}
        if threads:
            env["OMP_NUM_THREADS"] = str(threads)
        with open(log, "ab") as out:
            proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                    preexec_fn=_die_with_parent)
        console.log(f"baselines {', '.join(names)}: training in a second process (pid {proc.pid}, log {log})")
        return cls(run_dir, names, proc, log)

    def wait(self) -> None:
        if self.proc.poll() is None:
            with console.status(f"waiting for the second job (baselines {', '.join(self.names)}; log {self.log})"):
                self.proc.wait()
        if self.proc.returncode != 0:
            lines = [line for line in self.log.read_text(errors="replace").splitlines() if line.strip()]
            raise EkdError(f"baselines {', '.join(self.names)}: the second job failed (exit {self.proc.returncode}): "
                           f"{lines[-1].strip() if lines else 'no output'}; log {self.log}")
        for name in self.names:
            record = _read_metrics(self.run_dir / "baselines" / name)
            console.log(f"baselines/{name}: valid BLEU {record['valid']['bleu']:.2f} (second job)")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait()


def _die_with_parent() -> None:
    """In the child, before exec: receive SIGTERM when the parent dies, however it dies (Linux)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)   # PR_SET_PDEATHSIG
    except OSError:
        pass


def train_store(corpus, files: dict, recipe: Recipe, cache_root: Path):
    """The training split as a text store under ``cache_root``, named by the sha256 of its two files
    (``files``: data_identity's record) and what is kept of them (empty-line policy, pair limit)."""
    import hashlib

    from ekd_edge.data.text_store import MappedText, build_text_store

    if "train" not in corpus.files:
        corpus.split("train")   # the corpus's own one-line error: it has no train split
    limit = recipe.data.max_train_pairs or None
    key = hashlib.sha256(f"{files['train.src']['sha256']}:{files['train.tgt']['sha256']}:"
                         f"{recipe.data.empty_lines}:{limit}".encode()).hexdigest()[:20]
    src, tgt = corpus.files["train"]
    store = cache_root / f"text-{key}"
    with distributed.waiting_for_main():   # one process reads the corpus; under torchrun the others wait
        if distributed.context().is_main:
            text = build_text_store(src, tgt, store, empty=recipe.data.empty_lines, limit=limit)
    return text if distributed.context().is_main else MappedText.open(store)


def check_ladder(recipe: Recipe, tokenizer_dir: Path, quiet: bool = False) -> tuple[dict, dict]:
    """Everything about the teachers and stages that the run's tokenizer decides, checked before any
    work: (each teacher's kind, each stage's resolved settings).

    What a given teacher can teach follows from its vocabulary (models/teacher.py) and each stage's
    method must fit it; language codes and prefix are checked against the teacher's tokenizer, the
    stage sizes counted in pieces against the vocabulary the student will have.
    """
    from ekd_edge.distill.recipe import check_vocabulary_bounds

    tokenizer = load_tokenizer(tokenizer_dir)
    if recipe.tokenizer.from_:
        check_vocabulary_bounds(recipe.stages, len(tokenizer), f"the vocabulary adopted from teacher "
                                f"{recipe.tokenizer.from_!r}" + (", trimmed to the corpus" if recipe.tokenizer.trim else ""),
                                recipe.source)
    kinds = {t.name: teacher_kind(t.checkpoint, tokenizer_dir) if t.checkpoint else "native" for t in recipe.teachers}
    stage_settings = {}
    for k, teacher in enumerate(recipe.teachers, start=1):
        if teacher.checkpoint:
            teacher_prompt(teacher.checkpoint, kinds[teacher.name], tokenizer, teacher.src_lang, teacher.tgt_lang,
                           teacher.prefix, where=f"{recipe.source} [[teacher]] #{k} ({teacher.name!r})")
        if recipe.student is None:
            continue
        stage_settings[k] = resolve_stage(recipe.stage(k), kinds[teacher.name], k, teacher.name, recipe.source)
        if teacher.checkpoint and kinds[teacher.name] == "native":
            check_stage_fits(recipe, k, Path(teacher.checkpoint))
        if stage_settings[k].method == "seq_kd":   # the engine that decodes its translations, refused now
            from ekd_edge.distill.teacher_engine import choose_engine

            family = (json.loads((Path(teacher.checkpoint) / "config.json").read_text()).get("model_type")
                      if teacher.checkpoint else "marian")
            choose_engine(recipe.distill.teacher_engine, family, bool(teacher.src_lang or teacher.tgt_lang or teacher.prefix),
                          where=f"{recipe.source} [[stage]] #{k}")
        if teacher.checkpoint and kinds[teacher.name] == "foreign" and not quiet:
            console.log(f"teacher {teacher.name!r}: its own tokenizer ({Path(teacher.checkpoint).name}), so stage {k} "
                        f"distils by {stage_settings[k].method}")
    return kinds, stage_settings


def check_stage_fits(recipe: Recipe, k: int, teacher_dir: Path) -> None:
    """A given teacher checkpoint must fit its stage's copy-init (only stage 1 copies weights)."""
    if k != 1:
        return
    config = json.loads((teacher_dir / "config.json").read_text())
    dims = {"d_model": config["d_model"], "ffn_dim": config["encoder_ffn_dim"],
            "attention_heads": config["encoder_attention_heads"], "encoder_layers": config["encoder_layers"],
            "decoder_layers": config["decoder_layers"]}
    check_copy_init(recipe, dims, f"the teacher checkpoint {teacher_dir}")


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
