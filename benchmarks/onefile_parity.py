"""Parity of the one-file ONNX model (strings in, strings out) with PyTorch ``generate``.

Exports the demo's final student (runs/demo-bench/students/stage-2) as a one-file model, fp32
and int8, then translates the lo-help-en-de test split with both and with PyTorch at the same
beam size and length limit, and counts identical strings and identical token ids.

    .venv/bin/python benchmarks/onefile_parity.py [--beams 1 4] [--sentences N]
    .venv/bin/python benchmarks/onefile_parity.py --latency   # after the parity run

Writes benchmarks/results/onefile-parity/parity.{json,md}; ``--latency`` times the exported
one-file models (one sentence per call, as the Android app calls them) and writes latency.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ekd_edge.bench.provenance import Provenance  # noqa: E402
from ekd_edge.console import console  # noqa: E402
from ekd_edge.data import load_corpus  # noqa: E402
from ekd_edge.runtime.onefile_engine import OneFileTranslator
from ekd_edge.export.onefile import export_onefile  # noqa: E402
from ekd_edge.runtime.torch_engine import TorchTranslator  # noqa: E402

CHECKPOINT = ROOT / "runs/demo-bench/students/stage-2"
EXPORTS = ROOT / "runs/demo-bench/exports"
OUT = ROOT / "benchmarks/results/onefile-parity"
MAX_NEW_TOKENS = 128
BATCH = 32


def translate_all(translator, texts, num_beams):
    """Strings and token ids (decoder start, EOS and padding stripped) from one generation per batch."""
    from ekd_edge.runtime.onefile_engine import run_onefile
    from ekd_edge.runtime.base import strip_special

    strings, ids = [], []
    for start in range(0, len(texts), BATCH):
        batch = texts[start:start + BATCH]
        if isinstance(translator, OneFileTranslator):
            batch_strings, rows = run_onefile(translator.session, batch, max_new_tokens=MAX_NEW_TOKENS,
                                              num_beams=num_beams)
            rows = [strip_special([int(i) for i in row], translator.pad_id, translator.eos_id) for row in rows]
        else:
            rows = translator.generate_ids(batch, max_new_tokens=MAX_NEW_TOKENS, num_beams=num_beams)
            batch_strings = translator.tokenizer.batch_decode(rows, skip_special_tokens=True)
        ids.extend(rows)
        strings.extend(batch_strings)
    return strings, ids


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--beams", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--sentences", type=int, default=0, help="0 = the whole test split")
    parser.add_argument("--latency", action="store_true", help="time the exported models instead (batch 1)")
    args = parser.parse_args()
    provenance = Provenance.begin(threads=1, settings={"beams": args.beams, "sentences": args.sentences,
                                                       "latency": args.latency})
    if args.latency:
        return latency(args, provenance)
    if not (ROOT / "runs/demo-bench/demo.json").is_file():
        console.print("runs/demo-bench/demo.json not found: run the demo benchmark first")
        return 2
    texts = load_corpus("lo-help-en-de").split("test").src
    texts = texts[: args.sentences] if args.sentences else texts

    models = {}
    for variant, quantize in (("fp32", None), ("int8", "int8")):
        out = EXPORTS / f"stage-2-onefile-{variant}"
        started = time.perf_counter()
        manifest = export_onefile(CHECKPOINT, out, quantize=quantize, progress=console.print)
        models[variant] = {"dir": out, "size": manifest["total_size"], "export_s": time.perf_counter() - started,
                           "manifest": manifest}

    reference = TorchTranslator(CHECKPOINT, threads=1)
    results = []
    for beams in args.beams:
        started = time.perf_counter()
        ref_strings, ref_ids = translate_all(reference, texts, beams)
        ref_s = time.perf_counter() - started
        for variant, info in models.items():
            translator = OneFileTranslator(info["dir"], threads=1)
            started = time.perf_counter()
            strings, ids = translate_all(translator, texts, beams)
            elapsed = time.perf_counter() - started
            same_text = sum(a == b for a, b in zip(ref_strings, strings))
            same_ids = sum(a == b for a, b in zip(ref_ids, ids))
            first = next((i for i, (a, b) in enumerate(zip(ref_strings, strings)) if a != b), None)
            results.append({
                "variant": variant, "num_beams": beams, "n": len(texts),
                "string_rate": same_text / len(texts), "n_same_string": same_text,
                "id_rate": same_ids / len(texts), "n_same_ids": same_ids,
                "pytorch_s": round(ref_s, 1), "onefile_s": round(elapsed, 1),
                "size_bytes": info["size"],
                "first_mismatch": None if first is None else
                {"index": first, "source": texts[first], "pytorch": ref_strings[first], "onefile": strings[first]},
            })
            console.print(f"beams {beams} {variant}: strings {same_text}/{len(texts)}, ids {same_ids}/{len(texts)}")

    record = {
        "command": "python benchmarks/onefile_parity.py " + " ".join(sys.argv[1:]),
        "checkpoint": str(CHECKPOINT.relative_to(ROOT)),
        "data": "lo-help-en-de test split" + (f", first {args.sentences}" if args.sentences else ""),
        "settings": {"max_new_tokens": MAX_NEW_TOKENS, "batch_size": BATCH, "threads": 1,
                     "int8": "dynamic, per-channel, avx512_vnni"},
        "results": results,
        "provenance": provenance.end(models=[CHECKPOINT, *(info["dir"] for info in models.values())]),
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "parity.json").write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n")
    lines = ["# One-file model parity with PyTorch generate", "",
             f"`{record['command']}` — {record['data']}, max_new_tokens {MAX_NEW_TOKENS}, batch {BATCH}, "
             f"1 thread. Load average at start {record['provenance']['load_average_before']} "
             "(a shared machine: timings are indicative only).", "",
             "| variant | beams | same string | same token ids | size MB | PyTorch s | one-file s |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r['variant']} | {r['num_beams']} | {r['n_same_string']}/{r['n']} ({r['string_rate']:.1%}) | "
                     f"{r['n_same_ids']}/{r['n']} ({r['id_rate']:.1%}) | {r['size_bytes'] / 1e6:.2f} | "
                     f"{r['pytorch_s']} | {r['onefile_s']} |")
    (OUT / "parity.md").write_text("\n".join(lines) + "\n")
    console.print("\n".join(lines))
    return 0


def latency(args, provenance: Provenance) -> int:
    """Batch-1 latency of the one-file models: one run() per sentence, strings in and out."""
    from ekd_edge.bench.speed import latency_summary
    from ekd_edge.runtime.onefile_engine import onefile_session, run_onefile

    texts = load_corpus("lo-help-en-de").split("test").src[:100]
    rows = []
    for variant in ("fp32", "int8"):
        model = EXPORTS / f"stage-2-onefile-{variant}" / "model.onnx"
        started = time.perf_counter()
        settings = json.loads((model.parent / "manifest.json").read_text())["settings"]
        session = onefile_session(model, threads=1, settings=settings)
        load_ms = (time.perf_counter() - started) * 1000
        for beams in args.beams:
            for text in texts[:5]:
                run_onefile(session, [text], max_new_tokens=MAX_NEW_TOKENS, num_beams=beams)
            seconds = []
            for text in texts:
                started = time.perf_counter()
                run_onefile(session, [text], max_new_tokens=MAX_NEW_TOKENS, num_beams=beams)
                seconds.append(time.perf_counter() - started)
            summary = {k: round(v, 1) for k, v in latency_summary(seconds).items()}
            rows.append({"variant": variant, "num_beams": beams, "load_ms": round(load_ms, 1),
                         "size_bytes": model.stat().st_size, **summary})
            console.print(rows[-1])
    record = {
        "command": "python benchmarks/onefile_parity.py " + " ".join(sys.argv[1:]),
        "data": "first 100 sentences of the lo-help-en-de test split, one per call, after 5 warm-up calls",
        "settings": {"max_new_tokens": MAX_NEW_TOKENS, "threads": 1},
        "results": rows,
        "provenance": provenance.end(models=[EXPORTS / f"stage-2-onefile-{v}" for v in ("fp32", "int8")]),
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "latency.json").write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n")
    lines = ["# One-file model latency (batch 1, one run() per sentence)", "",
             f"`{record['command']}` — {record['data']}; 1 thread, max_new_tokens {MAX_NEW_TOKENS}. "
             f"Load average at start {record['provenance']['load_average_before']}, "
             f"at end {record['provenance']['load_average_after']} "
             "(2 cores shared with other jobs: treat as upper bounds).", "",
             "| variant | beams | model MB | session load ms | p50 ms | p90 ms | mean ms |", "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['variant']} | {r['num_beams']} | {r['size_bytes'] / 1e6:.2f} | {r['load_ms']} | "
                     f"{r['p50_ms']} | {r['p90_ms']} | {r['mean_ms']} |")
    (OUT / "latency.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
