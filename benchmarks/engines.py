"""Engines and one-file speed levers side by side, on three students: one interleaved run each.

    python benchmarks/engines.py                       # all three students, 200 test sentences
    python benchmarks/engines.py --students demo --sentences 50   # a quicker look
    python benchmarks/engines.py --students demo --extra deep=runs/shape-6e2d/ekd-seed1/students/stage-3

Students (--students):
  demo  the demo's final student (runs/demo/students/stage-3: 1.24M, trained; `make demo` makes it)
  6m    the shipped teacher-m (5.96M, d 288, 2+2, trained): a student-sized model users ship
  16m   preset medium-6e2d (16.8M, d 384, 6 encoder + 2 decoder layers) with RANDOM weights and
        the end-of-sentence token blocked, so every engine decodes exactly --forced-length
        tokens: latency only, no quality, labelled as such in the result

Engines per student: PyTorch eager ``generate``; CTranslate2 int8 and float32; and the one-file
model (strings in, strings out) in each lever setting below, every one exported through the
library with its parity gate (and, for trained students, its BLEU gate on validation data):

  onefile-fp32-optimum          graphs traced by optimum (the previous export)
  onefile-fp32                  lean graphs written from the weights (export/marian_graph.py)
  onefile-int8-optimum-dynamic  optimum graphs, dynamic int8 (the previous int8 export)
  onefile-int8-dynamic          lean graphs, dynamic int8
  onefile-int8-blockwise-untied lean graphs, block-wise int8 (MatMulNBits), float32 embedding table
  onefile-int8                  lean, block-wise int8, tied table stored once as int8 (profile onefile-x86)
  onefile-int8-output-vocab     onefile-int8 with the training targets' pieces as output vocabulary
  onefile-int8-no-attention-op  onefile-int8 with attention as small nodes, not onnxruntime's MultiHeadAttention kernel
  onefile-int8-norm-op          onefile-int8 with SkipLayerNormalization kernels for residual + LayerNorm as well
  onefile-int8-weight-only      lean, int8 weights multiplied in float32
  onefile-int8-portable         the Android app's build (lean, dynamic int8, portable numerics)

Timing: batch 1, greedy, one thread, text in -> text out, round-robin per sentence (the first
engine rotates), ratios per sentence. Memory: each one-file and CTranslate2 bundle in a fresh
process holding only its runtime (bench/ort_onefile.py, bench/ct2_app.py), the one-file model
also with the "lean-memory" session settings. Where the time goes: bench.engines.step_costs on
the headline one-file model. Writes benchmarks/results/engines/result.json and result.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from ekd_edge.bench import model_size_mb  # noqa: E402
from ekd_edge.bench.engines import (EngineSpec, interleaved_latency, load_engine, pair_ratios, warm_block_latency,  # noqa: E402
                                    step_costs, summarise)
from ekd_edge.bench.probe import measure_app_footprint  # noqa: E402
from ekd_edge.bench.provenance import Provenance  # noqa: E402
from ekd_edge.console import console  # noqa: E402
from ekd_edge.data.corpus import load_corpus  # noqa: E402
from ekd_edge.export.marian_graph import DEFAULT_FUSED_OPS  # noqa: E402
from ekd_edge.files import write_bytes_atomic  # noqa: E402

TEACHER_M = REPO / "ekd_edge" / "teachers" / "lo-help-en-de" / "teacher-m"
RESULTS = REPO / "benchmarks/results/engines"
# validation sentences each export's parity and BLEU gates translate
GATES = {"parity": 100, "quality": 200}
SMOKE_GATES = {"parity": 8, "quality": 8}
HEADLINE = "onefile-int8"
# one-file variants: name -> export_onefile settings
ONEFILE = {
    "onefile-fp32-optimum": dict(graphs="optimum"),
    "onefile-fp32": dict(),
    "onefile-int8-optimum-dynamic": dict(quantize="int8", graphs="optimum", int8_kernel="dynamic"),
    "onefile-int8-dynamic": dict(quantize="int8", int8_kernel="dynamic"),
    "onefile-int8-blockwise-untied": dict(quantize="int8", int8_kernel="blockwise", tie_int8_embeddings=False),
    "onefile-int8": dict(quantize="int8", int8_kernel="blockwise"),
    "onefile-int8-output-vocab": dict(quantize="int8", int8_kernel="blockwise", output_vocabulary="training-targets"),
    "onefile-int8-no-attention-op": dict(quantize="int8", int8_kernel="blockwise", fused_ops=()),
    "onefile-int8-norm-op": dict(quantize="int8", int8_kernel="blockwise",
                                 fused_ops=("MultiHeadAttention", "SkipLayerNormalization")),
    "onefile-int8-weight-only": dict(quantize="int8", int8_kernel="weight-only"),
    "onefile-int8-portable": dict(quantize="int8", int8_kernel="dynamic", portable=True, quant_arch="arm64"),
}
# (lever, with it, without it): what each lever bought, as latency and size ratios
LEVERS = (
    ("lean graphs (fp32)", "onefile-fp32", "onefile-fp32-optimum"),
    ("lean graphs (dynamic int8)", "onefile-int8-dynamic", "onefile-int8-optimum-dynamic"),
    ("block-wise int8 instead of dynamic int8", "onefile-int8-blockwise-untied", "onefile-int8-dynamic"),
    ("tied embedding table stored once as int8", "onefile-int8", "onefile-int8-blockwise-untied"),
    ("output vocabulary: the training targets' pieces only", "onefile-int8-output-vocab", "onefile-int8"),
    ("MultiHeadAttention kernel instead of small attention nodes", "onefile-int8", "onefile-int8-no-attention-op"),
    ("SkipLayerNormalization kernels as well", "onefile-int8-norm-op", "onefile-int8"),
    ("weight-only int8 (float32 products) instead of block-wise", "onefile-int8-weight-only", "onefile-int8"),
    ("portable numerics (the app's build) instead of fast", "onefile-int8-portable", "onefile-int8-dynamic"),
    ("all kept levers: shipped int8 now vs before", "onefile-int8", "onefile-int8-optimum-dynamic"),
)
# levers that could not be built with onnxruntime 1.32 on a CPU, with the reason
NOT_BUILT = {
    "GreedySearch instead of one-beam BeamSearch": "onnxruntime's GreedySearch accepts decoder-only (GPT) models "
                                                  "only: loading an encoder-decoder one fails in GreedySearch::Init",
    "key/value cache in a shared buffer (DecoderMaskedMultiHeadAttention)": "past_present_share_buffer and "
        "DecoderMaskedMultiHeadAttention have CUDA kernels only; on the CPU each step copies the cache into a "
        "new present tensor (inside the MultiHeadAttention kernel, or a Concat without it)",
    "per-sentence vocabulary shortlist": "BeamSearch takes its vocabulary size from the decoder subgraph's logits "
                                          "shape when the model loads, so the search width cannot change per "
                                          "sentence; the static output vocabulary (a lever above) is the part built",
}
PAIRS = (
    ("onefile-int8", "ct2-int8", "one-file int8 vs CTranslate2 int8 (goal <= 1.0x)"),
    ("onefile-int8-output-vocab", "ct2-int8", "one-file int8 with an output vocabulary vs CTranslate2 int8"),
    ("onefile-int8", "pytorch", "one-file int8 vs PyTorch eager (goal <= 0.125x)"),
    ("onefile-fp32", "ct2-fp32", "one-file fp32 vs CTranslate2 float32"),
    ("onefile-int8-portable", "ct2-int8", "the app's one-file int8 (portable) vs CTranslate2 int8"),
    ("ct2-int8", "pytorch", "CTranslate2 int8 vs PyTorch eager"),
)


def random_student(out: Path, forced_length: int) -> Path:
    """medium-6e2d with random weights, the teachers' tokenizer, and neither EOS nor padding ever chosen."""
    import torch

    from ekd_edge.models import build_model, save_model

    if (out / "config.json").is_file():
        return out
    model = build_model("medium-6e2d", vocab_size=4000, seed=0)
    with torch.no_grad():
        model.final_logits_bias[0, model.config.eos_token_id] = -1e4
        model.final_logits_bias[0, model.config.pad_token_id] = -1e4  # engines strip padding from their output
    staging = out.with_name(out.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    save_model(model, staging, tokenizer_dir=TEACHER_M)
    # generate() must not stop early or force EOS either: every engine does forced_length steps
    config = json.loads((staging / "generation_config.json").read_text())
    config.pop("forced_eos_token_id", None)
    (staging / "generation_config.json").write_text(json.dumps(config, indent=2))
    os.replace(staging, out)
    return out


def ensure_exports(name: str, student: Path, work: Path, valid, train_targets: list[str], trained: bool,
                   max_new_tokens: int, gates: dict) -> list[EngineSpec]:
    from ekd_edge.data.tokenizer import target_side_ids
    from ekd_edge.export.ct2 import export_ct2_bundle
    from ekd_edge.export.onefile import export_onefile

    specs = [EngineSpec("pytorch", "pytorch", student, "fp32")]
    gate = dict(parity_texts=valid.src[:gates["parity"]], max_new_tokens=max_new_tokens, force=True)
    if trained:  # the BLEU gate means nothing for random weights
        gate["quality_data"] = (valid.src[:gates["quality"]], valid.tgt[:gates["quality"]])
    for precision in ("int8", "fp32"):
        bundle = work / f"ct2-{precision}"
        if not (bundle / "manifest.json").is_file():
            with console.status(f"{name}: CTranslate2 {precision}"):
                export_ct2_bundle(student, bundle, quantization="int8" if precision == "int8" else "float32",
                                  parity_texts=gate["parity_texts"], max_new_tokens=max_new_tokens, force=True)
        specs.append(EngineSpec(f"ct2-{precision}", "ctranslate2", bundle, precision))
    output_ids = None
    for variant, settings in ONEFILE.items():
        bundle = work / variant
        settings = dict(settings)
        if settings.pop("output_vocabulary", None):  # as `ekd-edge export --output-vocabulary training-targets`
            output_ids = output_ids or target_side_ids(student, train_targets)
            settings["output_ids"] = output_ids
        if not _exported_as(bundle, settings):
            with console.status(f"{name}: {variant}"):
                export_onefile(student, bundle, **settings, **gate)
        specs.append(EngineSpec(variant, "onnxruntime-onefile", bundle, "int8" if "int8" in variant else "fp32"))
    return specs


def _exported_as(bundle: Path, settings: dict) -> bool:
    """Whether ``bundle`` holds an export made with these one-file settings (kept from an earlier run)."""
    if not (bundle / "manifest.json").is_file():
        return False
    recorded = json.loads((bundle / "manifest.json").read_text())["settings"]
    quantize, graphs = settings.get("quantize"), settings.get("graphs", "lean")
    kernel = settings.get("int8_kernel", "dynamic") if quantize else None
    wanted = {"graphs": graphs, "quantize": quantize, "int8_kernel": kernel,
              "int8_embeddings": graphs == "lean" and kernel not in (None, "dynamic")
              and settings.get("tie_int8_embeddings", True),
              "numerics": "portable" if settings.get("portable") else "fast",
              "output_vocabulary": len(settings["output_ids"]) if "output_ids" in settings else None,
              "fused_ops": sorted(settings.get("fused_ops", DEFAULT_FUSED_OPS))
              if graphs == "lean" and not settings.get("portable") else []}
    return all(recorded.get(key) == value for key, value in wanted.items())


def measure_student(name: str, student: Path, work: Path, texts: list[str], valid, train_targets: list[str], *,
                    trained: bool, max_new_tokens: int, warmup: int, gates: dict, warm_sentences: int = 100,
                    warm_rounds: int = 4) -> dict:
    specs = ensure_exports(name, student, work, valid, train_targets, trained, max_new_tokens, gates)
    translators = {spec.name: load_engine(spec, 1) for spec in specs}
    with console.status(f"{name}: {len(texts)} sentences x {len(specs)} engines") as status:
        timings = interleaved_latency(translators, texts, warmup=warmup, max_new_tokens=max_new_tokens,
                                      progress=lambda i: status.update(f"{name}: sentence {i}/{len(texts)}"))
        # the headline: each engine warm, as an app runs one engine, blocks alternating
        paired = sorted({engine for a, b, _ in PAIRS for engine in (a, b)} & set(translators))
        warm = warm_block_latency({n: translators[n] for n in paired}, texts[:warm_sentences], rounds=warm_rounds,
                                  warmup=warmup, max_new_tokens=max_new_tokens,
                                  progress=lambda r, n: status.update(f"{name}: warm blocks, round {r}, {n}"))
    outputs = {n: [t.translate_with_ids([text], max_new_tokens, 1)[0][0] for text in texts[:5]]
               for n, t in translators.items()}
    del translators
    engines = {}
    for spec in specs:
        manifest = json.loads((spec.path / "manifest.json").read_text()) if spec.kind != "pytorch" else {}
        row = {"kind": spec.kind, "precision": spec.precision, "size_mb": model_size_mb(spec.path),
               **summarise(timings[spec.name]), "settings": ONEFILE.get(spec.name),
               "export_parity": manifest.get("parity"), "quality_gate": manifest.get("quality_gate")}
        if spec.kind in ("onnxruntime-onefile", "ctranslate2"):
            with console.status(f"{name}: runtime-only memory of {spec.name}"):
                app = measure_app_footprint(spec.path, spec.kind, texts[:20], 1, max_new_tokens=max_new_tokens)
                row["app_memory"] = {k: v for k, v in app.items() if k != "translations"}
                if spec.name == HEADLINE:
                    lean = measure_app_footprint(spec.path, spec.kind, texts[:20], 1, max_new_tokens=max_new_tokens,
                                                 session_preset="lean-memory")
                    row["app_memory_lean_session"] = {k: v for k, v in lean.items() if k != "translations"}
        engines[spec.name] = row
    seconds = {n: t["seconds"] for n, t in timings.items()}
    pairs = {f"{a} / {b}": {"question": q, **pair_ratios(seconds[a], seconds[b])} for a, b, q in PAIRS}
    warm_pairs = {f"{a} / {b}": {"question": q, **pair_ratios(warm[a]["seconds"], warm[b]["seconds"])}
                  for a, b, q in PAIRS}
    for engine, timing in warm.items():
        engines[engine]["warm"] = summarise(timing)
    levers = []
    for lever, on, off in LEVERS:
        ratio = pair_ratios(seconds[on], seconds[off])
        levers.append({"lever": lever, "on": on, "off": off, "latency_ratio_median": ratio["median"],
                       "latency_ratio_p10": ratio["p10"], "latency_ratio_p90": ratio["p90"],
                       "size_ratio": engines[on]["size_mb"] / engines[off]["size_mb"],
                       "parity_on": (engines[on]["export_parity"] or {}).get("rate"),
                       "parity_off": (engines[off]["export_parity"] or {}).get("rate"),
                       "bleu_drop_on": (engines[on]["quality_gate"] or {}).get("bleu_drop"),
                       "bleu_drop_off": (engines[off]["quality_gate"] or {}).get("bleu_drop")})
    with console.status(f"{name}: where the one-file model's time goes"):
        costs = step_costs(work / HEADLINE, texts[:100], max_new_tokens=max_new_tokens)
    return {"student": str(student.relative_to(REPO) if student.is_relative_to(REPO) else student),
            "trained": trained, "params": _params(student), "engines": engines, "pairs_warm": warm_pairs,
            "pairs": pairs, "levers": levers,
            "step_costs": costs, "outputs_first_5": outputs}


def _params(checkpoint: Path) -> int:
    from ekd_edge.models.checkpoint import config_parameters

    return config_parameters(checkpoint)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--students", nargs="+", default=["demo", "6m", "16m"], choices=["demo", "6m", "16m"])
    parser.add_argument("--demo-student", type=Path, default=REPO / "runs/demo/students/stage-3")
    parser.add_argument("--work", type=Path, default=REPO / "runs/engines", help="exports are kept here")
    parser.add_argument("--sentences", type=int, default=200, help="timed test sentences per engine")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--warm-sentences", type=int, default=100,
                        help="sentences in each engine's warm block (the headline ratios)")
    parser.add_argument("--warm-rounds", type=int, default=4, help="rounds of warm blocks, engines alternating")
    parser.add_argument("--forced-length", type=int, default=32, help="tokens the random 16m student decodes")
    parser.add_argument("--extra", action="append", default=[], metavar="NAME=CHECKPOINT",
                        help="another trained student to measure the same way (repeatable)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--smoke", action="store_true",
                        help="export gates on 8 validation sentences: checks the script, gives no result")
    args = parser.parse_args()
    if args.smoke and args.out.resolve() == RESULTS.resolve():
        print("--smoke writes no committed result: give --out", file=sys.stderr)
        return 2
    gates = SMOKE_GATES if args.smoke else GATES
    extra = {}
    for item in args.extra:
        name, _, path = item.partition("=")
        if not name or not (Path(path) / "config.json").is_file():
            console.print(f"--extra {item}: expected NAME=CHECKPOINT_DIR with a config.json")
            return 2
        extra[name] = Path(path).resolve()
    if "demo" in args.students and not (args.demo_student / "config.json").is_file():
        console.print(f"{args.demo_student}: no demo student; run `make demo` first or leave out --students demo")
        return 2
    provenance = Provenance.begin(threads=1, settings={k: str(v) for k, v in vars(args).items()})
    corpus = load_corpus("lo-help-en-de")
    test, valid = corpus.split("test"), corpus.split("valid")
    train_targets = corpus.split("train").tgt  # the output vocabulary's pieces
    texts = test.src[: args.sentences]
    students = {}
    for name in args.students:
        if name == "demo":
            student, trained, limit = args.demo_student, True, 128
        elif name == "6m":
            student, trained, limit = TEACHER_M, True, 128
        else:
            student, trained, limit = random_student(args.work / "random-16m", args.forced_length), False, \
                args.forced_length
        students[name] = measure_student(name, student, args.work / name, texts, valid, train_targets,
                                         trained=trained, max_new_tokens=limit, warmup=args.warmup, gates=gates,
                                         warm_sentences=args.warm_sentences, warm_rounds=args.warm_rounds)
    for name, student in extra.items():
        students[name] = measure_student(name, student, args.work / name, texts, valid, train_targets,
                                         trained=True, max_new_tokens=128, warmup=args.warmup, gates=gates,
                                         warm_sentences=args.warm_sentences, warm_rounds=args.warm_rounds)
    import ctranslate2
    import onnxruntime_extensions

    payload = {
        "command": "python benchmarks/engines.py" + ("" if len(sys.argv) == 1 else " " + " ".join(sys.argv[1:])),
        "data": f"lo-help-en-de:test, first {len(texts)} sentences (split fingerprint {test.fingerprint()}); "
                f"gates: lo-help-en-de:valid",
        "settings": {"decoding": "greedy, batch 1, one thread, text in -> text out",
                     "max_new_tokens": {n: (args.forced_length if n == "16m" else 128) for n in students},
                     "warmup_per_engine": args.warmup, "order": "round-robin per sentence, first engine rotating",
                     "warm_blocks": f"{args.warm_rounds} rounds; each engine translates the first "
                                    f"{args.warm_sentences} sentences in a row, engines alternating; "
                                    "per-sentence median over rounds (the headline ratios)",
                     "app_memory": "fresh process with only the runtime, 20 sentences (VmHWM)"},
        "versions": {"ctranslate2": ctranslate2.__version__, "onnxruntime_extensions": onnxruntime_extensions.__version__},
        "not_built": NOT_BUILT,
        "students": students,
    }
    payload["provenance"] = provenance.end(data={"test": test.fingerprint(), "valid": valid.fingerprint()},
                                           models=[Path(s["student"]) if Path(s["student"]).is_absolute()
                                                   else REPO / s["student"] for s in students.values()])
    args.out.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(args.out / "result.json", (json.dumps(payload, indent=2, ensure_ascii=False) + "\n").encode())
    write_bytes_atomic(args.out / "result.md", render(payload).encode())
    console.print(render(payload), markup=False)
    return 0


def render(payload: dict) -> str:
    from functools import partial

    from ekd_edge.markdown import number, provenance_footer, table

    f0, f1, f3 = (partial(number, spec=spec) for spec in (".0f", ".1f", ".3f"))

    def ratio(value) -> str:
        return number(value, ".3f", "x")

    def pair(a, b, spec: str) -> str:
        return f"{number(a, spec)} / {number(b, spec)}"

    def ratio_table(pairs: dict) -> str:
        return table(["A / B", "median", "p10", "p90", "A faster on"],
                     [[name, ratio(r["median"]), ratio(r["p10"]), ratio(r["p90"]), f"{r['wins']}/{r['n']}"]
                      for name, r in pairs.items()], align="lrrrr")

    lines = ["# Engines and one-file speed levers", "", f"Command: `{payload['command']}`  ",
             f"Data: {payload['data']}  ",
             f"Settings: {payload['settings']['decoding']}; {payload['settings']['order']}; "
             f"{payload['settings']['warmup_per_engine']} warm-up sentences per engine.", ""]
    for name, s in payload["students"].items():
        label = "trained" if s["trained"] else "random weights, EOS blocked: latency only"
        engines = []
        for engine, e in s["engines"].items():
            app = e.get("app_memory") or {}
            engines.append([engine, e["p50_ms"], e["p90_ms"], e["tokens_per_s"], e["size_mb"],
                            (e.get("export_parity") or {}).get("rate"), (e.get("quality_gate") or {}).get("bleu_drop"),
                            app.get("peak_rss_mb"), app.get("beyond_python_mb"), app.get("model_mb"), app.get("load_s")])
        lines += [f"## {name}: `{s['student']}` ({s['params'] / 1e6:.2f}M parameters, {label})", "",
                  table(["engine", "p50 ms", "p90 ms", "tokens/s", "size MB", "parity", "BLEU drop", "app peak MB",
                         "app peak beyond Python MB", "app model MB", "app load s"], engines, align="l" + "r" * 10,
                        formats={3: f0, 5: f3, 7: f1, 8: f1, 9: f1, 10: f3})]
        lean = s["engines"][HEADLINE].get("app_memory_lean_session")
        if lean:
            lines += [f"{HEADLINE} with the lean-memory session settings (no arena, no memory pattern, no "
                      f"pre-packing): app peak {lean['peak_rss_mb']:.1f} MB, model {lean['model_mb']:.1f} MB, "
                      f"idle runtime {lean['idle_rss_mb']:.1f} MB.", ""]
        kinds = []
        for engine in (HEADLINE, "ct2-int8"):
            memory = s["engines"][engine].get("app_memory") or {}
            idle, end = memory.get("idle_kinds_mb") or {}, memory.get("end_kinds_mb") or {}
            if idle and end:
                kinds.append(f"{engine} anon {idle['anon']:.1f} -> {end['anon']:.1f} MB, file {idle['file']:.1f} -> "
                             f"{end['file']:.1f} MB")
        if kinds:
            lines += ["Resident set by kind, runtime imported -> after the last sentence (anon: heap and other "
                      "private memory; file: mapped pages of the runtime's libraries and files): "
                      + "; ".join(kinds) + ".", ""]
        lines += ["App memory: a fresh process holding only the runtime (onnxruntime + extensions library + numpy, or "
                  "ctranslate2 + sentencepiece) translates 20 sentences; peak = VmHWM; beyond Python = peak less the "
                  "bare interpreter and less numpy's import (the onnxruntime Python package needs numpy, an app "
                  "does not); model = peak less the process with the runtime imported and no model.", ""]
        if s.get("pairs_warm"):   # results before the warm blocks have the round-robin ratios only
            lines += [f"Warm blocks: {payload['settings']['warm_blocks']}.", "",
                      ratio_table(s["pairs_warm"]), "Round robin per sentence (caches cold between sentences):", ""]
        lines.append(ratio_table(s["pairs"]))
        lines += ["Levers (latency: per-sentence median of on/off; < 1 = faster with it):", "",
                  table(["lever", "on", "off", "latency", "size", "parity on / off", "BLEU drop on / off"],
                        [[lv["lever"], lv["on"], lv["off"], ratio(lv["latency_ratio_median"]),
                          number(lv["size_ratio"], ".2f", "x"), pair(lv["parity_on"], lv["parity_off"], ".3f"),
                          pair(lv["bleu_drop_on"], lv["bleu_drop_off"], ".2f")] for lv in s["levers"]],
                        align="lllrrrr")]
        c = s["step_costs"]
        shares = ", ".join(f"{k} {v:.0%}" for k, v in c["step_kernel_share"].items())
        lines += [f"Where {HEADLINE}'s time goes ({c['sentences']} sentences, {c['decoder_steps_per_sentence']:.1f} "
                  f"later steps each): whole model {c['whole_model_ms_per_sentence']:.2f} ms/sentence; its subgraphs "
                  f"called from Python: encoder + first step {c['encoder_and_first_step_ms']:.2f} ms, later steps "
                  f"{c['later_steps_ms']:.2f} ms ({c['ms_per_later_step'] * 1000:.0f} us each); whole minus parts "
                  f"{c['search_tokenizer_and_calls_ms']:+.2f} ms (search bookkeeping + tokenizer, less the Python "
                  f"call cost of the parts). Kernel time of a step: {shares}.", ""]
    lines += ["## Levers not built", ""] + [f"- {k}: {v}" for k, v in payload["not_built"].items()] + [""]
    lines.append(provenance_footer(payload["provenance"], versions=payload["versions"]))
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
