"""Ship the finished teachers of a teachers-only run inside the package, and score them on test.

    python benchmarks/ship_teachers.py --run-dir runs/teachers [--only teacher-l]

For each finished teacher of RUN_DIR (ekd_edge/recipes/teachers-lo-help.toml):
- scores greedy translations of the whole lo-help test split (BLEU, chrF, sacrebleu signatures)
  with the weights as shipped (rounded to fp16, run in fp32);
- writes ekd_edge/teachers/lo-help-en-de/<name>/: fp16 model.safetensors (loaded back as fp32),
  config, tokenizer, metrics.json (the run's record + test scores + provenance) and train.log
  (the teacher's own progress lines from the run's log);
- writes benchmarks/results/teachers/result.{json,md}, one row per shipped teacher.
--ship-to and --out put both elsewhere (a check of the script on a small run).
A recipe then names one as ``checkpoint = "package:teachers/lo-help-en-de/<name>"``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ekd_edge.bench.provenance import Provenance  # noqa: E402

SHIPPED = ROOT / "ekd_edge" / "teachers" / "lo-help-en-de"
RESULTS = ROOT / "benchmarks" / "results" / "teachers"


def teacher_log_lines(run_dir: Path, name: str) -> list[str]:
    lines = []
    for log in sorted(run_dir.glob("*.log")) + sorted(run_dir.parent.glob(f"{run_dir.name}*.log")):
        for line in log.read_text(errors="replace").splitlines():
            if f"teacher {name}:" in line or f"teachers/{name}:" in line:
                lines.append(" ".join(line.split()))
    return lines


def write_results(rows: list[dict], provenance: dict | None, out: Path = RESULTS) -> None:
    """Merge ``rows`` into ``out`` (teachers shipped earlier keep their rows)."""
    from ekd_edge.markdown import count, number, provenance_footer, table

    out.mkdir(parents=True, exist_ok=True)
    earlier = json.loads((out / "result.json").read_text()) if (out / "result.json").is_file() else {}
    shipped = {r["name"]: r for r in earlier.get("rows", [])}
    for r in rows:
        shipped[r["name"]] = {**r, "provenance": provenance}   # each row: the state it was scored in
    rows = sorted(shipped.values(), key=lambda r: r["params"])
    (out / "result.json").write_text(json.dumps({"rows": rows}, indent=2, ensure_ascii=False) + "\n")
    lines = ["# Shipped teachers (lo-help-en-de)", "",
             "Greedy decoding, whole test split, sacrebleu; trained on one CPU core by "
             "`ekd-edge distill teachers-lo-help` (ekd_edge/recipes/teachers-lo-help.toml). Scores only (no "
             "timing); scored with one thread pinned to one core while another teacher trained on the other "
             "(taskset), hence the load.", "",
             table(["teacher", "parameters", "steps", "train wall (s)", "target tok/s", "valid BLEU (200)",
                    "test BLEU", "test chrF", "fp16 MB"],
                   [[r["name"], r["params"], r["steps"], r["wall_s"], r["train_tokens_per_s"], r["valid_bleu"],
                     r["test_bleu"], r["test_chrf"], r["size_mb"]] for r in rows],
                   formats={1: count, 3: lambda v: number(v, ",.0f"), 4: lambda v: number(v, ",.0f"),
                            8: lambda v: number(v, ".1f")})]
    # each teacher was scored in its own run of this script: one provenance block each
    lines += [provenance_footer(r["provenance"], heading=f"Provenance: {r['name']}") for r in rows]
    (out / "result.md").write_text("\n".join(lines))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", type=Path, default=ROOT / "runs" / "teachers")
    parser.add_argument("--only", action="append", help="ship only this teacher (repeatable)")
    parser.add_argument("--test-sentences", type=int, default=0, help="first N test sentences (0 = all)")
    parser.add_argument("--ship-to", type=Path, default=SHIPPED, help="where the teachers' directories go")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    import torch

    from ekd_edge.metrics import score
    from ekd_edge.data.corpus import load_corpus
    from ekd_edge.data.tokenizer import load_tokenizer
    from ekd_edge.models import load_model, save_model
    from ekd_edge.runtime.torch_engine import TorchTranslator

    torch.set_num_threads(1)
    prov = Provenance.begin(threads=1, settings={"decoding": "greedy", "max_new_tokens": 128, "batch_size": 32})
    test = load_corpus("lo-help-en-de").split("test").head(args.test_sentences or None)
    rows = []
    for model_dir in sorted((args.run_dir / "teachers").iterdir()):
        metrics_path = model_dir / "metrics.json"
        if not metrics_path.is_file() or (args.only and model_dir.name not in args.only):
            continue
        name = model_dir.name
        record = json.loads(metrics_path.read_text())
        # Score what is shipped: the fp16-rounded weights, run in fp32 as every loader does.
        model = load_model(model_dir).half().float()
        hyps = TorchTranslator.from_model(model, load_tokenizer(model_dir), model_dir).translate(
            test.src, max_new_tokens=128)
        test_scores = score(hyps, test.tgt)
        record["test"] = {k: test_scores[k] for k in ("bleu", "chrf", "bleu_signature", "chrf_signature")}
        record["test"]["sentences"] = len(test)
        record["test"]["examples"] = [{"src": s, "ref": r, "hyp": h} for s, r, h in
                                      list(zip(test.src, test.tgt, hyps))[:5]]
        record["shipped"] = {"weights": "fp16 safetensors, loaded as fp32", "run_recipe": "teachers-lo-help",
                             "provenance": prov.end(data={"test": test.fingerprint()}, models=[model_dir])}
        model = model.half()
        model.config.dtype = "float32"   # fp16 on disk only: loaders build fp32 models
        out = save_model(model, args.ship_to / name, tokenizer_dir=model_dir, extra=record)
        (out / "train.log").write_text("\n".join(teacher_log_lines(args.run_dir, name)) + "\n")
        rows.append({"name": name, "params": record["params"], "steps": record["steps"], "wall_s": record["wall_s"],
                     "train_tokens_per_s": record["train_tokens_per_s"], "valid_bleu": record["valid"]["bleu"],
                     "test_bleu": round(test_scores["bleu"], 2), "test_chrf": round(test_scores["chrf"], 2),
                     "size_mb": round((out / "model.safetensors").stat().st_size / 1e6, 2)})
        print(json.dumps(rows[-1]), flush=True)

    write_results(rows, prov.end(data={"test": test.fingerprint()}), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
