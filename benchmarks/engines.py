"""Engines side by side on the demo's final student: one run, interleaved, ratios pair by pair.

    python benchmarks/engines.py                  # runs/demo-bench/students/stage-2, test split
    python benchmarks/engines.py --sentences 50   # a quicker look

Engines: PyTorch eager generate; ONNX Runtime with optimum's encoder/decoder layout (fp32, int8);
the one-file string->string ONNX model (fp32, int8); CTranslate2 (float32, int8). Missing exports
of the student are made first under RUN/engines/. Each thread setting (1, all cores) is one
interleaved run. Writes benchmarks/results/engines/result.json and result.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from ekd_edge.bench.engines import EngineSpec, compare_engines, pair_ratios  # noqa: E402
from ekd_edge.files import write_bytes_atomic as atomic_write  # noqa: E402
from ekd_edge.bench.provenance import Provenance  # noqa: E402
from ekd_edge.console import console  # noqa: E402
from ekd_edge.data.corpus import load_corpus  # noqa: E402

# (numerator, denominator, what the figure answers)
HEADLINE = (
    ("onefile-int8", "ct2-int8", "one-file int8 vs CTranslate2 int8 (goal ≤ 1.0×)"),
    ("onefile-int8", "pytorch", "one-file int8 vs PyTorch eager (goal ≤ 0.125×, i.e. ≥ 8× faster)"),
    ("ort-int8", "pytorch", "ONNX Runtime (optimum layout) int8 vs PyTorch eager"),
    ("onefile-int8", "ort-int8", "one-file int8 vs ONNX Runtime (optimum layout) int8"),
    ("onefile-fp32", "ct2-fp32", "one-file fp32 vs CTranslate2 float32"),
    ("ct2-int8", "pytorch", "CTranslate2 int8 vs PyTorch eager"),
)


def ensure_exports(student: Path, run_dir: Path, valid_src: list[str]) -> list[EngineSpec]:
    exports = run_dir / "engines"
    specs = [EngineSpec("pytorch", "pytorch", student, "fp32")]
    for precision in ("fp32", "int8"):
        bundle = run_dir / "exports" / f"{student.name}-{precision}"
        if not (bundle / "manifest.json").is_file():
            from ekd_edge.export import export_bundle

            bundle = exports / f"ort-{precision}"
            if not (bundle / "manifest.json").is_file():
                with console.status(f"exporting ONNX Runtime {precision}"):
                    export_bundle(student, bundle, quantize=precision if precision == "int8" else None,
                                  parity_texts=valid_src)
        specs.append(EngineSpec(f"ort-{precision}", "onnxruntime", bundle, precision))
    for precision in ("fp32", "int8"):
        bundle = exports / f"onefile-{precision}"
        if not (bundle / "manifest.json").is_file():
            from ekd_edge.export.onefile import export_onefile

            with console.status(f"exporting the one-file model ({precision})"):
                # force: the parity shortfall, if any, is recorded in the manifest and in our result
                export_onefile(student, bundle, quantize=precision if precision == "int8" else None,
                               parity_texts=valid_src, force=True)
        specs.append(EngineSpec(f"onefile-{precision}", "onnxruntime-onefile", bundle, precision))
    for precision, quantization in (("fp32", "float32"), ("int8", "int8")):
        bundle = exports / f"ct2-{precision}"
        if not (bundle / "manifest.json").is_file():
            from ekd_edge.export.ct2 import export_ct2_bundle

            with console.status(f"converting to CTranslate2 ({quantization})"):
                export_ct2_bundle(student, bundle, quantization=quantization)
        specs.append(EngineSpec(f"ct2-{precision}", "ctranslate2", bundle, precision))
    return specs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run-dir", type=Path, default=REPO / "runs/demo-bench")
    parser.add_argument("--sentences", type=int, default=200, help="timed test sentences per engine")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 0], help="0 = all cores")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/engines")
    args = parser.parse_args()
    # no one thread count: each run of --threads records its own
    provenance = Provenance.begin(threads=None, settings={"sentences": args.sentences, "warmup": args.warmup,
                                                          "threads": args.threads})

    student = args.run_dir / "students" / "stage-2"
    corpus = load_corpus("lo-help-en-de")
    test = corpus.split("test")
    texts = test.src[: args.sentences]
    specs = ensure_exports(student, args.run_dir, corpus.split("valid").src[:50])
    args.out.mkdir(parents=True, exist_ok=True)
    # the fresh-process probes read their sentences from a file; it is not part of the result
    src_file = Path(tempfile.mkstemp(prefix="ekd-probe-", suffix=".txt")[1])
    src_file.write_text("\n".join(texts[:20]) + "\n")
    runs = {}
    try:
        for threads in args.threads:
            # "all" is explicit: left to each engine, the default would differ (torch follows OMP_NUM_THREADS)
            label = "all" if threads == 0 else str(threads)
            threads = threads or len(os.sched_getaffinity(0))
            with console.status(f"threads {label} ({threads}): {len(texts)} sentences × {len(specs)} engines") as status:
                result = compare_engines(specs, texts, threads, warmup=args.warmup, src_file=src_file,
                                         progress=lambda i, s=status, t=label: s.update(
                                             f"threads {t}: sentence {i}/{len(texts)}"))
            timings = result.pop("timings")
            ratios = {f"{a} / {b}": {"question": q, **pair_ratios(timings[a]["seconds"], timings[b]["seconds"])}
                      for a, b, q in HEADLINE if a in timings and b in timings}
            for spec in specs:
                manifest = json.loads((spec.path / "manifest.json").read_text()) if spec.kind != "pytorch" else {}
                result["engines"][spec.name]["export_parity"] = manifest.get("parity")
            runs[label] = {"threads": threads, **result, "ratios": ratios,
                           "seconds": {k: v["seconds"] for k, v in timings.items()}}
    finally:
        src_file.unlink(missing_ok=True)
    import ctranslate2
    import onnxruntime_extensions

    payload = {
        "command": "python benchmarks/engines.py" + (f" --sentences {args.sentences}" if args.sentences != 200 else ""),
        "student": str(student.relative_to(REPO) if student.is_relative_to(REPO) else student),
        "data": f"lo-help-en-de:test, first {len(texts)} sentences (split fingerprint {test.fingerprint()})",
        "settings": {"decoding": "greedy, batch 1, max_new_tokens 128, text in -> text out (tokenise, generate, "
                                 "detokenise)", "warmup_per_engine": args.warmup,
                     "order": "round-robin per sentence, first engine rotating",
                     "peak_rss": "fresh process per engine, loading + 20 sentences (VmHWM)"},
        # engines the provenance's package list does not name
        "versions": {"ctranslate2": ctranslate2.__version__, "onnxruntime_extensions": onnxruntime_extensions.__version__},
        "runs": runs,
    }
    payload["provenance"] = provenance.end(data={"test": test.fingerprint()}, models=[spec.path for spec in specs])
    atomic_write(args.out / "result.json", (json.dumps(payload, indent=2, ensure_ascii=False) + "\n").encode())
    atomic_write(args.out / "result.md", render(payload).encode())
    console.print(render(payload), markup=False)
    return 0


def render(payload: dict) -> str:
    lines = ["# Engines side by side: the demo's final student", "",
             f"Command: `{payload['command']}`  ", f"Student: `{payload['student']}`  ", f"Data: {payload['data']}  ",
             f"Settings: {payload['settings']['decoding']}; {payload['settings']['warmup_per_engine']} warm-up "
             f"sentences per engine; {payload['settings']['order']}.", ""]
    for label, run in payload["runs"].items():
        lines += [f"## Threads: {label} ({run['threads']})", "", "| engine | p50 ms | p90 ms | p99 ms | tokens/s | load s | peak RSS MB "
                  "| size MB |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for name, e in run["engines"].items():
            lines.append(f"| {name} | {e['p50_ms']:.2f} | {e['p90_ms']:.2f} | {e['p99_ms']:.2f} | {e['tokens_per_s']:.0f} "
                         f"| {e.get('load_s', float('nan')):.2f} | {e.get('peak_rss_mb', float('nan')):.0f} "
                         f"| {e['size_mb']:.2f} |")
        lines += ["", "Pair-by-pair latency ratios (per sentence A/B, median [p10–p90]; < 1 means A is faster):", "",
                  "| A / B | median | p10 | p90 | ratio of p50s | A faster on |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
        for pair, r in run["ratios"].items():
            lines.append(f"| {pair} | {r['median']:.3f}× | {r['p10']:.3f}× | {r['p90']:.3f}× | {r['p50_ratio']:.3f}× "
                         f"| {r['wins']}/{r['n']} |")
        lines.append("")
    prov = payload["provenance"]
    sig = prov["environment"]
    lines += [f"Machine: {sig['cpu']}, {sig['usable_cores']} usable cores; {sig['os']}; Python {sig['python']}.  ",
              f"Packages: {json.dumps({**sig['packages'], **payload['versions']})}  ",
              f"Load average before: {prov['load_average_before']}  ",
              f"Load average after: {prov['load_average_after']}", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
