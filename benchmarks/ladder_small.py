"""Which distillation method gives the best small student? Six methods, same data, same steps.

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 .venv/bin/python benchmarks/ladder_small.py \
        [--run-dir runs/ladder-small] [--test-sentences 500]

1. `ekd-edge distill benchmarks/ladder-small.toml --baselines`: the two teachers, the EKD student
   (word-level KD from each teacher in turn) and the baselines "ce-only" and "direct-kd" (word KD
   from the top teacher alone), all students with the same total steps.
2. Three variants of the EKD ladder reuse those teachers (as checkpoints), the tokenizer and the
   teacher caches: stage 2 by sequence-level KD, stage 2 by speculative KD, stage 1 initialised
   by copying every other layer of the narrow teacher.
3. `ekd-edge compare` on the test split: BLEU/chrF with paired-bootstrap 95% intervals and
   p-values against the EKD student, plus per-stage validation scores (the curves) and wall time.

Writes benchmarks/results/ladder-small/ (or --out): result.json, result.md, compare-test.md.
A smaller --recipe (two teachers, two stages, the same tables) checks the script in a minute.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's package, whatever is installed
RECIPE = ROOT / "benchmarks" / "ladder-small.toml"
RESULTS = ROOT / "benchmarks" / "results" / "ladder-small"

VARIANTS = {
    "ekd-seqkd": '[[stage]]\nmethod = "word_kd"\nteacher_cache_k = 8\n'
                 '[[stage]]\nmethod = "seq_kd"\nseqkd_beams = 2\nseqkd_mix = "both"\nteacher_cache_k = 8\n',
    "ekd-speculative": '[[stage]]\nmethod = "word_kd"\nteacher_cache_k = 8\n'
                       '[[stage]]\nmethod = "speculative"\nspec_k = 25\nspec_block = 5\n',
    "ekd-copyinit": '[[stage]]\nmethod = "word_kd"\nteacher_cache_k = 8\ninit = "copy:every_other"\n'
                    '[[stage]]\nmethod = "word_kd"\nteacher_cache_k = 8\n',
}


def variant_text(base_text: str, run_dir: Path, stages: str, name: str) -> str:
    """The base recipe with checkpoint teachers and other [[stage]] tables."""
    base = tomllib.loads(base_text)
    head = base_text.split("[[teacher]]")[0].replace(f'name = "{base["name"]}"', f'name = "{base["name"]}-{name}"')
    teachers = "".join(f'[[teacher]]\nname = "{t["name"]}"\ncheckpoint = "{run_dir / "teachers" / t["name"]}"\n\n'
                       for t in base["teacher"])
    tail = "[student]" + base_text.split("[student]")[1].split("[[stage]]")[0]
    return head + teachers + tail + stages


def run(command: list[str]) -> float:
    import subprocess

    start = time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
    return round(time.perf_counter() - start, 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", type=Path, default=ROOT / "runs" / "ladder-small")
    parser.add_argument("--test-sentences", type=int, default=500)
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--recipe", type=Path, default=RECIPE,
                        help="the ladder (two teachers, two word-KD stages); a smaller one checks the script")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    from ekd_edge.bench.provenance import Provenance

    threads = int(os.environ["OMP_NUM_THREADS"]) if "OMP_NUM_THREADS" in os.environ else None
    provenance = Provenance.begin(threads=threads, settings={"test_sentences": args.test_sentences,
                                                             "bootstrap": args.bootstrap})
    run_dir = args.run_dir.resolve()
    started = time.perf_counter()
    cli = [sys.executable, "-m", "ekd_edge"]
    wall = {"ladder+baselines": run(cli + ["distill", str(args.recipe), "--run-dir", str(run_dir), "--baselines"])}

    base_text = args.recipe.read_text()
    teachers = [t["name"] for t in tomllib.loads(base_text)["teacher"]]
    for name, stages in VARIANTS.items():
        vdir = run_dir.with_name(f"{run_dir.name}-{name}")
        text = variant_text(base_text, run_dir, stages, name)
        vdir.mkdir(parents=True, exist_ok=True)
        (vdir / "recipe.toml").write_text(text)
        if not (vdir / "tokenizer").exists():
            shutil.copytree(run_dir / "tokenizer", vdir / "tokenizer")
        if not (vdir / "cache").exists():
            (run_dir / "cache").mkdir(exist_ok=True)
            (vdir / "cache").symlink_to(run_dir / "cache")   # same teachers + data: same cache keys
        wall[name] = run(cli + ["distill", str(vdir / "recipe.toml"), "--run-dir", str(vdir)])
        target = run_dir / "methods" / name
        if not target.exists():
            shutil.copytree(vdir / "students" / "stage-2", target)

    from ekd_edge.distill.compare import compare_run, run_models

    start = time.perf_counter()
    result = compare_run(run_dir, split="test", sentences=args.test_sentences, samples=args.bootstrap,
                         max_new_tokens=64)
    wall["compare"] = round(time.perf_counter() - start, 1)

    def metrics(path: Path) -> dict:
        return json.loads((path / "metrics.json").read_text())

    curves = {"ekd-word": [metrics(run_dir / "students" / f"stage-{k}") for k in (1, 2)]}
    for name in VARIANTS:
        vdir = run_dir.with_name(f"{run_dir.name}-{name}")
        curves[name] = [metrics(vdir / "students" / f"stage-{k}") for k in (1, 2)]
    stage_curves = {name: [{"stage": k + 1, "valid_bleu": round(m["valid"]["bleu"], 2),
                            "valid_chrf": round(m["valid"]["chrf"], 2), "train_wall_s": m["wall_s"],
                            "final_train_loss": m["final_train_loss"], "method": m.get("stage_method", {}).get("method")}
                           for k, m in enumerate(ms)] for name, ms in curves.items()}
    rows = {r["name"]: r for r in result["rows"]}
    top = rows[teachers[-1]]
    student_wall = {"ce-only": metrics(run_dir / "baselines" / "ce-only")["wall_s"],
                    "direct-kd": metrics(run_dir / "baselines" / "direct-kd")["wall_s"]}
    for name, ms in curves.items():
        student_wall[name] = round(sum(m["wall_s"] for m in ms), 1)
    names = {"ekd-stage-2": "ekd-word"}
    table = []
    for r in result["rows"]:
        if r["role"] == "teacher":
            continue
        label = names.get(r["name"], r["name"])
        table.append({**r, "method": label, "gap_bleu_to_top_teacher": round(r["bleu"] - top["bleu"], 2),
                      "gap_chrf_to_top_teacher": round(r["chrf"] - top["chrf"], 2),
                      "student_train_wall_s": student_wall.get(label)})
    out = {
        # the thread settings are part of the command: they change the wall times
        "command": "".join(f"{k}={os.environ[k]} " for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS") if k in os.environ)
                   + ".venv/bin/python benchmarks/ladder_small.py " + " ".join(sys.argv[1:]),
        "recipe": base_text, "variants": VARIANTS, "compare": result, "methods": table,
        "stage_curves": stage_curves, "wall_s": {**wall, "total": round(time.perf_counter() - started, 1)},
    }
    out["provenance"] = provenance.end(models=[path for _, _, path in run_models(run_dir)])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "result.json").write_text(json.dumps(out, indent=2))
    shutil.copy(run_dir / "compare" / "test.md", args.out / "compare-test.md")
    markdown = render(out, teachers)
    (args.out / "result.md").write_text(markdown)
    print(markdown)
    return 0


def render(out: dict, teachers: list[str]) -> str:
    from ekd_edge.markdown import count, number, p_value, plain, provenance_footer, table

    result, rows = out["compare"], {r["name"]: r for r in out["compare"]["rows"]}
    body = [[r["method"], r["params"], r["bleu"], f"± {r['bleu_ci']:.2f}", p_value(r["bleu_p"], ".3f"), r["chrf"],
             f"± {r['chrf_ci']:.2f}", p_value(r["chrf_p"], ".3f"), r["gap_bleu_to_top_teacher"],
             r["student_train_wall_s"]]
            for r in out["methods"]]
    body += [[f"{name} (teacher)", rows[name]["params"], rows[name]["bleu"], f"± {rows[name]['bleu_ci']:.2f}", None,
              rows[name]["chrf"], f"± {rows[name]['chrf_ci']:.2f}", None, None, None] for name in teachers]
    curves = [[name, *(f"{s['valid_bleu']:.2f} / {s['valid_chrf']:.2f}" for s in stages)]
              for name, stages in out["stage_curves"].items()]
    return "\n".join([
        "# ladder-small: six ways to train a 984k-parameter student", "", f"Command: `{out['command']}`", "",
        f"Test split, first {result['sentences']} sentences, greedy decoding; 95% paired-bootstrap "
        f"intervals ({result['bootstrap_samples']} resamples), p-values against the EKD word-KD student.", "",
        table(["method", "params", "BLEU", "95% CI", "p", "chrF", "95% CI", "p", "BLEU gap to top teacher",
               "student train s"], body, align="l" + "r" * 9,
              formats={1: count, 8: lambda v: number(v, "+.2f"), 9: plain}),
        "Validation scores after each stage (200 sentences):", "",
        table(["method", "stage 1 BLEU / chrF", "stage 2 BLEU / chrF"], curves, align="lrr"),
        f"Wall time (s): {out['wall_s']}", "",
        provenance_footer(out["provenance"]),
    ])


if __name__ == "__main__":
    raise SystemExit(main())
