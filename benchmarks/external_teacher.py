"""A teacher from outside the run: a downloaded-style OPUS-MT checkpoint with its own tokenizer.

    .venv/bin/python benchmarks/external_teacher.py [--work runs/external-teacher] [--steps 1500]
    .venv/bin/python benchmarks/external_teacher.py --smoke --out DIR --work DIR   # tiny sizes: a check, not a result

1. The shipped `teacher-m` (6.0M parameters, trained by this project) is rewritten exactly as an
   OPUS-MT checkpoint is laid out: `source.spm`/`target.spm`, a joint `vocab.json` in OPUS order
   (`</s>` 0, `<unk>` 1, pieces alphabetically, `<pad>` last, which is also the decoder start),
   embedding rows permuted to match, saved with `save_pretrained`. A check translates the
   validation subset with both and requires identical output.
2. Two students of the same size learn from it, each trained in its own process pinned to its own
   core (`taskset`, one thread each), side by side:
   (a) `seqkd`: the run trains its own SentencePiece tokenizer (a different vocabulary); the stage
       distils by sequence-level KD ("auto" picks it: the teacher translates the training sources
       with its tokenizer, the text is re-tokenised for the student);
   (b) `trimmed`: `[tokenizer] from = "opus"`, `trim = true`: the student speaks the teacher's
       pieces that the training corpus uses, re-numbered; word-level KD through the id map.
3. Test split (first --test-sentences), greedy: BLEU/chrF with paired-bootstrap 95% intervals
   (p against the trimmed student), parameters, checkpoint size, one-file int8 bundle size, and
   the vocabulary before and after trimming.

Writes benchmarks/results/external-teacher/ (or --out): result.json, result.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's package, whatever is installed
RESULTS = ROOT / "benchmarks" / "results" / "external-teacher"
SOURCE_TEACHER = ROOT / "ekd_edge" / "teachers" / "lo-help-en-de" / "teacher-m"

RECIPE = """
name = "external-{name}"
seed = 1
[data]
corpus = "lo-help-en-de"
max_train_pairs = {pairs}
max_length = 64
valid_sentences = {valid_sentences}
[tokenizer]
{tokenizer}
[training]
batch_tokens = 2048
lr = 2e-3
warmup_steps = 150
eval_max_new_tokens = 128
threads = 1
checkpoint_every = 100
[[teacher]]
name = "opus"
checkpoint = "{teacher}"
[student]
size = "tiny"
steps_per_stage = {steps}
{stage}
"""
VARIANTS = {
    "seqkd": {"tokenizer": "vocab_size = {vocab}", "stage": '[[stage]]\nmethod = "auto"\nseqkd_beams = 2'},
    "trimmed": {"tokenizer": 'from = "opus"\ntrim = true', "stage": '[[stage]]\nmethod = "auto"'},
}


# --smoke: every step at a size that runs in seconds (the seq-KD tokenizer needs a vocabulary the pairs can fill)
SMOKE = {"pairs": 100, "steps": 2, "test_sentences": 8, "bootstrap": 20, "vocab": 150, "valid_sentences": 8}


def write_opus_layout(source: Path, out: Path) -> dict:
    """``source`` (a Marian checkpoint whose ids are SentencePiece's) as an OPUS-MT directory."""
    import torch
    from transformers import MarianMTModel, MarianTokenizer

    vocab = json.loads((source / "vocab.json").read_text())
    pieces = sorted(p for p in vocab if p not in ("<pad>", "</s>", "<unk>"))
    order = ["</s>", "<unk>", *pieces, "<pad>"]            # new id → piece
    new_vocab = {p: i for i, p in enumerate(order)}
    old_ids = torch.tensor([vocab[p] for p in order])       # new id → old id
    model = MarianMTModel.from_pretrained(str(source))
    with torch.no_grad():
        shared = model.get_input_embeddings().weight
        shared.copy_(shared[old_ids].clone())
        model.final_logits_bias.copy_(model.final_logits_bias[:, old_ids].clone())
    pad, eos = new_vocab["<pad>"], new_vocab["</s>"]
    for config in (model.config, model.generation_config):
        config.pad_token_id, config.eos_token_id, config.decoder_start_token_id = pad, eos, pad
        config.forced_eos_token_id = eos
    model.generation_config.bad_words_ids = [[pad]]   # as OPUS-MT: <pad> only ever starts the decoder
    model.config.decoder_vocab_size = len(order)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    model.save_pretrained(out, safe_serialization=True)
    for name in ("source.spm", "target.spm"):
        shutil.copy(source / name, out / name)
    (out / "vocab.json").write_text(json.dumps(new_vocab, ensure_ascii=False))
    MarianTokenizer(source_spm=str(out / "source.spm"), target_spm=str(out / "target.spm"),
                    vocab=str(out / "vocab.json")).save_pretrained(out)
    return {"pieces": len(order), "pad_id": pad, "eos_id": eos}


def same_translations(a: Path, b: Path, texts: list[str]) -> dict:
    from ekd_edge.runtime.torch_engine import TorchTranslator

    ha = TorchTranslator(a).translate(texts, max_new_tokens=128)
    hb = TorchTranslator(b).translate(texts, max_new_tokens=128)
    return {"sentences": len(texts), "identical": sum(x == y for x, y in zip(ha, hb))}


def start_run(name: str, recipe: Path, run_dir: Path, core: int, log: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    cores = sorted(os.sched_getaffinity(0))   # a container may offer fewer cores than the host has
    command = ["taskset", "-c", str(cores[core % len(cores)]), sys.executable, "-m", "ekd_edge", "distill", str(recipe),
               "--run-dir", str(run_dir)]
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=open(log, "ab"), stderr=subprocess.STDOUT)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "external-teacher")
    parser.add_argument("--pairs", type=int, default=8000, help="training pairs (the seq-KD teacher decodes each)")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--test-sentences", type=int, default=500)
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks the script, gives no result")
    args = parser.parse_args()
    sizes = {"vocab": 4000, "valid_sentences": 200}
    if args.smoke:
        if args.out.resolve() == RESULTS.resolve():
            raise SystemExit("--smoke writes no committed result: give --out")
        for key, value in SMOKE.items():
            setattr(args, key, value)
        sizes = {key: SMOKE[key] for key in sizes}
    from ekd_edge.bench import model_size_mb
    from ekd_edge.bench.provenance import Provenance
    from ekd_edge.data import load_corpus
    from ekd_edge.data.adopt import read_vocab_map
    from ekd_edge.distill.compare import paired_bootstrap
    from ekd_edge.export.onefile import export_onefile
    from ekd_edge.markdown import count, p_value, plain, provenance_footer, table
    from ekd_edge.models import count_parameters, load_model
    from ekd_edge.runtime.torch_engine import TorchTranslator

    settings = {**{k: getattr(args, k) for k in ("pairs", "steps", "test_sentences", "bootstrap")}, **sizes}
    provenance = Provenance.begin(threads=1, settings={**settings, "placement": "two runs side by side, "
                                                       "taskset -c 0 / -c 1, one thread each"})
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    corpus = load_corpus("lo-help-en-de")
    teacher_dir = work / "opus-mt-lo-help-en-de"
    layout = write_opus_layout(SOURCE_TEACHER, teacher_dir)
    check = same_translations(SOURCE_TEACHER, teacher_dir, corpus.split("valid").head(50).src)
    if check["identical"] != check["sentences"]:
        raise SystemExit(f"the OPUS-layout rewrite changed translations: {check}")

    runs, procs = {}, {}
    for core, (name, variant) in enumerate(VARIANTS.items()):
        run_dir = work / name
        recipe = work / f"{name}.toml"
        stages = {key: text.format(**sizes) for key, text in variant.items()}
        recipe.write_text(RECIPE.format(name=name, pairs=args.pairs, steps=args.steps, teacher=teacher_dir,
                                        valid_sentences=sizes["valid_sentences"], **stages))
        runs[name] = run_dir
        procs[name] = (start_run(name, recipe, run_dir, core, work / f"{name}.log"), time.perf_counter())
    wall = {}
    for name, (proc, t0) in procs.items():
        if proc.wait() != 0:
            raise SystemExit(f"{name}: distill failed (exit {proc.returncode}); see {work / f'{name}.log'}")
        wall[name] = round(time.perf_counter() - t0, 1)

    test = corpus.split("test").head(args.test_sentences)
    systems = {"teacher (OPUS layout)": teacher_dir, **{f"student-{n}": runs[n] / "students" / "stage-1" for n in runs}}
    hyps, rows = {}, {}
    for name, path in systems.items():
        hyps[name] = TorchTranslator(path).translate(test.src, max_new_tokens=128)
        rows[name] = {"params": count_parameters(load_model(path)), "checkpoint_mb": round(model_size_mb(path), 2)}
    stats = paired_bootstrap(hyps, test.tgt, "student-trimmed", args.bootstrap)
    for name in systems:
        rows[name].update({k: (round(v, 3) if isinstance(v, float) else v) for k, v in stats[name].items()})
    for name in runs:
        student = runs[name] / "students" / "stage-1"
        bundle = work / "bundles" / name
        manifest = export_onefile(student, bundle, quantize="int8", force=True)
        metrics = json.loads((student / "metrics.json").read_text())
        tokenizer = json.loads((student / "vocab.json").read_text())
        rows[f"student-{name}"].update({
            "onefile_int8_mb": round(manifest["total_size"] / 1e6, 2), "student_vocab": len(tokenizer),
            "stage_method": metrics["stage_method"], "valid_bleu": metrics["valid"]["bleu"],
            "train_wall_s": metrics["wall_s"], "train_tokens_per_s": metrics["train_tokens_per_s"]})
    vocab_map = read_vocab_map(runs["trimmed"] / "tokenizer")
    out = {
        "command": ".venv/bin/python benchmarks/external_teacher.py " + " ".join(sys.argv[1:]),
        "teacher": {"source": str(SOURCE_TEACHER.relative_to(ROOT)), "layout": "OPUS-MT", **layout,
                    "rewrite_check": check},
        "vocabulary": {"teacher": vocab_map["teacher_vocab"], "trimmed_student": vocab_map["student_vocab"],
                       "seqkd_student (own tokenizer)": rows["student-seqkd"]["student_vocab"]},
        "test": {"split": "test", "sentences": len(test), "bootstrap_samples": args.bootstrap,
                 "reference_system": "student-trimmed"},
        "rows": rows,
        "examples": [{"src": test.src[i], "ref": test.tgt[i], "hyps": {n: hyps[n][i] for n in hyps}} for i in range(3)],
        "recipes": {n: (work / f"{n}.toml").read_text() for n in runs},
        "wall_s": {**wall, "total": round(time.perf_counter() - started, 1)},
    }
    out["provenance"] = provenance.end(models=list(systems.values()))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "result.json").write_text(json.dumps(out, indent=2, ensure_ascii=False))
    body = []
    for name, r in rows.items():
        method = r.get("stage_method", {})
        body.append([name, f"{method.get('method', '')} ({method.get('teacher_kind', '')})",
                     r.get("student_vocab", layout["pieces"]), r["params"], r["bleu"], f"± {r['bleu_ci']:.2f}",
                     p_value(r["bleu_p"], ".3f"), r["chrf"], f"± {r['chrf_ci']:.2f}", r["checkpoint_mb"],
                     r.get("onefile_int8_mb")])
    lines = ["# external-teacher: an OPUS-MT-layout teacher with its own tokenizer", "",
             f"Command: `{out['command']}`", "",
             f"Teacher: `{out['teacher']['source']}` rewritten in the OPUS-MT layout ({layout['pieces']:,} ids, "
             f"`<pad>` = {layout['pad_id']}); the rewrite translates {check['identical']}/{check['sentences']} "
             "validation sentences exactly as the original.", "",
             f"Test split, first {len(test)} sentences, greedy; 95% paired-bootstrap intervals "
             f"({args.bootstrap} resamples), p against the trimmed student.", "",
             table(["system", "method", "vocabulary", "params", "BLEU", "95% CI", "p", "chrF", "95% CI",
                    "checkpoint MB", "one-file int8 MB"], body, align="ll" + "r" * 9,
                   formats={2: count, 3: count, 9: plain, 10: plain}),
             f"Vocabulary: teacher {vocab_map['teacher_vocab']:,} ids → trimmed student "
             f"{vocab_map['student_vocab']:,} (pieces the {args.pairs:,} training pairs use, plus <pad>, </s>, <unk>).",
             "", f"Wall time (s): {out['wall_s']} (the two runs side by side, pinned to one core each).", "",
             provenance_footer(out["provenance"])]
    (args.out / "result.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
