"""What the ladder sweeps (ladder_medium.py, capacity_gap.py) share: the demo recipe's settings as a
recipe for any teacher list, `ekd-edge distill` runs pinned one per core, and the seed-by-seed
comparison with direct KD (sacrebleu's paired bootstrap, then mean ± sd over seeds).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_TEACHERS = ("teacher-s", "teacher-m", "teacher-l")   # ekd_edge/teachers/lo-help-en-de, growing capacity
WORD_KD = 'method = "word_kd"\nteacher_cache_k = 8\n'   # every stage reads its teacher's top-8 cache
REFERENCE = "direct-kd"   # every p-value is taken against direct KD of the same seed


def recipe_text(name: str, seed: int, teachers: tuple[str, ...], steps_per_stage: int, *, size: str = "tiny",
                stages: tuple[str, ...] | None = None, baselines: tuple[str, ...] = (), smoke: bool = False,
                lr: float = 2e-3, warmup: int = 150) -> str:
    """The demo recipe's settings (ekd_edge/recipes/demo.toml) with this seed, student size and ladder.

    ``teachers`` name shipped teachers in ladder order; ``stages`` gives each its [[stage]] body
    (default: word-level KD from the top-8 cache). ``smoke``: 300 training pairs, tiny batches.
    """
    # a shipped teacher listed again (the schedule control's teacher-l, teacher-l, teacher-l) needs a
    # name of its own in the recipe; its checkpoint, and so its cache, stay the same
    names = [t if t not in teachers[:i] else f"{t}.{teachers[:i].count(t) + 1}" for i, t in enumerate(teachers)]
    listed = "".join(f'[[teacher]]\nname = "{name}"\ncheckpoint = "package:teachers/lo-help-en-de/{t}"\n\n'
                     for name, t in zip(names, teachers))
    bodies = stages or (WORD_KD,) * len(teachers)
    wanted = "baselines = [" + ", ".join(f'"{b}"' for b in baselines) + "]\n" if baselines else ""
    return (f'name = "{name}"\nseed = {seed}\n\n'
            f'[data]\ncorpus = "lo-help-en-de"\nmax_length = 64\nvalid_sentences = {20 if smoke else 200}\n'
            + ("max_train_pairs = 300\n" if smoke else "") +
            '\n[tokenizer]\nfrom = "teacher-l"\n\n'
            f'[training]\nbatch_tokens = {batch_tokens(smoke)}\nlr = {lr}\nwarmup_steps = {2 if smoke else warmup}\n'
            f'label_smoothing = 0.1\ndropout = 0.1\neval_max_new_tokens = {16 if smoke else 128}\nthreads = 1\n'
            'checkpoint_every = 100\n\n'
            f'{listed}[student]\nname = "student"\nsize = "{size}"\nsteps_per_stage = {steps_per_stage}\n{wanted}\n'
            '[distill]\nloss = "forward_kl"\nalpha = 0.5\ntemperature = 1.0\n\n'
            + "".join(f"[[stage]]\n{body}\n" for body in bodies))


def batch_tokens(smoke: bool) -> int:
    return 1024 if smoke else 2048


def model_records(run_dir: Path, baseline: str | None = None) -> list[dict]:
    """The run's own records (each model's metrics.json) of what its final student went through, in
    training order: the EKD stages, or the one ``baseline`` model."""
    if baseline:
        return [json.loads((run_dir / "baselines" / baseline / "metrics.json").read_text())]
    stages = [p for p in (run_dir / "students").glob("stage-*") if p.name.removeprefix("stage-").isdigit()]
    return [json.loads((p / "metrics.json").read_text())
            for p in sorted(stages, key=lambda p: int(p.name.removeprefix("stage-"))) if (p / "metrics.json").is_file()]


def run_pinned(jobs: list[tuple[str, list[str], Path]], workers: int, tag: str,
               start_before: float | None = None) -> dict[str, float]:
    """Run each job's command on a core of its own (taskset), one thread, ``workers`` at a time.

    ``jobs`` are (label, command, log file), started in order; none starts after the
    ``time.monotonic()`` value ``start_before`` (the running ones finish). Returns each finished
    label's wall seconds; the first failure stops the sweep with the label and its log.
    """
    cores = sorted(os.sched_getaffinity(0))[:max(1, workers)]
    pending, running, walls, failed = list(jobs), {}, {}, None
    while pending or running:
        if pending and start_before is not None and time.monotonic() > start_before:
            print(f"[{tag}] time is up: {len(pending)} runs not started", flush=True)
            pending = []
        free = [c for c in cores if c not in running.values()]
        while pending and free and failed is None:
            label, command, log_path = pending.pop(0)
            log_path.parent.mkdir(parents=True, exist_ok=True)
            with open(log_path, "ab") as log:
                proc = subprocess.Popen(["taskset", "-c", str(free[0]), *command], stdout=log,
                                        stderr=subprocess.STDOUT, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"})
            running[proc] = free.pop(0)
            proc.started, proc.label, proc.log = time.perf_counter(), label, log_path
            print(f"[{tag}] {label}: started on core {running[proc]}", flush=True)
        if failed is not None and not running:
            break
        time.sleep(2)
        for proc in [p for p in running if p.poll() is not None]:
            del running[proc]
            if proc.returncode != 0:
                failed = failed or f"{proc.label} failed (exit {proc.returncode}); log {proc.log}"
                continue
            walls[proc.label] = round(time.perf_counter() - proc.started, 1)
            print(f"[{tag}] {proc.label}: finished in {walls[proc.label]:.0f} s", flush=True)
    if failed:
        raise SystemExit(f"[{tag}] {failed}")
    return walls


def bootstrap_seed(hyps: dict[str, list[str]], refs: list[str]) -> dict[str, dict]:
    """One seed's systems against direct KD of that seed: BLEU, chrF, intervals and p-values."""
    from ekd_edge.distill.compare import paired_bootstrap

    stats = paired_bootstrap(hyps, refs, REFERENCE)
    return {name: {k: round(v, 4) if isinstance(v, float) else v for k, v in entry.items()}
            for name, entry in stats.items()}


def over_seeds(rows: list[dict], reference_bleu: dict[int, float]) -> dict:
    """Mean ± sd of one system's per-seed rows (each with seed, bleu, chrf, bleu_p), its gain over
    direct KD seed by seed, and in how many seeds it was better (worse) at p < 0.05."""
    bleu, chrf = [r["bleu"] for r in rows], [r["chrf"] for r in rows]
    gains = [r["bleu"] - reference_bleu[r["seed"]] for r in rows if r["seed"] in reference_bleu]
    significant = [r for r in rows if r["bleu_p"] is not None and r["bleu_p"] < 0.05 and r["seed"] in reference_bleu]
    return {"seeds": len(rows), "bleu_mean": round(statistics.mean(bleu), 2), "bleu_sd": _sd(bleu),
            "chrf_mean": round(statistics.mean(chrf), 2), "chrf_sd": _sd(chrf),
            "gain_mean": round(statistics.mean(gains), 2) if gains else None, "gain_sd": _sd(gains),
            "better_p05": sum(1 for r in significant if r["bleu"] > reference_bleu[r["seed"]]),
            "worse_p05": sum(1 for r in significant if r["bleu"] < reference_bleu[r["seed"]])}


def _sd(values: list[float]) -> float:
    return round(statistics.stdev(values), 2) if len(values) > 1 else 0.0
