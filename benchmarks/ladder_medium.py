"""Does the ladder help where it can? The shipped teachers, one 8x-smaller student, four methods, three seeds.

    .venv/bin/python benchmarks/ladder_medium.py [--steps-per-stage 1000] [--seeds 1 2 3] [--workers 2]
    .venv/bin/python benchmarks/ladder_medium.py --smoke --out /tmp/lm   # a minute: the script end to end
    .venv/bin/python benchmarks/ladder_medium.py --student-size tiny-6e2d --methods ekd --seeds 1 \
        --work-dir runs/shape-6e2d --out benchmarks/results/shape-6e2d   # the deep-encoder shape

Every student is the demo's "tiny" Marian (1.24M parameters; teacher-l has 10.0M, 8.1x), or the
--student-size preset (e.g. tiny-6e2d: 6 encoder and 2 decoder layers), and gets the same total
steps, 3 x steps_per_stage, at the demo recipe's settings:

    ce-only     label-smoothed cross-entropy, no teacher
    direct-kd   word-level KD from teacher-l alone: the baseline every p-value is taken against
    ekd         word-level KD from teacher-s, then -m, then -l, each stage warm-started from the last
    ekd-seqkd   the same ladder with stage 1 on teacher-s's greedy translations of the training
                sources plus the references (sequence-level KD, Kim & Rush 2016)

EKD + copy-init is not run: copying teacher layers into the student needs a student as wide as its
first teacher (d_model, ffn_dim, heads), and every shipped teacher is wider than a student 8x
smaller than teacher-l. The result says so.

Each (method, seed) is one `ekd-edge distill` run (`--only NAME` for the baselines), one thread,
pinned to its own core, `--workers` at a time; all share one cache directory, so each teacher's
top-k cache and the seq-KD targets are computed once. Then every final student translates the
lo-help test split and sacrebleu's paired bootstrap compares it with direct-kd of the same seed.

Writes OUT (default benchmarks/results/ladder-medium/): result.json (per run: test BLEU/chrF,
p-values, the per-stage validation curve, wall time; provenance), result.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from ekd_edge.bench.provenance import Provenance  # noqa: E402
from ekd_edge.distill.recipe import BASELINES  # noqa: E402
from ekd_edge.files import write_json_atomic, write_text_atomic  # noqa: E402
from ekd_edge.markdown import mean_sd, number, p_value, provenance_footer, table  # noqa: E402
from ladder_sweep import (REFERENCE, SHIPPED_TEACHERS, WORD_KD, batch_tokens, bootstrap_seed, model_records,  # noqa: E402
                          over_seeds, recipe_text as ladder_recipe, run_pinned)

RESULTS = ROOT / "benchmarks" / "results" / "ladder-medium"
METHODS = ("ce-only", "direct-kd", "ekd", "ekd-seqkd")
SEQ_KD = 'method = "seq_kd"\nseqkd_beams = 1\nseqkd_mix = "both"\nteacher_cache_k = 8\n'


def recipe_text(method: str, seed: int, steps_per_stage: int, smoke: bool, size: str = "tiny", lr: float = 2e-3,
                warmup: int = 150) -> str:
    """The demo recipe's settings, this seed, and the stage methods of ``method``."""
    first = SEQ_KD if method == "ekd-seqkd" else WORD_KD
    return ladder_recipe(f"ladder-medium-{method}", seed, SHIPPED_TEACHERS, steps_per_stage, size=size,
                         stages=(first, WORD_KD, WORD_KD), baselines=(method,) if method in BASELINES else (),
                         smoke=smoke, lr=lr, warmup=warmup)


def final_model(run_dir: Path, method: str) -> Path:
    return run_dir / ("baselines/" + method if method in BASELINES else "students/stage-3")


def run_all(work: Path, jobs: list[tuple[str, int]], steps: int, smoke: bool, workers: int, size: str = "tiny",
            lr: float = 2e-3, warmup: int = 150) -> dict:
    """Every (method, seed) distill run, ``workers`` at a time, each pinned to its own core."""
    todo = []
    for method, seed in jobs:
        label = f"{method}-seed{seed}"
        recipe = work / "recipes" / f"{label}.toml"
        recipe.parent.mkdir(parents=True, exist_ok=True)
        recipe.write_text(recipe_text(method, seed, steps, smoke, size, lr, warmup))
        if (final_model(work / label, method) / "metrics.json").is_file():
            print(f"[ladder-medium] {method} seed {seed}: done earlier", flush=True)
            continue
        command = [sys.executable, "-m", "ekd_edge", "distill", str(recipe), "--run-dir", str(work / label),
                   "--cache-dir", str(work / "cache")]
        if method in BASELINES:
            command += ["--only", method]
        todo.append((label, command, work / f"{label}.log"))
    return run_pinned(todo, workers, "ladder-medium")


def evaluate(work: Path, jobs: list[tuple[str, int]], test_sentences: int) -> dict:
    """Test translations of every final student, and per seed a paired bootstrap against direct-kd."""
    from ekd_edge.data.corpus import load_corpus
    from ekd_edge.runtime import load_translator

    test = load_corpus("lo-help-en-de").split("test").head(test_sentences or None)
    runs = {}
    for method, seed in jobs:
        model = final_model(work / f"{method}-seed{seed}", method)
        translator = load_translator(model, threads=1)
        runs[(method, seed)] = {"hyps": translator.translate(test.src, batch_size=32, max_new_tokens=128),
                                "metrics": json.loads((model / "metrics.json").read_text()), "model": model}
        translator.close()
    rows = []
    for seed in sorted({s for _, s in jobs}):
        systems = {m: runs[(m, s)]["hyps"] for m, s in jobs if s == seed}
        for method, entry in bootstrap_seed(systems, test.tgt).items():
            run = runs[(method, seed)]
            records = model_records(work / f"{method}-seed{seed}", method if method in BASELINES else None)
            rows.append({"method": method, "seed": seed, **entry,
                         "valid_bleu_per_stage": [round(r["valid"]["bleu"], 2) for r in records],
                         "params": run["metrics"]["params"], "steps": sum(r["steps"] for r in records),
                         "train_wall_s": round(sum(r["wall_s"] for r in records), 1)})
    return {"rows": rows, "test_sentences": len(test), "test_fingerprint": test.fingerprint()}


def summarise(rows: list[dict]) -> list[dict]:
    """Mean and spread over seeds per method, and how many seeds beat direct-kd at p < 0.05."""
    direct = {r["seed"]: r["bleu"] for r in rows if r["method"] == REFERENCE}
    return [{"method": method, **over_seeds([r for r in rows if r["method"] == method], direct)}
            for method in METHODS if any(r["method"] == method for r in rows)]


def markdown(result: dict) -> str:
    s = result["settings"]
    lines = ["# ladder-medium: EKD against direct KD with the shipped lo-help-en-de teachers", "",
             f"Student: {s.get('student_size', 'tiny')} Marian, {result['rows'][0]['params']:,} parameters; teachers s/m/l from "
             f"ekd_edge/teachers/lo-help-en-de (teacher-l, 10.0M, is {10014720 / result['rows'][0]['params']:.1f}x the "
             "student). Every student: "
             f"{3 * s['steps_per_stage']} steps of {s['batch_tokens']} tokens. Test: lo-help-en-de, "
             f"{result['evaluation']['test_sentences']} sentences, greedy; p: paired bootstrap (1000 resamples) "
             "against direct-kd of the same seed.", "",
             table(["method", "seeds", "test BLEU (mean ± sd)", "chrF (mean ± sd)", "better than direct-kd, p < 0.05",
                    "worse, p < 0.05"],
                   [[m["method"], m["seeds"], mean_sd(m["bleu_mean"], m["bleu_sd"]), mean_sd(m["chrf_mean"], m["chrf_sd"]),
                     m["better_p05"], m["worse_p05"]] for m in result["summary"]], align="lrrrrr"),
             "Per run (valid BLEU after each stage: the ladder's curve; baselines have one stage):", "",
             table(["method", "seed", "test BLEU", "p", "chrF", "p", "valid BLEU per stage", "train s"],
                   [[r["method"], r["seed"], r["bleu"], p_value(r["bleu_p"]), r["chrf"], p_value(r["chrf_p"]),
                     " → ".join(f"{b:.2f}" for b in r["valid_bleu_per_stage"]), number(r["train_wall_s"], ".0f")]
                    for r in result["evaluation"]["rows"]], align="lrrrrrlr"),
             f"Not run: EKD + copy-init. {result['not_run']['ekd-copyinit']}", "",
             f"Runs: two at a time, one thread each, each pinned to its own core ({result['settings']['workers']} "
             "workers).", ""]
    if result.get("provenance"):
        lines.append(provenance_footer(result["provenance"]))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps-per-stage", type=int, default=1000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--workers", type=int, default=min(2, len(os.sched_getaffinity(0))))
    parser.add_argument("--work-dir", type=Path, default=ROOT / "runs" / "ladder-medium")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--test-sentences", type=int, default=0, help="0 = the whole test split")
    parser.add_argument("--student-size", default="tiny",
                        help="student size preset, e.g. tiny-6e2d (deep encoder, shallow decoder)")
    parser.add_argument("--lr", type=float, default=2e-3, help="peak learning rate of every stage (the demo's)")
    parser.add_argument("--warmup", type=int, default=150, help="warm-up steps of every stage (the demo's)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS,
                        help="methods to run (direct-kd is always run: p-values are taken against it)")
    parser.add_argument("--smoke", action="store_true", help="300 pairs, 2 steps a stage, 1 seed: a check, not a result")
    args = parser.parse_args()
    if args.smoke:
        args.steps_per_stage, args.seeds, args.test_sentences = 2, args.seeds[:1], args.test_sentences or 20
    if args.out.resolve() == RESULTS.resolve() and args.smoke:
        raise SystemExit("--smoke writes no committed result: give --out")
    methods = [m for m in METHODS if m in args.methods or m == "direct-kd"]
    settings = {"steps_per_stage": args.steps_per_stage, "seeds": args.seeds, "workers": args.workers,
                "student_size": args.student_size, "methods": methods, "lr": args.lr, "warmup": args.warmup,
                "batch_tokens": batch_tokens(args.smoke), "smoke": args.smoke, "decoding": "greedy",
                "recipe": "recipe_text() in this script (the demo recipe's settings)"}
    provenance = Provenance.begin(threads=1, settings=settings)
    jobs = [(m, s) for s in args.seeds for m in methods]
    # the first two runs build what the others reuse: every teacher cache (ekd) and nothing (ce-only)
    jobs.sort(key=lambda job: (job[1] != args.seeds[0], job[0] not in ("ekd", "ce-only")))
    args.work_dir.mkdir(parents=True, exist_ok=True)
    walls = run_all(args.work_dir, jobs, args.steps_per_stage, args.smoke, args.workers, args.student_size, args.lr,
                    args.warmup)
    evaluation = evaluate(args.work_dir, jobs, args.test_sentences)
    result = {"settings": settings, "summary": summarise(evaluation["rows"]), "evaluation": evaluation,
              "process_wall_s": walls,
              "not_run": {"ekd-copyinit": "copy-init copies teacher layers, so the student must be as wide as its "
                                          "first teacher; teacher-s has d_model 192 / ffn 768, the 8x-smaller tiny "
                                          "student d_model 128 / ffn 256."},
              "rows": evaluation["rows"]}
    result["provenance"] = provenance.end(data={"test": evaluation["test_fingerprint"]},
                                          models=[final_model(args.work_dir / f"{m}-seed{s}", m) for m, s in jobs])
    args.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out / "result.json", result)
    write_text_atomic(args.out / "result.md", markdown(result))
    for m in result["summary"]:
        print(f"{m['method']:>10}: test BLEU {m['bleu_mean']:.2f} ± {m['bleu_sd']:.2f} over {m['seeds']} seeds "
              f"(better than direct-kd in {m['better_p05']}, worse in {m['worse_p05']})")
    print(f"wrote {args.out / 'result.json'}, {args.out / 'result.md'}")
    if args.smoke:
        shutil.rmtree(args.work_dir / "recipes", ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
