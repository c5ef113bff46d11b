"""The EKD experiment at the paper's capacities, for one GPU: a ~6M student, teachers up to ~41M.

    .venv/bin/python benchmarks/ladder_gpu.py                      # on a machine with one CUDA GPU
    .venv/bin/python benchmarks/ladder_gpu.py --smoke --out DIR    # tiny sizes on the CPU: a check, not a result

The EKD paper (arXiv 2605.09924, IWSLT14 de→en) reports a 6M student at 34.24 BLEU after a ladder
of teachers, against 34.32 for its 39M senior teacher and 31.09 for direct KD from that teacher.
This script runs the same comparison on a bundled corpus (default lo-help-en-de, 32.7k pairs,
8,000-piece vocabulary) in one `ekd-edge distill` run:

    teachers   T1 10.0M (d384, 2+2) → T2 19.8M (d384, 4+4) → T3 41.1M (d512, 5+5), trained here
    student    5.9M (d256, 2+2): EKD stages T1 → T2 → T3, word-level KD with the online teacher
    baselines  ce-only and direct-kd (KD from T3 alone), each with the ladder's total student steps

then scores every model on the test split with paired bootstrap against the final EKD stage.
Single-process training uses the GPU when CUDA is available (ekd_edge/distill/distributed.py);
`--budget-min` is the wall-clock target the step counts are sized for (8 minutes on one H200-class
GPU was the plan; a run records its own wall time and the device it used).

Writes OUT (default benchmarks/results/ladder-gpu/): result.json (rows, per-model steps and wall
time, device, provenance), result.md, and the run's compare table.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ekd_edge.bench.provenance import Provenance, write_result  # noqa: E402
from ekd_edge.markdown import count, p_value, plain, provenance_footer, table  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "ladder-gpu"
PAPER = {"source": "EKD paper, arXiv 2605.09924, IWSLT14 de-en", "student_6m_ekd": 34.24,
         "senior_teacher_39m": 34.32, "direct_kd_6m": 31.09}

# (name, size table, steps) at full scale; the student's steps are per stage.
FULL = {
    "vocab": 8000, "batch_tokens": 8192, "max_length": 96, "lr": 7e-4, "warmup": 400, "valid": 500,
    "teachers": [("T1", {"d_model": 384, "encoder_layers": 2, "decoder_layers": 2, "attention_heads": 6, "ffn_dim": 1536}, 2500),
                 ("T2", {"d_model": 384, "encoder_layers": 4, "decoder_layers": 4, "attention_heads": 6, "ffn_dim": 1536}, 3000),
                 ("T3", {"d_model": 512, "encoder_layers": 5, "decoder_layers": 5, "attention_heads": 8, "ffn_dim": 2048}, 3500)],
    "student": ({"d_model": 256, "encoder_layers": 2, "decoder_layers": 2, "attention_heads": 4, "ffn_dim": 1024}, 1200),
    "max_train_pairs": 0,
}
SMOKE = {
    "vocab": 300, "batch_tokens": 512, "max_length": 32, "lr": 3e-3, "warmup": 2, "valid": 8,
    "teachers": [("T1", "nano", 3),
                 ("T2", {"d_model": 48, "encoder_layers": 1, "decoder_layers": 1, "attention_heads": 2, "ffn_dim": 96}, 3),
                 ("T3", {"d_model": 64, "encoder_layers": 2, "decoder_layers": 2, "attention_heads": 2, "ffn_dim": 128}, 3)],
    "student": ("nano", 2),
    "max_train_pairs": 300,
}


def _size(size) -> str:
    if isinstance(size, str):
        return f'"{size}"'
    return "{ " + ", ".join(f"{k} = {v}" for k, v in size.items()) + " }"


def recipe_text(scale: dict, corpus: str, seed: int) -> str:
    teachers = "".join(f'[[teacher]]\nname = "{name}"\nsize = {_size(size)}\nsteps = {steps}\n\n'
                       for name, size, steps in scale["teachers"])
    student_size, student_steps = scale["student"]
    return (f'name = "ladder-gpu"\nseed = {seed}\n\n'
            f'[data]\ncorpus = "{corpus}"\nmax_length = {scale["max_length"]}\nvalid_sentences = {scale["valid"]}\n'
            f'max_train_pairs = {scale["max_train_pairs"]}\n\n'
            f'[tokenizer]\nvocab_size = {scale["vocab"]}\n\n'
            f'[training]\nbatch_tokens = {scale["batch_tokens"]}\nlr = {scale["lr"]}\nwarmup_steps = {scale["warmup"]}\n'
            'label_smoothing = 0.1\ndropout = 0.1\neval_max_new_tokens = 128\ncheckpoint_every = 500\n\n'
            f'{teachers}[student]\nname = "student"\nsize = {_size(student_size)}\nsteps_per_stage = {student_steps}\n'
            'baselines = ["ce-only", "direct-kd"]\n\n'
            '[distill]\nloss = "forward_kl"\nalpha = 0.5\ntemperature = 1.0\n')


def device_info() -> dict:
    import torch

    if torch.cuda.is_available():
        return {"device": "cuda", "name": torch.cuda.get_device_name(0), "count": torch.cuda.device_count()}
    return {"device": "cpu", "name": None, "count": 0}


def markdown(result: dict) -> str:
    rows = [[r["name"], r["role"], r["params"], r["bleu"], p_value(r["bleu_p"]), r["chrf"], p_value(r["chrf_p"]),
             result["models"].get(r["name"], {}).get("steps"), result["models"].get(r["name"], {}).get("wall_s")]
            for r in result["compare"]["rows"]]
    lines = ["# ladder-gpu: EKD at the paper's capacities", "",
             f"Corpus {result['settings']['corpus']}, device {result['device']['device']} "
             f"({result['device']['name'] or 'CPU'}), wall {result['wall_s'] / 60:.1f} min"
             + (" — SMOKE sizes: a check that the script runs, not a result" if result["settings"]["smoke"] else ""),
             "", table(["model", "role", "params", "test BLEU", "p", "chrF", "p", "steps", "train s"], rows,
                       align="llrrrrrrr", formats={2: count, 8: plain}),
             f"The paper for comparison ({PAPER['source']}): 6M EKD student {PAPER['student_6m_ekd']}, "
             f"39M senior teacher {PAPER['senior_teacher_39m']}, 6M direct KD {PAPER['direct_kd_6m']} BLEU.", "",
             provenance_footer(result["provenance"])]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default="lo-help-en-de")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--work-dir", type=Path, default=ROOT / "runs" / "ladder-gpu")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes and steps, CPU is fine: checks the script")
    parser.add_argument("--keep", action="store_true", help="resume the work directory instead of starting fresh")
    args = parser.parse_args()
    if args.smoke and args.out.resolve() == RESULTS.resolve():
        raise SystemExit("--smoke writes no committed result: give --out")
    scale = SMOKE if args.smoke else FULL
    settings = {"corpus": args.corpus, "seed": args.seed, "smoke": args.smoke, "scale": scale}
    provenance = Provenance.begin(threads=None, settings=settings)
    device = device_info()
    if device["device"] != "cuda" and not args.smoke:
        print("warning: no CUDA device: the full-size run trains on the CPU and takes hours", file=sys.stderr)
    if args.work_dir.exists() and not args.keep:
        shutil.rmtree(args.work_dir)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    recipe = args.work_dir.parent / f"{args.work_dir.name}.toml"
    recipe.write_text(recipe_text(scale, args.corpus, args.seed))

    from ekd_edge.distill.compare import compare_run
    from ekd_edge.distill.ladder import run_recipe
    from ekd_edge.distill.recipe import load_recipe

    started = time.perf_counter()
    summary = run_recipe(load_recipe(recipe), args.work_dir, recipe.read_text())
    compared = compare_run(args.work_dir, "test", sentences=50 if args.smoke else 0, reference="ekd-stage-3",
                           max_new_tokens=128)
    models = {}
    for group in ("teachers", "stages", "baselines"):
        for name, record in summary.get(group, {}).items():
            shown = f"ekd-{name}" if group == "stages" else name
            models[shown] = {"steps": record.get("steps"), "wall_s": record.get("wall_s"),
                             "valid_bleu": record.get("valid", {}).get("bleu")}
    result = {"settings": settings, "device": device, "paper": PAPER, "models": models, "compare": compared,
              "wall_s": round(time.perf_counter() - started, 1), "recipe": recipe.read_text()}
    result["provenance"] = provenance.end(data={"corpus": args.corpus})
    write_result(args.out, result, markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    raise SystemExit(main())
