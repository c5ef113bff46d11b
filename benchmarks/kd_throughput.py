"""Training throughput of one student step: CE only, KD with an online teacher, KD from a top-k cache.

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 .venv/bin/python benchmarks/kd_throughput.py \
        [--pairs 4000] [--steps 20] [--rounds 3] [--k 8 32]

It uses the demo's top teacher (the shipped teacher-l, 10.0M parameters) with its tokenizer, and a
fresh student of the demo's size ("tiny", 1.24M). The teacher cache is built once before timing (its build time is
reported separately: it is paid once per teacher and data, not per step). Methods are timed in
interleaved rounds (CE, online, cached, CE, …) so a busy neighbour slows all of them alike; the
reported figure is each method's median round, in target tokens per second.

Writes benchmarks/results/kd-throughput/result.json and result.md (or into --out).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's package, whatever is installed
RESULTS = ROOT / "benchmarks" / "results" / "kd-throughput"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", type=Path, default=ROOT / "ekd_edge/teachers/lo-help-en-de/teacher-l",
                        help="a Marian checkpoint with its tokenizer")
    parser.add_argument("--pairs", type=int, default=4000)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per method per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--k", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    from ekd_edge.bench.provenance import Provenance
    from ekd_edge.markdown import number, provenance_footer, table

    provenance = Provenance.begin(threads=args.threads, settings={"pairs": args.pairs, "steps": args.steps,
                                                                  "rounds": args.rounds, "k": args.k})

    import torch

    torch.set_num_threads(args.threads)
    from ekd_edge.data import load_corpus
    from ekd_edge.data.tokenizer import load_tokenizer
    from ekd_edge.distill.batches import BatchStream, tokenize_pairs
    from ekd_edge.distill.recipe import DistillSettings, TrainingSettings
    from ekd_edge.distill.teacher_cache import CachedTeacher, OnlineTeacher, build_teacher_cache
    from ekd_edge.distill.trainer import train
    from ekd_edge.models import build_model, count_parameters, load_model

    teacher_dir = tokenizer_dir = args.teacher
    if not (teacher_dir / "model.safetensors").is_file():
        print(f"error: {teacher_dir} has no model.safetensors", file=sys.stderr)
        return 2
    tokenizer = load_tokenizer(tokenizer_dir)
    teacher = load_model(teacher_dir, expected_vocab=tokenizer_dir).eval()
    text = load_corpus("lo-help-en-de").split("train").head(args.pairs)
    pairs = tokenize_pairs(tokenizer, text.src, text.tgt, max_length=32)
    settings = TrainingSettings(batch_tokens=2048, lr=1e-3, warmup_steps=10, label_smoothing=0.1)
    distill = DistillSettings(loss="forward_kl", alpha=0.5, temperature=1.0)
    stream = BatchStream(pairs, settings.batch_tokens, seed=0)

    cache_root = Path(tempfile.mkdtemp(prefix="kd-cache-"))
    caches, build_s = {}, {}
    for k in args.k:
        start = time.perf_counter()
        caches[k] = build_teacher_cache(teacher, teacher_dir, pairs, cache_root, k, distill.temperature)
        build_s[k] = round(time.perf_counter() - start, 2)

    methods = {"ce_only": lambda: (None, None), "online_teacher": lambda: (None, OnlineTeacher(teacher, distill.loss, 1.0, 0.5))}
    for k in args.k:
        methods[f"cached_top{k}"] = lambda k=k: (None, CachedTeacher(caches[k], stream, distill.loss, 1.0, 0.5))
    rates: dict[str, list[float]] = {name: [] for name in methods}
    student_params = None
    for round_index in range(args.rounds):
        for name, make in methods.items():
            student = build_model("tiny", len(tokenizer), seed=1)
            student_params = count_parameters(student)
            _, term = make()
            first = round_index * args.steps   # same batches for every method within a round
            result = train(student, stream, args.steps, settings, distill=distill if term else None,
                           kd_term=term, description=f"{name} r{round_index + 1}", first_batch=first)
            rates[name].append(result.tokens_per_s)
    summary = {name: round(statistics.median(values), 1) for name, values in rates.items()}
    ratios = {name: round(summary[name] / summary["ce_only"], 3) for name in summary}
    result = {
        "command": "OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 .venv/bin/python benchmarks/kd_throughput.py "
                   + " ".join(sys.argv[1:]),
        "what": "target tokens/s of a full student training step (forward, loss, backward, clip, AdamW)",
        "median_tokens_per_s": summary,
        "ratio_to_ce_only": ratios,
        "all_rounds_tokens_per_s": {n: [round(v, 1) for v in vals] for n, vals in rates.items()},
        "cache_build_s": build_s,
        "cache_bytes": {k: sum(f.stat().st_size for f in caches[k].directory.iterdir()) for k in args.k},
        "settings": {"pairs": len(pairs), "steps_per_round": args.steps, "rounds": args.rounds,
                     "batch_tokens": settings.batch_tokens, "max_length": 32, "loss": distill.loss,
                     "student": f"tiny ({student_params:,} params)",
                     "teacher": f"{teacher_dir.relative_to(ROOT) if teacher_dir.is_relative_to(ROOT) else teacher_dir} "
                                f"({count_parameters(teacher):,} params)",
                     "vocab": len(tokenizer), "threads": args.threads},
        "machine_note": "methods were interleaved per round so they saw the same conditions",
    }
    result["provenance"] = provenance.end(models=[teacher_dir])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "result.json").write_text(json.dumps(result, indent=2))
    lines = ["# Student step throughput: CE only vs online teacher vs cached top-k", "",
             f"Command: `{result['command']}`", "",
             table(["method", "target tokens/s (median of rounds)", "× CE-only"],
                   [[n, summary[n], ratios[n]] for n in summary], formats={1: lambda v: number(v, ",.0f")}),
             f"Cache build (once per teacher + data + k): {build_s} s; on disk: {result['cache_bytes']} bytes.",
             f"Settings: {result['settings']}", "", "Methods were interleaved per round.", "",
             provenance_footer(result["provenance"])]
    (args.out / "result.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
