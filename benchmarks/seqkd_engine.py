"""Sequence-level KD targets decoded by CTranslate2 instead of PyTorch: how much faster, and does a
student trained on them learn as well?

    .venv/bin/python benchmarks/seqkd_engine.py                      # ~25 min on 2 cores
    .venv/bin/python benchmarks/seqkd_engine.py --smoke --out /tmp/se # a minute: the script end to end

1. Speed (run it on a quiet machine): teacher-l (10.0M parameters) translates the first
   --speed-sentences training sources greedily, batch 32, through PyTorch (``generate``, what
   seq-KD used before) and through CTranslate2 int8 (the weights converted once; the conversion is
   timed apart), on one thread and on every core, the engines alternating for three rounds
   (median kept). Sentences per second of each, and how many translations are identical.
2. Quality: two students (the demo's tiny preset, the same seed, data and steps) each trained by one
   seq-KD stage on teacher-l's greedy translations of --train-pairs training sources (mix
   "distilled": the translations alone), decoded by ``[distill] teacher_engine = "pytorch"`` or
   ``"ctranslate2"``. The two runs train side by side, each pinned to its own core. Both translate
   the lo-help test split; sacrebleu's paired bootstrap compares them (reference: the PyTorch arm).

Writes OUT (default benchmarks/results/seqkd-engine/): result.json, result.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from ekd_edge.bench.provenance import Provenance, write_result  # noqa: E402
from ekd_edge.markdown import number, p_value, provenance_footer, table  # noqa: E402
from ladder_sweep import model_records, recipe_text, run_pinned  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "seqkd-engine"
TEACHER_L = ROOT / "ekd_edge" / "teachers" / "lo-help-en-de" / "teacher-l"
ENGINES = ("pytorch", "ctranslate2")
SEQ_KD = 'method = "seq_kd"\nseqkd_beams = 1\nseqkd_mix = "distilled"\n'


def measure_speed(sentences: list[str], work: Path, rounds: int = 3) -> dict:
    """Greedy translations of ``sentences`` by teacher-l through each engine, batch 32, on one thread
    and on every core; the engines alternate for ``rounds`` rounds and each keeps its median time."""
    import statistics

    import torch

    from ekd_edge.data.tokenizer import load_tokenizer
    from ekd_edge.distill.seqkd import SeqKDSettings, beam_decode
    from ekd_edge.distill.teacher_engine import Ct2TeacherDecoder
    from ekd_edge.models.teacher import load_teacher

    teacher = load_teacher("teacher-l", TEACHER_L, "native", load_tokenizer(TEACHER_L))
    settings = SeqKDSettings(beams=1, max_new_tokens=64, batch_size=32)
    start = time.perf_counter()
    Ct2TeacherDecoder(teacher, work / "speed-cache", "cpu", threads=1)   # the conversion, once
    convert_s = time.perf_counter() - start
    out = {"sentences": len(sentences), "rounds": rounds, "conversion_s": round(convert_s, 2), "by_threads": {}}
    for threads in sorted({1, len(os.sched_getaffinity(0))}):
        torch.set_num_threads(threads)
        decoder = Ct2TeacherDecoder(teacher, work / "speed-cache", "cpu", threads=threads)
        run = {"pytorch": lambda: beam_decode(teacher, teacher.tokenizer, sentences, sentences, settings),
               "ctranslate2": lambda: beam_decode(teacher, teacher.tokenizer, sentences, sentences, settings, decoder)}
        for engine in run:   # warm-up
            beam_decode(teacher, teacher.tokenizer, sentences[:32], sentences[:32], settings,
                        decoder if engine == "ctranslate2" else None)
        times, texts = {e: [] for e in run}, {}
        for _ in range(rounds):
            for engine, decode in run.items():
                start = time.perf_counter()
                texts[engine] = decode()
                times[engine].append(time.perf_counter() - start)
        median = {e: statistics.median(t) for e, t in times.items()}
        out["by_threads"][str(threads)] = {
            "pytorch_s": round(median["pytorch"], 4), "ctranslate2_s": round(median["ctranslate2"], 4),
            "pytorch_sent_per_s": round(len(sentences) / median["pytorch"], 1),
            "ctranslate2_sent_per_s": round(len(sentences) / median["ctranslate2"], 1),
            "speedup": round(median["pytorch"] / median["ctranslate2"], 2),
            "rounds_s": {e: [round(x, 4) for x in t] for e, t in times.items()},
            "identical": sum(a == b for a, b in zip(texts["pytorch"], texts["ctranslate2"])),
            "quantization": decoder.quantization}
    torch.set_num_threads(1)
    return out


def train_arms(args) -> dict:
    """The two students, side by side on two cores; each arm's run records which engine decoded."""
    recipes, jobs = args.work_dir / "recipes", []
    recipes.mkdir(parents=True, exist_ok=True)
    for engine in ENGINES:
        text = recipe_text(f"seqkd-{engine}", args.seed, ("teacher-l",), args.steps, stages=(SEQ_KD,),
                           smoke=args.smoke)
        text = text.replace("[distill]\n", f'[distill]\nteacher_engine = "{engine}"\n', 1)
        if not args.smoke:   # the smoke recipe already limits the pairs
            text = text.replace("[data]\n", f"[data]\nmax_train_pairs = {args.train_pairs}\n", 1)
        path = recipes / f"{engine}.toml"
        path.write_text(text)
        command = [sys.executable, "-m", "ekd_edge", "distill", str(path), "--run-dir", str(args.work_dir / engine),
                   "--cache-dir", str(args.work_dir / f"cache-{engine}")]
        jobs.append((engine, command, args.work_dir / "logs" / f"{engine}.log"))
    walls = run_pinned(jobs, min(2, len(os.sched_getaffinity(0))), "seqkd-engine")
    arms = {}
    for engine in ENGINES:
        (record,) = model_records(args.work_dir / engine)
        seqkd = (record.get("stage_method") or {}).get("seqkd") or {}
        if seqkd.get("engine") != engine:   # the arm is what the run says it did, not what it was asked
            raise SystemExit(f"{engine} arm: the run's seq-KD targets were decoded by {seqkd.get('engine')!r}")
        arms[engine] = {"run_dir": str(args.work_dir / engine), "wall_s": walls.get(engine), "steps": record["steps"],
                        "valid_bleu": record["valid"]["bleu"], "seqkd": seqkd}
    return arms


def evaluate(args, arms: dict) -> dict:
    from ekd_edge.data.corpus import load_corpus
    from ekd_edge.distill.compare import paired_bootstrap
    from ekd_edge.runtime.torch_engine import TorchTranslator

    test = load_corpus("lo-help-en-de").split("test").head(args.test_sentences or None)
    hyps = {engine: TorchTranslator(Path(arms[engine]["run_dir"]) / "students" / "stage-1").translate(
        test.src, max_new_tokens=128) for engine in ENGINES}
    stats = paired_bootstrap(hyps, test.tgt, "pytorch")
    return {"sentences": len(test), "fingerprint": test.fingerprint(),
            "scores": {engine: {k: (round(v, 4) if isinstance(v, float) else v) for k, v in entry.items()}
                       for engine, entry in stats.items()},
            "first_translations": {engine: hyps[engine][:3] for engine in ENGINES}}


def markdown(result: dict) -> str:
    s = result["speed"]
    rows = [[threads, "PyTorch generate" if e == "pytorch" else f"CTranslate2 {r['quantization']}", r[f"{e}_s"],
             r[f"{e}_sent_per_s"], f"{r['speedup']:.2f}x" if e == "ctranslate2" else "",
             r["identical"] if e == "ctranslate2" else ""]
            for threads, r in s["by_threads"].items() for e in ENGINES]
    lines = ["# Seq-KD targets: CTranslate2 against PyTorch", "",
             f"Teacher-l greedy, batch 32, the first {s['sentences']} lo-help training sources; the engines "
             f"alternate for {s['rounds']} rounds, each keeps its median time. Threads: PyTorch's intra-op "
             "threads; CTranslate2 as seq-KD runs it (one batch a thread).", "",
             table(["threads", "engine", "seconds", "sentences/s", "CTranslate2 speed-up", "identical translations"],
                   rows, align="rlrrrr"),
             f"Converting the teacher took {s['conversion_s']:.1f} s, once.", ""]
    q = result["quality"]
    rows = []
    for engine in ENGINES:
        sc, arm = q["scores"][engine], result["arms"][engine]
        rows.append([engine, arm["steps"], (arm["seqkd"] or {}).get("pairs"), sc["bleu"],
                     f"{number(sc['bleu_mean'])} ± {number(sc['bleu_ci'])}", p_value(sc["bleu_p"]), sc["chrf"],
                     p_value(sc["chrf_p"])])
    lines += [f"## Students trained on each engine's targets ({q['sentences']} test sentences)", "",
              table(["targets decoded by", "steps", "training pairs", "BLEU", "95% CI", "p", "chrF", "p (chrF)"],
                    rows, align="lrrrrrrr"),
              "p: paired bootstrap against the student trained on PyTorch-decoded targets.", "",
              provenance_footer(result["provenance"])]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--speed-sentences", type=int, default=600)
    parser.add_argument("--train-pairs", type=int, default=8000)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--test-sentences", type=int, default=0, help="0 = the whole test split")
    parser.add_argument("--work-dir", type=Path, default=ROOT / "runs" / "seqkd-engine")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--smoke", action="store_true", help="40 sentences, 300 pairs, 4 steps: a check, not a result")
    args = parser.parse_args()
    if args.smoke:
        args.speed_sentences, args.steps, args.test_sentences = 40, 4, args.test_sentences or 20
        if args.out.resolve() == RESULTS.resolve():
            raise SystemExit("--smoke writes no committed result: give --out")
    args.work_dir, args.out = args.work_dir.resolve(), args.out.resolve()
    # fresh arms: finished students or cached targets of an earlier run (another decoder's settings,
    # say) would be reused silently; only what this script makes is removed
    for name in ("speed-cache", "recipes", "logs", *ENGINES, *(f"cache-{e}" for e in ENGINES)):
        shutil.rmtree(args.work_dir / name, ignore_errors=True)
    settings = {k: str(v) for k, v in vars(args).items()}
    provenance = Provenance.begin(threads=1, settings=settings)
    from ekd_edge.data.corpus import load_corpus

    train = load_corpus("lo-help-en-de").split("train")
    result = {"speed": measure_speed(train.src[:args.speed_sentences], args.work_dir)}
    result["arms"] = train_arms(args)
    result["quality"] = evaluate(args, result["arms"])
    result["provenance"] = provenance.end(data={"train": train.fingerprint(), "test": result["quality"]["fingerprint"]},
                                          models=[TEACHER_L])
    write_result(args.out, result, markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
