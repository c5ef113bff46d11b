"""Where the ladder pays: students of three sizes, each distilled three ways, three seeds, and what
each final student costs to deploy.

Hypothesis (stated before any run): the EKD ladder's gain over direct KD from teacher-l grows with
the teacher/student size ratio. At the demo's 8x gap it is small (ladder-medium: +0.26 BLEU over 3
seeds, significant in 1 of 3); the EKD paper's gain (6M student, 39M teacher) was +3.15.

    .venv/bin/python benchmarks/capacity_gap.py                 # the sweep (~3.9 h on 2 cores); resumable
    .venv/bin/python benchmarks/capacity_gap.py --hours 2.5     # start no run after 2.5 h, then summarise
    .venv/bin/python benchmarks/capacity_gap.py --report        # re-render from the per-run results only
    .venv/bin/python benchmarks/capacity_gap.py --retime        # time this machine's students again, quietly
    .venv/bin/python benchmarks/capacity_gap.py --smoke --out /tmp/cg   # a couple of minutes: end to end

Students (teacher-l has 10.0M parameters): micro 0.35M (29x), tiny 1.24M (8.1x, the demo's),
small 2.94M (3.4x; the shape of teacher-s). Arms, the same total steps and data for each:

    direct-kd   word-level KD from teacher-l alone, TOTAL steps (the reference of every p-value)
    ekd-m-l     teacher-m, then teacher-l: two stages of TOTAL/2 steps, each warm-started from the last
    ekd-s-m-l   the shipped ladder s -> m -> l: three stages of TOTAL/3 steps
    kd-l-l-l    the schedule control: ekd-s-m-l's three stages with teacher-l at every rung (added after
                the first 13 runs; its 9 runs come after the design's 27)

Every stage reads its teacher's top-8 cache, built once in a cache directory all runs share. The
recipe is the demo's (ladder_sweep.recipe_text); within a seed every arm starts from the same initial
weights and reads the same batches in the same order (one stream, each stage continuing it). Each
final student translates the lo-help test split (greedy); sacrebleu's paired bootstrap compares it
with direct-kd of the same seed. Then it is exported with the onefile-x86 profile (block-wise int8,
one file) and that model is scored on the test split, timed at batch 1 on one thread (200 test
sentences) and measured in a process holding only its runtime: the size-quality-latency frontier.

Sizing (TOTAL = 4800 by default). Planned at ~0.09 (micro), 0.153 (tiny: the demo's stages, one
run alone) and 0.276 s/step (small), ~3.9 h on 2 cores; measured in the sweep, two runs side by
side on a core each: 0.14 (micro, Xeon), 0.26-0.29 (tiny, AMD EPYC) and 0.46-0.61 s/step (small),
so the design's 27 runs take about 6 h of two cores and the control's 9 about 2 h more. The script
prints its estimate at start, from the finished runs' speed where there are any.

Resuming: each run, as it finishes, writes OUT/runs/<size>.<arm>.seed<k>.json (its teachers and steps
as the run recorded them, scores, frontier, provenance) and its test translations (.test.txt.gz). A
run with that file is never repeated, so the same command continues a killed sweep, on this machine
(an unfinished run resumes from its last checkpoint in --work-dir) or on another from the committed
OUT/runs/. The summary (result.json, result.md, frontier.png) is rendered from those files alone.

Timing: each run times its student on its own core while the other run trains, on whichever machine
ran it. `--retime`, on an idle machine, times the students still in --work-dir again on one core, in
round-robin rounds (OUT/timing/<label>.json); the frontier quotes the latest such pass's latencies
beside the sweep's. One pass only: on one VM, quiet passes of different days differed by up to 45 %.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")   # the shipped teachers and corpus: nothing to download
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from ekd_edge.bench.provenance import Provenance  # noqa: E402
from ekd_edge.files import write_bytes_atomic, write_json_atomic, write_text_atomic  # noqa: E402
from ladder_sweep import (REFERENCE, SHIPPED_TEACHERS, batch_tokens, bootstrap_seed, model_records,  # noqa: E402
                          over_seeds, recipe_text, run_pinned)

RESULTS = ROOT / "benchmarks" / "results" / "capacity-gap"
TEACHER_L = ROOT / "ekd_edge" / "teachers" / "lo-help-en-de" / "teacher-l"
HYPOTHESIS = ("the EKD ladder's gain over direct KD from teacher-l grows with the teacher/student size ratio "
              "(at the demo's 8x gap it was +0.26 BLEU, significant in 1 of 3 seeds)")
SIZES = ("micro", "tiny", "small")
SMOKE_SIZES = ("nano", "micro")
ARMS = {REFERENCE: ("teacher-l",), "ekd-m-l": ("teacher-m", "teacher-l"), "ekd-s-m-l": SHIPPED_TEACHERS,
        "kd-l-l-l": ("teacher-l",) * 3}
# The schedule control: the ladder's three stages, each warm-started with its own warm-up and decay,
# but teacher-l at every rung. ekd-s-m-l minus kd-l-l-l is what the smaller teachers add; kd-l-l-l
# minus direct-kd is what the restarts add. Added after the first 13 runs, when the small student's
# gain over direct KD was seen; its runs come after the 27 of the design.
CONTROL, LADDER = "kd-l-l-l", "ekd-s-m-l"
TOTAL_STEPS = 4800
# Seconds per training step on one core, until this sweep's own runs say better (see the docstring).
PRIOR_S_PER_STEP = {"nano": 0.05, "micro": 0.09, "tiny": 0.153, "small": 0.276}
RUN_OVERHEAD_S, CACHES_S = 180, 400
PROFILE = "onefile-x86"


def job_label(size: str, arm: str, seed: int) -> str:
    return f"{size}.{arm}.seed{seed}"


def final_model(run_dir: Path, arm: str) -> Path:
    return run_dir / ("baselines/" + REFERENCE if arm == REFERENCE else f"students/stage-{len(ARMS[arm])}")


def settings_of(args) -> dict:
    """What makes runs comparable: a resumed sweep must use the same, checked against every run file."""
    return {"total_steps": args.total_steps, "lr": args.lr, "warmup_per_stage": 2 if args.smoke else args.warmup,
            "batch_tokens": batch_tokens(args.smoke), "test_sentences": args.test_sentences,
            "latency_sentences": args.latency_sentences, "max_new_tokens": 16 if args.smoke else 128,
            "export_profile": PROFILE, "smoke": args.smoke, "decoding": "greedy"}


# ---------------------------------------------------------------------------------------------------
# One run: distill, check what it used, score, export, time. A process of its own, pinned by the parent.

def run_job(args, size: str, arm: str, seed: int) -> None:
    import torch

    from ekd_edge.cli import main as ekd_edge
    from ekd_edge.data.corpus import load_corpus
    from ekd_edge.metrics import score

    torch.set_num_threads(1)
    settings = settings_of(args)
    provenance, code = Provenance.begin(threads=1, settings=settings), code_identity()
    label, teachers = job_label(size, arm, seed), ARMS[arm]
    run_dir, work = args.work_dir / size / f"{arm}-seed{seed}", args.work_dir
    recipe = work / "recipes" / f"{label}.toml"
    recipe.parent.mkdir(parents=True, exist_ok=True)
    recipe.write_text(recipe_text(f"capacity-gap-{size}-{arm}", seed, teachers, args.total_steps // len(teachers),
                                  size=size, baselines=(REFERENCE,) if arm == REFERENCE else (), smoke=args.smoke,
                                  lr=args.lr, warmup=args.warmup))
    final = final_model(run_dir, arm)
    if not (final / "metrics.json").is_file():
        command = ["distill", str(recipe), "--run-dir", str(run_dir), "--cache-dir", str(work / "cache")]
        if ekd_edge(command + (["--only", REFERENCE] if arm == REFERENCE else [])) != 0:
            raise SystemExit(f"{label}: ekd-edge distill failed")
    stages = [stage_record(r) for r in model_records(run_dir, REFERENCE if arm == REFERENCE else None)]
    used = [s["teacher"] for s in stages]
    if used != list(teachers) or sum(s["steps"] for s in stages) != args.total_steps:
        raise SystemExit(f"{label}: the run trained with {used}, {[s['steps'] for s in stages]} steps; "
                         f"the arm is {list(teachers)}, {args.total_steps} steps in all")

    test = load_corpus("lo-help-en-de").split("test").head(args.test_sentences or None)
    limit = settings["max_new_tokens"]
    hyps = translate(final, test.src, limit)
    hyps_bytes = gzip.compress("".join(h.replace("\n", " ") + "\n" for h in hyps).encode(), mtime=0)
    out_runs = args.out / "runs"
    write_bytes_atomic(out_runs / f"{label}.test.txt.gz", hyps_bytes)
    checkpoint_score = score(hyps, test.tgt)
    bundle = run_dir / PROFILE
    frontier = measure_frontier(final, bundle, test, limit, args)
    record = {"label": label, "size": size, "arm": arm, "seed": seed, "params": stages[-1]["params"],
              "teacher_l_ratio": round(teacher_l_params() / stages[-1]["params"], 2), "teachers": used,
              "steps_per_stage": [s["steps"] for s in stages], "total_steps": sum(s["steps"] for s in stages),
              "stages": stages, "train_wall_s": round(sum(s["wall_s"] for s in stages), 1),
              "test": {"bleu": round(checkpoint_score["bleu"], 2), "chrf": round(checkpoint_score["chrf"], 2),
                       "sentences": len(test), "fingerprint": test.fingerprint(),
                       "translations": f"{label}.test.txt.gz",
                       "translations_sha256": hashlib.sha256(hyps_bytes).hexdigest()},
              "onefile_int8": frontier, "settings": settings, "code": code}
    record["provenance"] = provenance.end(data={"test": test.fingerprint()}, models=[final, bundle])
    write_json_atomic(out_runs / f"{label}.json", record)


def stage_record(record: dict) -> dict:
    """One trained model's record, with the teacher it learnt from as that model's files say: the
    checkpoint behind the teacher cache it read (a stage) or the one it was given (direct KD)."""
    from ekd_edge.models.teacher import weights_digest

    notes = (record.get("stage_method") or {}).get("teacher_cache") or {}
    if notes.get("path"):
        checkpoint = Path(json.loads((Path(notes["path"]) / "meta.json").read_text())["teacher"])
    else:
        checkpoint = Path(record["teacher"])
    return {"stage": record.get("stage", 1), "teacher": checkpoint.name, "teacher_checkpoint": str(checkpoint),
            "teacher_weights_sha256": weights_digest(checkpoint)[:16], "steps": record["steps"],
            "wall_s": record["wall_s"], "params": record["params"],
            "valid_bleu": round(record["valid"]["bleu"], 2), "valid_chrf": round(record["valid"]["chrf"], 2),
            "train_tokens_per_s": record.get("train_tokens_per_s")}


def translate(model: Path, texts: list[str], limit: int, engine: str | None = None) -> list[str]:
    from ekd_edge.runtime import load_translator

    translator = load_translator(model, threads=1, engine=engine)
    try:
        return translator.translate(texts, max_new_tokens=limit)
    finally:
        translator.close()


def measure_frontier(final: Path, bundle: Path, test, limit: int, args) -> dict:
    """The student as an app ships it (one-file int8, profile onefile-x86): size, test BLEU,
    batch-1 latency on one thread, and memory in a process holding only onnxruntime."""
    from ekd_edge.bench import model_size_mb
    from ekd_edge.export.profiles import load_profile, run_export
    from ekd_edge.metrics import score

    profile = load_profile(PROFILE)
    if args.smoke:   # an untrained student decodes to the limit: gate on a handful of sentences
        profile = replace(profile, gate=replace(profile.gate, parity_sentences=4, quality_sentences=4))
    manifest = run_export(final, bundle, profile, force=True)   # a failed gate is recorded, not fatal
    int8 = score(translate(bundle, test.src, limit, "onnxruntime-onefile"), test.tgt)
    return {"size_mb": round(model_size_mb(bundle), 3), "test_bleu": round(int8["bleu"], 2),
            "test_chrf": round(int8["chrf"], 2), **time_bundle(bundle, test, limit, args),
            "parity": manifest.get("parity"), "quality_gate": manifest.get("quality_gate"),
            "timing_note": "pinned to the run's core; the sweep's other run may be training on the other core"}


def time_bundle(bundle: Path, test, limit: int, args) -> dict:
    """Batch-1 latency of a one-file student on one thread, and its memory in a process of its own."""
    from ekd_edge.bench.provenance import load_average

    load_before = load_average()
    latency = latency_of(bundle, test, limit, args)
    return {"latency": {k: round(v, 3) for k, v in latency.items()}, **memory_of(bundle, test, limit, args),
            "timing_load_average": {"before": load_before, "after": load_average()}}


def latency_of(bundle: Path, test, limit: int, args) -> dict:
    from ekd_edge.bench.speed import measure_latency
    from ekd_edge.runtime import load_translator

    translator = load_translator(bundle, threads=1, engine="onnxruntime-onefile")
    try:
        return measure_latency(translator, test.src[:args.latency_sentences], warmup=2 if args.smoke else 10,
                               max_new_tokens=limit)
    finally:
        translator.close()


def memory_of(bundle: Path, test, limit: int, args) -> dict:
    from ekd_edge.bench.probe import measure_app_footprint

    memory = measure_app_footprint(bundle, "onnxruntime-onefile", test.src[:3 if args.smoke else 20], 1,
                                   max_new_tokens=limit)
    return {"app_memory": {k: memory[k] for k in ("peak_rss_mb", "beyond_python_mb", "model_mb", "load_s")}}


def retime(args, settings: dict) -> None:
    """Time every finished run's one-file student again on a single core, for a frontier whose
    latencies compare like with like: the sweep times each student beside the other run's training,
    and runs made on other machines were timed on other CPUs. One invocation is one pass: its
    students are timed in --rounds round-robin rounds (each round times every student once), so a
    slow minute of the machine lands on every student alike; a student's latency is the median of its
    rounds. Quiet timings of different passes moved by 15-45 % on one VM, so the summary reads the
    latest pass only. Only students still in --work-dir with the bundle their run recorded can be
    timed; each goes to OUT/timing/<label>.json with the pass, this machine's CPU and the load."""
    import torch

    from ekd_edge.bench.provenance import load_average, model_hashes
    from ekd_edge.data.corpus import load_corpus

    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    torch.set_num_threads(1)
    if load_average()[0] > 0.5:
        print(f"[capacity-gap] warning: load average {load_average()} before timing: is something else running?",
              flush=True)
    test = load_corpus("lo-help-en-de").split("test").head(settings["test_sentences"] or None)
    bundles = {}
    for label, record in finished_runs(args.out).items():
        bundle = args.work_dir / record["size"] / f"{record['arm']}-seed{record['seed']}" / PROFILE
        recorded = [v for k, v in record["provenance"]["models"].items() if Path(k).name == PROFILE]
        if bundle.is_dir() and list(model_hashes([bundle]).values()) == recorded:
            bundles[label] = bundle
        else:
            print(f"[capacity-gap] {label}: not timed (its one-file student is not in {args.work_dir}; made on "
                  "another machine?)", flush=True)
    if not bundles:
        return
    pass_id = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    provenance = Provenance.begin(threads=1, settings={**settings, "retime": True, "rounds": args.rounds})
    load_before, rounds = load_average(), {label: [] for label in bundles}
    for k in range(1, args.rounds + 1):
        for label, bundle in bundles.items():
            rounds[label].append(latency_of(bundle, test, settings["max_new_tokens"], args))
        print(f"[capacity-gap] retime round {k} of {args.rounds}: {len(bundles)} students "
              f"(load {load_average()[0]})", flush=True)
    memory = {label: memory_of(bundle, test, settings["max_new_tokens"], args) for label, bundle in bundles.items()}
    load_after, record = load_average(), provenance.end(models=list(bundles.values()))
    for label, bundle in bundles.items():
        latency = {key: round(statistics.median(r[key] for r in rounds[label]), 3) for key in rounds[label][0]}
        write_json_atomic(args.out / "timing" / f"{label}.json", {
            "label": label, "pass": pass_id, "latency": latency,
            "p50_ms_by_round": [round(r["p50_ms"], 3) for r in rounds[label]], **memory[label],
            "timing_load_average": {"before": load_before, "after": load_after},
            "provenance": {**record, "models": {k: v for k, v in record["models"].items() if Path(k) == bundle}}})
        by_round = ", ".join(f"{r['p50_ms']:.2f}" for r in rounds[label])
        print(f"[capacity-gap] {label}: p50 {latency['p50_ms']:.2f} ms (rounds: {by_round})", flush=True)


def teacher_l_params() -> int:
    from ekd_edge.models.checkpoint import config_parameters

    return config_parameters(TEACHER_L)


def code_identity() -> dict:
    """What code ran: the commit's package tree, and a digest of the files as they were (a dirty tree
    included) that commits adding only results leave unchanged, so runs of one sweep can be matched."""
    files = sorted([*(ROOT / "ekd_edge").rglob("*.py"), *(ROOT / "ekd_edge").rglob("*.toml"),
                    ROOT / "benchmarks" / "capacity_gap.py", ROOT / "benchmarks" / "ladder_sweep.py"])
    digest = hashlib.sha256()
    for path in files:
        digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    tree = subprocess.run(["git", "rev-parse", "--verify", "-q", "HEAD:ekd_edge"], cwd=ROOT, capture_output=True,
                          text=True).stdout.strip()
    return {"sha256": digest.hexdigest()[:16], "files": len(files), "ekd_edge_tree_at_head": tree or None}


# ---------------------------------------------------------------------------------------------------
# The sweep: which runs are left, how long they take, and running them two at a time.

def planned_jobs(sizes, seeds) -> list[tuple[str, str, int]]:
    """The design's runs, longest first, so the last runs are short ones (the first two, ekd-s-m-l and
    direct-kd, build the s and l caches side by side, ekd-s-m-l the m cache at its second stage; every
    later run reads them); then the schedule control's, in the same order."""
    order = sorted(sizes, key=lambda s: -PRIOR_S_PER_STEP.get(s, 0.2))
    design = [(size, arm, seed) for size in order for seed in seeds for arm in ("ekd-s-m-l", REFERENCE, "ekd-m-l")]
    return design + [(size, CONTROL, seed) for size in order for seed in seeds]


def finished_runs(out: Path) -> dict[str, dict]:
    return {p.name.removesuffix(".json"): json.loads(p.read_text()) for p in sorted((out / "runs").glob("*.json"))}


def estimate_s(jobs, done: dict, total_steps: int, workers: int, caches_built: bool) -> tuple[float, dict]:
    """Wall seconds left, and the seconds per step used for each size (measured where possible)."""
    rates = {}
    for size in {s for s, _, _ in jobs}:
        measured = [r["train_wall_s"] / r["total_steps"] for r in done.values() if r["size"] == size]
        rates[size] = (round(statistics.median(measured), 3), "measured") if measured else \
            (PRIOR_S_PER_STEP.get(size, 0.2), "prior")
    core_s = sum(total_steps * rates[size][0] + RUN_OVERHEAD_S for size, _, _ in jobs)
    return core_s / max(1, min(workers, len(jobs) or 1)) + (0 if caches_built else CACHES_S), rates


# ---------------------------------------------------------------------------------------------------
# The summary, from the per-run files alone (they may come from several machines and sessions).

def summarise(runs: dict[str, dict], settings: dict, planned, out: Path, provenance: Provenance) -> dict:
    from ekd_edge.data.corpus import load_corpus
    from ekd_edge.distill.compare import paired_bootstrap

    test = load_corpus("lo-help-en-de").split("test").head(settings["test_sentences"] or None)
    rows = sorted(runs.values(), key=lambda r: (r["params"], r["arm"] != REFERENCE, -len(r["teachers"]), r["seed"]))
    for r in rows:
        if r["test"]["fingerprint"] != test.fingerprint():
            raise SystemExit(f"{r['label']}: scored on other test data ({r['test']['fingerprint']})")
        r.update(bleu=r["test"]["bleu"], chrf=r["test"]["chrf"], bleu_p=None, chrf_p=None, compared=False)
    quiet_host = attach_quiet_timings(rows, out)
    for size, seed in sorted({(r["size"], r["seed"]) for r in rows}):
        mine = {r["arm"]: r for r in rows if (r["size"], r["seed"]) == (size, seed)}
        if REFERENCE not in mine:   # no p-values until direct KD of this seed is in
            continue
        hyps = {arm: gzip.decompress((out / "runs" / r["test"]["translations"]).read_bytes()).decode().splitlines()
                for arm, r in mine.items()}
        for arm, entry in bootstrap_seed(hyps, test.tgt).items():
            mine[arm].update(compared=True, **{k: entry[k] for k in ("bleu", "chrf", "bleu_p", "chrf_p", "bleu_ci",
                                                                     "chrf_ci")})
    for size, seed in sorted({(r["size"], r["seed"]) for r in rows}):
        mine = {r["arm"]: r for r in rows if (r["size"], r["seed"]) == (size, seed)}
        if CONTROL in mine and LADDER in mine:   # the ladder against the same schedule with teacher-l only
            pair = {arm: gzip.decompress((out / "runs" / mine[arm]["test"]["translations"]).read_bytes()).decode()
                    .splitlines() for arm in (CONTROL, LADDER)}
            entry = paired_bootstrap(pair, test.tgt, CONTROL)[LADDER]
            mine[LADDER]["over_control"] = {"gain": round(mine[LADDER]["bleu"] - mine[CONTROL]["bleu"], 2),
                                            "bleu_p": round(entry["bleu_p"], 4)}
    summary = []
    for size in dict.fromkeys(r["size"] for r in rows):
        direct = {r["seed"]: r["bleu"] for r in rows if r["size"] == size and r["arm"] == REFERENCE}
        for arm in ARMS:
            mine = [r for r in rows if r["size"] == size and r["arm"] == arm]
            if mine:
                summary.append({"size": size, "arm": arm, "params": mine[0]["params"],
                                "teacher_l_ratio": mine[0]["teacher_l_ratio"], "teachers": list(ARMS[arm]),
                                "steps_per_stage": mine[0]["steps_per_stage"], **over_seeds(mine, direct),
                                **frontier_means(mine)})
    labels = {job_label(*j) for j in planned}
    return {"hypothesis": HYPOTHESIS, "settings": settings, "arms": {a: list(t) for a, t in ARMS.items()},
            "planned": sorted(labels), "missing": sorted(labels - set(runs)), "summary": summary,
            "verdicts": verdicts(summary, rows), "rows": rows, "quiet_host": quiet_host, "code": sorted({r["code"]["sha256"] for r in rows}),
            "provenance": provenance.end(data={"test": test.fingerprint()})}


def attach_quiet_timings(rows: list[dict], out: Path) -> dict | None:
    """Each run's --retime record as r["quiet"], from the latest pass only (one invocation: one CPU,
    one stretch of time; passes on one VM differ by more than the sizes do). Returns that pass's CPU
    environment with "pass" added, or None."""
    timings = {p.stem: json.loads(p.read_text()) for p in sorted((out / "timing").glob("*.json"))}
    latest = max((t.get("pass", "") for t in timings.values()), default=None)
    for r in rows:
        t = timings.get(r["label"])
        r["quiet"] = t if t and t.get("pass", "") == latest else None
    chosen = next((t for t in timings.values() if t.get("pass", "") == latest), None)
    return {**chosen["provenance"]["environment"], "pass": latest or None} if chosen else None


def quiet_p50(rows: list[dict]) -> tuple[float | None, int]:
    """Median quiet p50 over the rows timed by --retime, and how many were."""
    timed = [r["quiet"]["latency"]["p50_ms"] for r in rows if r.get("quiet")]
    return (round(statistics.median(timed), 3) if timed else None), len(timed)


def frontier_means(rows: list[dict]) -> dict:
    f = [r["onefile_int8"] for r in rows]
    return {"int8_mb": f[0]["size_mb"], "int8_bleu_mean": round(statistics.mean(x["test_bleu"] for x in f), 2),
            "p50_ms_median": round(statistics.median(x["latency"]["p50_ms"] for x in f), 2),
            "peak_rss_mb_median": round(statistics.median(x["app_memory"]["peak_rss_mb"] for x in f), 1)}


def third_rung(rows: list[dict], size: str) -> str:
    """ekd-s-m-l minus ekd-m-l, seed by seed: what teacher-s as a first rung adds."""
    by_seed = {(r["arm"], r["seed"]): r["bleu"] for r in rows if r["size"] == size}
    diffs = [b - by_seed[("ekd-m-l", seed)] for (arm, seed), b in by_seed.items()
             if arm == "ekd-s-m-l" and ("ekd-m-l", seed) in by_seed]
    if not diffs:
        return ""
    sd = statistics.stdev(diffs) if len(diffs) > 1 else 0.0
    return f"; teacher-s as a third rung: {statistics.mean(diffs):+.2f} ± {sd:.2f} BLEU (ekd-s-m-l − ekd-m-l)"


def schedule_split(rows: list[dict], size: str) -> str:
    """ekd-s-m-l against kd-l-l-l (the same three-stage schedule, teacher-l at every rung), seed by
    seed: what the smaller teachers add once the restarts are held equal."""
    pairs = [r["over_control"] for r in rows if r["size"] == size and r.get("over_control")]
    if not pairs:
        return ""
    gains = [p["gain"] for p in pairs]
    better = sum(1 for p in pairs if p["bleu_p"] < 0.05 and p["gain"] > 0)
    worse = sum(1 for p in pairs if p["bleu_p"] < 0.05 and p["gain"] < 0)
    sd = statistics.stdev(gains) if len(gains) > 1 else 0.0
    return (f"; over the same schedule with teacher-l at every rung ({CONTROL}): {statistics.mean(gains):+.2f} ± "
            f"{sd:.2f} BLEU, better at p < 0.05 in {better} of {len(pairs)} seeds, worse in {worse}")


def verdicts(summary: list[dict], rows: list[dict]) -> list[str]:
    """Plain sentences: which arm to choose at each size, and whether the gain grows with the gap."""
    lines, gains = [], []
    for size in dict.fromkeys(s["size"] for s in summary):
        arms = {s["arm"]: s for s in summary if s["size"] == size}
        ratio = next(iter(arms.values()))["teacher_l_ratio"]
        ladders = [s for a, s in arms.items() if a not in (REFERENCE, CONTROL) and s["gain_mean"] is not None]
        if REFERENCE not in arms or not ladders:
            lines.append(f"{size} ({ratio}x): not enough runs yet")
            continue
        best = max(ladders, key=lambda s: s["gain_mean"])
        gains.append((ratio, size, best["gain_mean"]))
        said = (f"{best['arm']} {best['gain_mean']:+.2f} ± {best['gain_sd']:.2f} BLEU over direct KD, better at "
                f"p < 0.05 in {best['better_p05']} of {best['seeds']} seeds, worse in {best['worse_p05']}"
                + third_rung(rows, size) + schedule_split(rows, size))
        if best["gain_mean"] <= 0:
            lines.append(f"{size} ({ratio}x): direct KD is the better choice: no ladder beats it on mean BLEU "
                         f"(best ladder: {said})")
        elif best["better_p05"] * 2 > best["seeds"] and not best["worse_p05"]:
            lines.append(f"{size} ({ratio}x): the ladder pays: {said}")
        else:
            lines.append(f"{size} ({ratio}x): no reliable gain, so direct KD (one teacher) is the simpler choice: "
                         f"{said}")
    if len(gains) > 1:
        gains.sort()
        grows = all(a[2] < b[2] for a, b in zip(gains, gains[1:]))
        lines.append("hypothesis: the best ladder's gain by teacher/student ratio is "
                     + ", ".join(f"{g:+.2f} at {r}x ({s})" for r, s, g in gains)
                     + (": it grows with the ratio" if grows else ": it does not grow steadily with the ratio"))
    return lines


def markdown(result: dict) -> str:
    from ekd_edge.markdown import mean_sd, number, p_value, provenance_footer, table

    st, rows = result["settings"], result["rows"]
    done, planned = len(rows), len(result["planned"])
    status = ("SMOKE RUN: a check of the script, not a result. " if st["smoke"] else "") + \
        (f"PARTIAL: {done} of {planned} runs; missing: {', '.join(result['missing'])}." if result["missing"]
         else f"Complete: {done} runs.")
    total = st["total_steps"]
    lines = ["# Capacity-gap sweep: where the EKD ladder pays", "",
             f"**Hypothesis** (stated before running): {result['hypothesis']}.", "", status, "",
             f"Teacher-l: {teacher_l_params():,} parameters. Every arm: {total} student steps of "
             f"{st['batch_tokens']} tokens, lr {st['lr']}, {st['warmup_per_stage']} warm-up steps a stage: "
             f"direct-kd {total} from teacher-l; ekd-m-l {total // 2} + {total // 2} (m, l); ekd-s-m-l "
             f"{' + '.join([str(total // 3)] * 3)} (s, m, l); {CONTROL}, the schedule control, "
             f"{' + '.join([str(total // 3)] * 3)} (l, l, l). Test: lo-help-en-de, "
             f"{rows[0]['test']['sentences'] if rows else '?'} sentences, greedy; p: paired bootstrap (1000 "
             "resamples) against direct-kd of the same seed. Gain: BLEU minus direct-kd's, seed by seed.", "",
             "## By size", ""]
    lines.append(table(
        ["student", "params", "teacher-l / student", "arm", "seeds", "test BLEU", "chrF", "gain over direct-kd",
         "better, p < 0.05", "worse, p < 0.05"],
        [[s["size"], f"{s['params']:,}", f"{s['teacher_l_ratio']}x", s["arm"], s["seeds"],
          mean_sd(s["bleu_mean"], s["bleu_sd"]), mean_sd(s["chrf_mean"], s["chrf_sd"]),
          "ref." if s["arm"] == REFERENCE else mean_sd(s["gain_mean"], s["gain_sd"]),
          s["better_p05"], s["worse_p05"]] for s in result["summary"]], align="lrrlrrrrrr"))
    lines += ["What the numbers say:", ""] + [f"- {v}" for v in result["verdicts"]] + [""]
    controlled = [r for r in rows if r.get("over_control")]
    if controlled:
        lines += ["## The ladder against the schedule control", "",
                  f"{LADDER} and {CONTROL} share the schedule (three stages, each with its own warm-up and decay, "
                  f"each warm-started from the last); only the teachers of the first two stages differ. p: paired "
                  f"bootstrap of {LADDER} against {CONTROL} of the same seed.", ""]
        by = {(r["size"], r["arm"], r["seed"]): r for r in rows}
        lines.append(table(
            ["student", "seed", f"{LADDER} BLEU", f"{CONTROL} BLEU", "direct-kd BLEU", "ladder − control", "p"],
            [[r["size"], r["seed"], number(r["bleu"]), number(by[(r["size"], CONTROL, r["seed"])]["bleu"]),
              number(by[(r["size"], REFERENCE, r["seed"])]["bleu"]) if (r["size"], REFERENCE, r["seed"]) in by
              else "–", f"{r['over_control']['gain']:+.2f}", p_value(r["over_control"]["bleu_p"])]
             for r in controlled], align="lrrrrrr"))
        lines.append("")
    lines += ["## Per run", "",
              "Validation BLEU after each stage (the recipe's validation subset): the ladder's curve; direct-kd "
              "has one stage.", ""]
    lines.append(table(
        ["student", "arm", "seed", "teachers used", "steps", "test BLEU", "p", "chrF", "p", "valid BLEU per stage",
         "train s"],
        [[r["size"], r["arm"], r["seed"], " → ".join(t.removeprefix("teacher-") for t in r["teachers"]),
          " + ".join(map(str, r["steps_per_stage"])), number(r["bleu"]),
          p_value(r["bleu_p"]) if r["compared"] else "–", number(r["chrf"]),
          p_value(r["chrf_p"]) if r["compared"] else "–", " → ".join(f"{s['valid_bleu']:.2f}" for s in r["stages"]),
          number(r["train_wall_s"], ".0f")] for r in rows], align="llrllrrrrlr"))
    lines += ["", "## Frontier: quality against deploy cost", "",
              f"Every final student exported with the {PROFILE} profile (one file, block-wise int8), scored on the "
              f"test split, timed at batch 1 on one thread over {st['latency_sentences']} test sentences (text in, "
              "text out), "
              "and measured in a fresh process holding only onnxruntime (peak resident set; \"beyond Python\": "
              "the runtime's and the model's share). In the sweep each student is timed on its run's own core "
              "while the other run may be training on the other core, on whatever machine made the run; "
              "\"quiet\" latencies come from the latest `--retime` pass: the students still on one machine "
              "timed again on one core, nothing else running, in round-robin rounds, a student's latency the "
              "median of its rounds"
              + (f" ({quiet_cpu(result)})." if result.get("quiet_host") else " (none yet)."), "",
              "![BLEU against latency; marker area: one-file int8 size](frontier.png)", "",
              "Per student size: its best arm by one-file int8 test BLEU (mean over seeds); latency: the median "
              "over every student of the size timed quietly (the architecture sets it; the arm changes only how "
              "many tokens come out), and in the sweep; memory: the best arm's median.", ""]
    sizes = {}
    for s in result["summary"]:
        if s["size"] not in sizes or s["int8_bleu_mean"] > sizes[s["size"]]["int8_bleu_mean"]:
            sizes[s["size"]] = s
    size_rows = []
    for s in sizes.values():
        median, timed = quiet_p50([r for r in rows if r["size"] == s["size"]])
        size_rows.append([s["size"], f"{s['params']:,}", s["arm"], s["int8_bleu_mean"], number(s["int8_mb"]),
                          number(median), f"{timed} of {sum(r['size'] == s['size'] for r in rows)}",
                          number(s["p50_ms_median"]), number(s["peak_rss_mb_median"], ".1f")])
    lines.append(table(
        ["student", "params", "best arm", "int8 test BLEU", "int8 MB", "p50 ms, quiet", "timed quietly",
         "p50 ms, in the sweep", "peak RSS MB"], size_rows, align="lrlrrrrrr"))
    lines += ["", "Every final student:", ""]
    lines.append(table(
        ["student", "arm", "seed", "params", "test BLEU", "int8 test BLEU", "int8 MB", "p50 ms, quiet",
         "p50 ms, in the sweep", "p90 ms, in the sweep", "peak RSS MB", "beyond Python MB", "gate"],
        [[r["size"], r["arm"], r["seed"], f"{r['params']:,}", r["bleu"], f["test_bleu"], number(f["size_mb"]),
          number(r["quiet"]["latency"]["p50_ms"]) if r.get("quiet") else "–",
          number(f["latency"]["p50_ms"]), number(f["latency"]["p90_ms"]),
          number(f["app_memory"]["peak_rss_mb"], ".1f"), number(f["app_memory"]["beyond_python_mb"], ".1f"),
          (f.get("quality_gate") or {}).get("status", "–")]
         for r in rows for f in [r["onefile_int8"]]], align="llrrrrrrrrrrl"))
    lines += ["", "## Provenance", "",
              "Each run records its own: commit, tree state, machine, load before and after, and a digest of the "
              "code that ran (ekd_edge and this script as files, so commits that only add results leave it "
              f"unchanged): {', '.join(f'`{c}`' for c in result['code']) or 'none yet'}"
              + (" (one code for every run)." if len(result["code"]) == 1 else "."), ""]
    lines.append(table(
        ["run", "commit", "tree", "CPU", "load before", "load after", "finished (UTC)"],
        [[r["label"], (r["provenance"]["commit"] or "?")[:10], "dirty" if r["provenance"]["dirty"] else "clean",
          r["provenance"]["environment"]["cpu"], str(r["provenance"]["load_average_before"]),
          str(r["provenance"]["load_average_after"]), r["provenance"]["environment"]["measured_at"]] for r in rows]))
    lines += ["", provenance_footer(result["provenance"],
                                    heading="This invocation (training, if any, and the summary)")]
    return "\n".join(lines)


def quiet_cpu(result: dict) -> str:
    host = result["quiet_host"]
    flags = [name for name, present in (host.get("cpu_flags") or {}).items() if present]
    started = f"pass started {host['pass']}, " if host.get("pass") else ""
    return f"{started}{host['cpu']}, {', '.join(flags) or 'no int8 flags'}"


def frontier_png(result: dict) -> bytes:
    """BLEU (one-file int8, test) against batch-1 latency, one marker per final student; area ~ int8 MB.
    Latency: the quiet one where --retime has timed students (only those are drawn), else the sweep's."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5), dpi=120)
    colours = dict(zip(ARMS, ("tab:gray", "tab:blue", "tab:orange", "tab:green")))
    quiet = any(r.get("quiet") for r in result["rows"])
    drawn = [r for r in result["rows"] if r.get("quiet") or not quiet]

    def p50(r):
        return (r["quiet"] if quiet else r["onefile_int8"])["latency"]["p50_ms"]

    for arm, colour in colours.items():
        mine = [r for r in drawn if r["arm"] == arm]
        ax.scatter([p50(r) for r in mine], [r["onefile_int8"]["test_bleu"] for r in mine],
                   s=[40 * r["onefile_int8"]["size_mb"] for r in mine], c=colour, alpha=0.6, edgecolors="k",
                   linewidths=0.5, label=f"{arm} ({' → '.join(t.removeprefix('teacher-') for t in ARMS[arm])})")
    for size in dict.fromkeys(r["size"] for r in drawn):
        mine = [r for r in drawn if r["size"] == size]
        ax.annotate(f"{size} ({mine[0]['onefile_int8']['size_mb']:.1f} MB)", (max(map(p50, mine)),
                    statistics.mean(r["onefile_int8"]["test_bleu"] for r in mine)), xytext=(8, 0),
                    textcoords="offset points", fontsize=8, va="center")
    ax.set_xlabel("p50 latency, ms per sentence (batch 1, one thread, one-file int8"
                  + (f"; quiet, {result['quiet_host']['cpu']})" if quiet else "; timed in the sweep)"))
    ax.set_ylabel("test BLEU (one-file int8)")
    ax.set_title("Capacity-gap sweep: quality against deploy cost"
                 + (" (SMOKE)" if result["settings"]["smoke"] else ""))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right", markerscale=0.5)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), help="student size presets")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--total-steps", type=int, default=TOTAL_STEPS,
                        help="student steps of every arm (a multiple of 6: split into 1, 2 or 3 stages)")
    parser.add_argument("--workers", type=int, default=min(2, len(os.sched_getaffinity(0))))
    parser.add_argument("--work-dir", type=Path, default=ROOT / "runs" / "capacity-gap")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--test-sentences", type=int, default=0, help="0 = the whole test split (1,086)")
    parser.add_argument("--latency-sentences", type=int, default=200, help="test sentences timed per student")
    parser.add_argument("--lr", type=float, default=2e-3, help="peak learning rate of every stage (the demo's)")
    parser.add_argument("--warmup", type=int, default=150, help="warm-up steps of every stage (the demo's)")
    parser.add_argument("--hours", type=float, default=0,
                        help="start no run after this many hours (running ones finish; then the summary): for "
                             "sessions of limited length (0 = until done)")
    parser.add_argument("--report", action="store_true", help="only render the summary from OUT/runs/")
    parser.add_argument("--retime", action="store_true",
                        help="time the finished students still in --work-dir again, one at a time on one core "
                             "(run it on an idle machine), then render the summary")
    parser.add_argument("--rounds", type=int, default=5,
                        help="--retime: round-robin rounds over the students (a student's latency: the median)")
    parser.add_argument("--smoke", action="store_true",
                        help="sizes nano and micro, 6 steps, 1 seed, 300 pairs: a check, not a result")
    parser.add_argument("--job", nargs=3, metavar=("SIZE", "ARM", "SEED"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.smoke:
        args.sizes, args.seeds, args.total_steps = list(SMOKE_SIZES), args.seeds[:1], 6
        args.test_sentences, args.latency_sentences = args.test_sentences or 10, min(args.latency_sentences, 5)
        args.rounds = min(args.rounds, 2)
        if args.out.resolve() == RESULTS.resolve():
            raise SystemExit("--smoke writes no committed result: give --out")
    if args.rounds < 1:
        raise SystemExit(f"--rounds {args.rounds}: must be at least 1")
    if args.total_steps <= 0 or args.total_steps % 6:
        raise SystemExit(f"--total-steps {args.total_steps}: must be a positive multiple of 6 (1, 2 or 3 stages)")
    args.work_dir, args.out = args.work_dir.resolve(), args.out.resolve()
    if args.job:
        size, arm, seed = args.job
        run_job(args, size, arm, int(seed))
        return 0

    settings = settings_of(args)
    provenance = Provenance.begin(threads=1, settings=settings)
    done = finished_runs(args.out)
    other = sorted(label for label, r in done.items() if r["settings"] != settings)
    if other:
        raise SystemExit(f"{args.out}/runs holds runs made with other settings ({', '.join(other[:3])}...): "
                         f"rerun with theirs ({done[other[0]]['settings']}) or give another --out")
    if args.retime:
        retime(args, settings)
    elif not args.report:
        jobs = [j for j in planned_jobs(args.sizes, args.seeds) if job_label(*j) not in done]
        seconds, rates = estimate_s(jobs, done, args.total_steps, args.workers,
                                    caches_built=bool(done) or (args.work_dir / "cache").is_dir())
        print(f"[capacity-gap] {len(done)} runs done, {len(jobs)} to go on {args.workers} workers: about "
              f"{seconds / 3600:.1f} h (s/step: {', '.join(f'{s} {r} {k}' for s, (r, k) in sorted(rates.items()))}; "
              f"+{RUN_OVERHEAD_S} s a run for scoring, export and timing)", flush=True)
        passed = ["--total-steps", str(args.total_steps), "--work-dir", str(args.work_dir), "--out", str(args.out),
                  "--test-sentences", str(args.test_sentences), "--latency-sentences", str(args.latency_sentences),
                  "--lr", str(args.lr), "--warmup", str(args.warmup)] + (["--smoke"] if args.smoke else [])
        run_pinned([(job_label(*j), [sys.executable, str(Path(__file__).resolve()), "--job", j[0], j[1], str(j[2]),
                                     *passed], args.work_dir / "logs" / f"{job_label(*j)}.log") for j in jobs],
                   args.workers, "capacity-gap",
                   start_before=time.monotonic() + args.hours * 3600 if args.hours else None)
    result = summarise(finished_runs(args.out), settings, planned_jobs(args.sizes, args.seeds), args.out, provenance)
    write_json_atomic(args.out / "result.json", result)
    write_bytes_atomic(args.out / "frontier.png", frontier_png(result))
    write_text_atomic(args.out / "result.md", markdown(result))
    for line in result["verdicts"]:
        print(line)
    print(f"wrote {args.out / 'result.md'} ({len(result['rows'])} of {len(result['planned'])} runs)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
