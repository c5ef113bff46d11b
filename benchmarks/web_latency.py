"""The student in the browser: latency in headless Chromium against the native int8 engines.

Exports the demo's final student (the last stage of runs/demo, or --checkpoint) three ways:
the web bundle (profile web: int8 graphs for onnxruntime-web), the one-file int8 model for x86
(profile onefile-x86) and CTranslate2 int8 (profile ct2-int8); exports already in --work-dir are
reused when their manifest verifies. Then, on the same test sentences, one at a time:

- the demo page in headless Chromium (web_demo/, Debian's chromium driven by playwright-core),
  WebAssembly on 1 and on 2 threads: each sentence is timed on the page (tokenise, greedy
  search, detokenise), after --warmup untimed ones;
- the one-file int8 model and CTranslate2 int8 natively (onnxruntime / ctranslate2 in Python,
  one thread), text in, text out, likewise after warm-up;

and records the page's payload (runtime and model bytes, from the bundle's manifest), the time
the page took to load the model, and BLEU/chrF of the web bundle (run by the same WebAssembly
in Node) and of the checkpoint on the whole test split.

    .venv/bin/python benchmarks/web_latency.py [--checkpoint DIR] [--sentences 100] [--warmup 5]
        [--work-dir runs/web-latency] [--out benchmarks/results/web-latency]

Writes result.json and result.md to --out. --smoke (with --out elsewhere) runs a tiny untrained
student on a few sentences, to check that the script works, not to measure anything.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ekd_edge.bench.browser import translate_in_browser  # noqa: E402
from ekd_edge.bench.provenance import Provenance  # noqa: E402
from ekd_edge.bench.speed import latency_summary, measure_latency  # noqa: E402
from ekd_edge.console import console  # noqa: E402
from ekd_edge.data import load_corpus  # noqa: E402
from ekd_edge.defaults import DEMO_RUN_DIR  # noqa: E402
from ekd_edge.errors import BundleError, EkdError  # noqa: E402
from ekd_edge.markdown import number, provenance_footer, table  # noqa: E402

RESULTS = ROOT / "benchmarks/results/web-latency"
CORPUS = "lo-help-en-de"
# variant -> export profile; the first is the page's
EXPORTS = {"web-int8": "web", "onefile-int8-x86": "onefile-x86", "ct2-int8": "ct2-int8"}
NATIVE = ("onefile-int8-x86", "ct2-int8")
BROWSER_THREADS = (1, 2)
MAX_NEW_TOKENS = 128


def export_all(checkpoint: Path, work: Path, smoke: bool) -> dict:
    """variant -> bundle path, exported with its profile unless a verified one is there."""
    from ekd_edge.export.profiles import load_profile, run_export
    from ekd_edge.runtime.manifest import read_manifest, verify_bundle

    bundles = {}
    for variant, profile_name in EXPORTS.items():
        out = work / variant
        try:
            verify_bundle(out)
            if read_manifest(out)["source"]["model_sha256"] != _sha256(checkpoint / "model.safetensors"):
                raise BundleError("exported from another checkpoint")
        except (BundleError, KeyError):
            profile = load_profile(profile_name)
            profile.corpus = CORPUS
            if smoke:   # an untrained student: the gates would only measure noise
                profile.gate.parity_sentences = profile.gate.quality_sentences = 0
            with console.status(f"exporting {variant} (profile {profile_name})") as status:
                run_export(checkpoint, out, profile, force=smoke,
                           progress=lambda text, v=variant: status.update(f"{v}: {text}"))
        bundles[variant] = out
    return bundles


def _sha256(path: Path) -> str:
    from ekd_edge.hashing import file_sha256

    return file_sha256(path)


def smoke_checkpoint(work: Path) -> Path:
    """A tiny untrained student with a tiny tokenizer, for --smoke."""
    from ekd_edge.data import train_tokenizer
    from ekd_edge.models import build_model, save_model

    train = load_corpus(CORPUS).split("train").head(500)
    tokenizer = work / "smoke-tokenizer"
    if not (tokenizer / "vocab.json").is_file():
        train_tokenizer(train.src + train.tgt, tokenizer, vocab_size=200)
    checkpoint = work / "smoke-student"
    if not (checkpoint / "model.safetensors").is_file():
        save_model(build_model("nano", vocab_size=200, seed=0, max_positions=24), checkpoint, tokenizer_dir=tokenizer)
    return checkpoint


def bleu_of(translator, test) -> dict:
    from ekd_edge.metrics import score

    scored = score(translator.translate(test.src, max_new_tokens=MAX_NEW_TOKENS), test.tgt)
    return {k: scored[k] for k in ("bleu", "chrf", "bleu_signature")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", type=Path, help="student checkpoint (default: the final student of --run-dir)")
    parser.add_argument("--run-dir", type=Path, default=ROOT / DEMO_RUN_DIR, help="a finished demo run")
    parser.add_argument("--sentences", type=int, default=100, help="timed test sentences per engine")
    parser.add_argument("--warmup", type=int, default=5, help="untimed sentences before the timed ones")
    parser.add_argument("--work-dir", type=Path, default=ROOT / "runs/web-latency", help="exports are kept here")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--smoke", action="store_true", help="a tiny untrained student, a few sentences (needs --out)")
    args = parser.parse_args()
    if args.smoke and args.out.resolve() == RESULTS.resolve():
        print("--smoke writes no committed result: give --out", file=sys.stderr)
        return 2
    sentences, warmup = (4, 1) if args.smoke else (args.sentences, args.warmup)
    provenance = Provenance.begin(threads=1, settings={"sentences": sentences, "warmup": warmup,
                                                       "browser_threads": list(BROWSER_THREADS),
                                                       "max_new_tokens": MAX_NEW_TOKENS, "smoke": args.smoke})
    try:
        return run(args, provenance, sentences, warmup)
    except EkdError as exc:
        console.print(f"error: {exc}")
        return 2


def run(args, provenance, sentences: int, warmup: int) -> int:
    from ekd_edge.pipeline import final_student
    from ekd_edge.runtime import load_translator
    from ekd_edge.runtime.manifest import read_manifest
    from ekd_edge.runtime.torch_engine import TorchTranslator
    from ekd_edge.runtime.web_engine import WebTranslator

    args.work_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = smoke_checkpoint(args.work_dir) if args.smoke else (args.checkpoint or final_student(args.run_dir))
    test = load_corpus(CORPUS).split("test")
    scored = test.head(20) if args.smoke else test
    timed = test.head(sentences).src
    bundles = export_all(checkpoint, args.work_dir, args.smoke)
    manifest = read_manifest(bundles["web-int8"])

    rows = []
    console.print(f"browser: {len(timed)} sentences, threads {', '.join(map(str, BROWSER_THREADS))}")
    page = translate_in_browser(bundles["web-int8"], timed, threads=BROWSER_THREADS, warmup=warmup,
                                max_new_tokens=MAX_NEW_TOKENS)
    browser_ids = {}
    for run_ in page["runs"]:
        info = run_["info"]
        if not info["crossOriginIsolated"] or info["threads"] != run_["threads"]:
            raise BundleError(f"the page ran on {info['threads']} thread(s), cross-origin isolated: "
                              f"{info['crossOriginIsolated']} (asked for {run_['threads']})")
        ms = [t["ms"] for t in run_["translations"]]
        browser_ids[run_["threads"]] = [t["ids"] for t in run_["translations"]]
        rows.append({"engine": f"browser WebAssembly, {run_['threads']} thread{'s' if run_['threads'] > 1 else ''}",
                     "variant": "web-int8", "threads": run_["threads"], "load_s": round(info["load_ms"] / 1000, 2),
                     **latency_summary([m / 1000 for m in ms])})
    for variant in NATIVE:
        console.print(f"{variant}: {len(timed)} sentences, 1 thread")
        translator = load_translator(bundles[variant], threads=1)
        summary = measure_latency(translator, timed, warmup=warmup, max_new_tokens=MAX_NEW_TOKENS)
        translator.close()
        rows.append({"engine": f"native {variant}", "variant": variant, "threads": 1, "load_s": None,
                     **{k: summary[k] for k in ("p50_ms", "p90_ms", "p99_ms", "mean_ms")}})

    console.print(f"BLEU on {len(scored)} test sentences: web bundle (WebAssembly in Node) and checkpoint")
    web = WebTranslator(bundles["web-int8"], threads=1)
    web_bleu = bleu_of(web, scored)
    node_ids = web.generate_ids(timed, max_new_tokens=MAX_NEW_TOKENS)
    web.close()
    checkpoint_bleu = bleu_of(TorchTranslator(checkpoint), scored)
    same = {threads: sum(a == b for a, b in zip(ids, node_ids)) for threads, ids in browser_ids.items()}

    sizes = {variant: read_manifest(path)["total_size"] for variant, path in bundles.items()}
    result = {
        "checkpoint": str(checkpoint),
        "browser": page["browser"],
        "user_agent": page["runs"][0]["info"]["userAgent"],
        "web_runtime": manifest.get("web_runtime"),
        "payload": {k: manifest["payload"][k] for k in ("model_bytes", "runtime_bytes")},
        "bundle_bytes": sizes,
        "latency": rows,
        "bleu": {"test_sentences": len(scored), "web_int8": web_bleu, "checkpoint": checkpoint_bleu},
        "browser_ids_equal_node": {str(k): v for k, v in same.items()},
        "sentences": len(timed),
        "provenance": provenance.end(data={"corpus": CORPUS, "split": "test", "timed_sentences": len(timed),
                                           "bleu_sentences": len(scored)},
                                     models=[checkpoint, *bundles.values()]),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "result.json").write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    (args.out / "result.md").write_text(markdown(result))
    console.print(markdown(result))
    return 0


def markdown(result: dict) -> str:
    payload = result["payload"]
    latency = table(["engine", "threads", "p50 ms", "p90 ms", "mean ms", "model load s"],
                    [[r["engine"], r["threads"], r["p50_ms"], r["p90_ms"], r["mean_ms"], r["load_s"]]
                     for r in result["latency"]])
    bleu = result["bleu"]
    quality = table(["model", "BLEU", "chrF"],
                    [["web bundle (int8, WebAssembly)", bleu["web_int8"]["bleu"], bleu["web_int8"]["chrf"]],
                     ["checkpoint (PyTorch)", bleu["checkpoint"]["bleu"], bleu["checkpoint"]["chrf"]]])
    sizes = table(["what", "MB"], [["page runtime (onnxruntime-web, SentencePiece, translator.mjs)",
                                    payload["runtime_bytes"] / 1e6],
                                   ["page model (graphs, tokenizer, web.json)", payload["model_bytes"] / 1e6]]
                  + [[f"bundle {variant} on disk", size / 1e6] for variant, size in result["bundle_bytes"].items()],
                  formats={1: lambda v: number(v, ".2f")})
    same = ", ".join(f"{t} thread(s): {n}/{result['sentences']}" for t, n in result["browser_ids_equal_node"].items())
    return (f"# The student in the browser\n\n{result['browser']} (headless), onnxruntime-web "
            f"{(result.get('web_runtime') or {}).get('onnxruntime-web')}; {result['sentences']} test sentences, "
            f"one at a time, greedy, after warm-up; native engines on one thread.\n\n## Latency per sentence\n\n"
            f"{latency}\n## Page payload\n\n{sizes}\n## Quality on {bleu['test_sentences']} test sentences\n\n"
            f"{quality}\nBrowser token ids equal to the same bundle's in Node: {same}.\n\n"
            + provenance_footer(result["provenance"]))


if __name__ == "__main__":
    raise SystemExit(main())
