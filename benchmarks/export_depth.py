"""Export depth on the demo's final student: int8 presets, CTranslate2, structured pruning, .ort.

    python benchmarks/export_depth.py                          # the last stage of runs/demo
    python benchmarks/export_depth.py --checkpoint DIR --recovery-steps 600
    python benchmarks/export_depth.py --checkpoint DIR --test-sentences 8 --latency-sentences 3 \
        --gate-sentences 8 --recovery-steps 2 --work DIR --out DIR      # every variant at smoke size

Every variant (ONNX bundles, the one-file builds, CTranslate2, pruning) is exported through the
library (with its gates), then measured the same way:
model-file size (the ONNX graphs, CTranslate2's model.bin or the safetensors weights), parameters,
BLEU/chrF on the whole test split (greedy), batch-1 greedy latency (p50/p90, one thread) on the
first test sentences. Writes benchmarks/results/export-depth/result.json and result.md (or into --out).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from ekd_edge.metrics import score  # noqa: E402
from ekd_edge.files import write_bytes_atomic as atomic_write  # noqa: E402
from ekd_edge.bench.provenance import Provenance  # noqa: E402
from ekd_edge.bench.speed import measure_latency  # noqa: E402
from ekd_edge.console import console  # noqa: E402
from ekd_edge.data import load_corpus  # noqa: E402

OUT = REPO / "benchmarks" / "results" / "export-depth"


def model_bytes(path: Path) -> int:
    """What inference loads, by the reports' one size rule (ekd_edge.bench.model_size_mb)."""
    from ekd_edge.bench import model_size_mb

    return round(model_size_mb(path) * 1024 * 1024)


def bundle_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def measure(name: str, path: Path, test, latency_n: int, extra: dict | None = None) -> dict:
    from ekd_edge.bench import model_params
    from ekd_edge.runtime import load_translator

    console.print(f"measuring {name}")
    translator = load_translator(path, threads=1)
    start = time.perf_counter()
    quality = score(translator.translate(test.src, max_new_tokens=128), test.tgt)
    decode_s = time.perf_counter() - start
    latency = measure_latency(translator, test.src[:latency_n], warmup=5, max_new_tokens=128)
    row = {
        "name": name,
        "engine": translator.engine,
        "path": str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path),
        "model_bytes": model_bytes(path),
        "bundle_bytes": bundle_bytes(path),
        "params": model_params(path, translator),
        "bleu": round(quality["bleu"], 2),
        "chrf": round(quality["chrf"], 2),
        "test_decode_s": round(decode_s, 1),
        "latency_p50_ms": round(latency["p50_ms"], 2),
        "latency_p90_ms": round(latency["p90_ms"], 2),
        "tokens_per_s": round(latency.get("tokens_per_s", 0.0), 1),
    }
    row.update(extra or {})
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, help="default: the final student of runs/demo")
    parser.add_argument("--work", type=Path, default=REPO / "runs/export-depth")
    parser.add_argument("--latency-sentences", type=int, default=100)
    parser.add_argument("--gate-sentences", type=int, default=200)
    parser.add_argument("--recovery-steps", type=int, default=600)
    parser.add_argument("--test-sentences", type=int, default=0, help="first N test sentences (0 = all)")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--render", action="store_true", help="only rewrite result.md from result.json")
    args = parser.parse_args()
    if args.render:
        result = json.loads((args.out / "result.json").read_text())
        atomic_write(args.out / "result.md", render(result).encode())
        return 0
    provenance = Provenance.begin(threads=1, settings={"latency_sentences": args.latency_sentences,
                                                       "gate_sentences": args.gate_sentences,
                                                       "recovery_steps": args.recovery_steps,
                                                       "test_sentences": args.test_sentences})

    from ekd_edge.export.ct2 import export_ct2_bundle
    from ekd_edge.export.onnx_export import export_bundle
    from ekd_edge.export.prune import PruneSettings, prune_checkpoint

    corpus = load_corpus("lo-help-en-de")
    test, valid = corpus.split("test").head(args.test_sentences or None), corpus.split("valid")
    gate = valid.head(args.gate_sentences)
    parity = gate.src
    from ekd_edge.defaults import DEMO_RUN_DIR
    from ekd_edge.errors import RunError
    from ekd_edge.pipeline import final_student

    try:
        ckpt = args.checkpoint or final_student(REPO / DEMO_RUN_DIR)
    except RunError as exc:
        console.print(str(exc))
        return 2
    work = args.work
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    rows = [measure("checkpoint (PyTorch fp32)", ckpt, test, args.latency_sentences)]

    def onnx(name, out, **kwargs):
        manifest = export_bundle(ckpt if "source" not in kwargs else kwargs.pop("source"), work / out,
                                 parity_texts=parity, quality_data=(gate.src, gate.tgt), force=True, **kwargs)
        extra = {"quality_gate": manifest.get("quality_gate"), "parity_rate": manifest["parity"].get("rate"),
                 "settings": manifest["settings"], "quantization": manifest.get("quantization"),
                 "mobile": manifest.get("mobile")}
        return measure(name, work / out, test, args.latency_sentences, extra)

    rows.append(onnx("onnx fp32", "onnx-fp32"))
    rows.append(onnx("onnx int8 avx512_vnni per-channel", "onnx-int8-vnni", quantize="int8", quant_arch="avx512_vnni"))
    rows.append(onnx("onnx int8 avx512_vnni per-tensor", "onnx-int8-vnni-tensor", quantize="int8",
                     quant_arch="avx512_vnni", per_channel=False))
    rows.append(onnx("onnx int8 avx2 per-channel", "onnx-int8-avx2", quantize="int8", quant_arch="avx2"))
    rows.append(onnx("onnx int8 arm64 per-channel", "onnx-int8-arm64", quantize="int8", quant_arch="arm64"))
    rows.append(onnx("onnx int8 arm64 per-channel, portable numerics", "onnx-int8-arm64-portable", quantize="int8",
                     quant_arch="arm64", portable=True))
    rows.append(onnx("onnx int8 vnni, lm_head kept fp32", "onnx-int8-vnni-fp32-head", quantize="int8",
                     quant_arch="avx512_vnni", keep_fp32=("lm_head",)))
    from ekd_edge.export.onefile import export_onefile

    for name, out, settings in (("one-file int8 block-wise (onefile-x86)", "onefile-int8-blockwise",
                                 dict(quantize="int8", int8_kernel="blockwise")),
                                ("one-file int8 arm64, portable numerics (android-app)", "onefile-int8-arm64-portable",
                                 dict(quantize="int8", quant_arch="arm64", portable=True))):
        manifest = export_onefile(ckpt, work / out, parity_texts=parity, quality_data=(gate.src, gate.tgt), force=True,
                                  **settings)
        rows.append(measure(name, work / out, test, args.latency_sentences,
                            {"quality_gate": manifest.get("quality_gate"), "parity_rate": manifest["parity"].get("rate"),
                             "settings": manifest["settings"]}))
    for quantization in ("int8", "float32"):
        manifest = export_ct2_bundle(ckpt, work / f"ct2-{quantization}", quantization=quantization,
                                     quality_data=(gate.src, gate.tgt), force=True)
        rows.append(measure(f"ct2 {quantization}", work / f"ct2-{quantization}", test, args.latency_sentences,
                            {"quality_gate": manifest.get("quality_gate")}))

    settings = PruneSettings(ffn_keep=0.5, decoder_layers=1)
    pruning = prune_checkpoint(ckpt, work / "pruned", settings, valid)
    rows.append(measure("pruned, no recovery (PyTorch)", work / "pruned", test, args.latency_sentences,
                        {"pruning": pruning}))
    settings = PruneSettings(ffn_keep=0.5, decoder_layers=1, recovery_steps=args.recovery_steps, recovery_lr=1.5e-3)
    pruning = prune_checkpoint(ckpt, work / "pruned-kd", settings, valid, corpus.split("train"))
    rows.append(measure(f"pruned + {args.recovery_steps}-step KD recovery (PyTorch)", work / "pruned-kd", test,
                        args.latency_sentences, {"pruning": pruning}))
    rows.append(onnx("pruned + KD, onnx int8 arm64 portable + .ort", "pruned-kd-int8-ort", source=work / "pruned-kd",
                     quantize="int8", quant_arch="arm64", portable=True, mobile="arm", quality_reference=ckpt))

    base = rows[0]
    fp32_onnx = rows[1]["model_bytes"]
    for row in rows:
        row["bleu_drop_vs_checkpoint"] = round(base["bleu"] - row["bleu"], 2)
        row["size_vs_onnx_fp32"] = round(row["model_bytes"] / fp32_onnx, 3)
        row["params_vs_checkpoint"] = round(row["params"] / base["params"], 3) if row["params"] else None
        row["latency_p50_change"] = round(row["latency_p50_ms"] / base["latency_p50_ms"] - 1, 3)

    result = {
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "checkpoint": str(ckpt.relative_to(REPO) if ckpt.is_relative_to(REPO) else ckpt),
        "data": {"test": f"lo-help-en-de:test ({len(test.src)} sentences, greedy, max_new_tokens 128)",
                 "latency": f"first {args.latency_sentences} test sentences, batch 1, 1 thread, 5 warm-up",
                 "gates": f"first {args.gate_sentences} validation sentences (parity + BLEU gate, forced so every "
                          "variant is measured; gate outcome recorded per row)"},
        "versions": _versions(),
        "rows": rows,
    }
    result["provenance"] = provenance.end(models=[REPO / r["path"] for r in rows])
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write(args.out / "result.json", (json.dumps(result, indent=2) + "\n").encode())
    atomic_write(args.out / "result.md", render(result).encode())
    console.print((args.out / "result.md").read_text())
    return 0


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("onnx", "optimum-onnx", "ctranslate2"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def render(result: dict) -> str:
    from ekd_edge.markdown import provenance_footer, table

    # results written before the provenance block kept its fields at the top level (--render)
    prov = result.get("provenance", result)
    body = []
    for r in result["rows"]:
        gate = r.get("quality_gate") or {}
        body.append([r["name"], r["model_bytes"] / 1e6, f"{r['size_vs_onnx_fp32']:.3f}", r["params"] or None, r["bleu"],
                     f"{r['bleu_drop_vs_checkpoint']:+.2f}", r["chrf"], f"{r['latency_p50_ms']:.1f}",
                     f"{r['latency_p90_ms']:.1f}", f"{r['latency_p50_change']:+.0%}",
                     f"{gate.get('status')} ({gate.get('bleu_drop')})" if gate else None])
    lines = [
        "# Export depth on the demo's final student",
        "",
        f"Command: `{result['command']}`  ",
        f"Checkpoint: `{result['checkpoint']}`  ",
        f"Test: {result['data']['test']}  ",
        f"Latency: {result['data']['latency']}  ",
        f"Gates: {result['data']['gates']}",
        "",
        table(["variant", "model MB", "× onnx fp32", "params", "BLEU", "ΔBLEU", "chrF", "p50 ms", "p90 ms", "Δp50",
               "gate"], body, align="l" + "r" * 9 + "l"),
        "ΔBLEU is the drop against the PyTorch checkpoint (positive = worse); Δp50 is the latency change "
        "against it. The quality gate column is the gate on validation data (BLEU drop in brackets). "
        "\"× onnx fp32\" compares model files only (ONNX graphs, ct2/model.bin or model.safetensors). "
        "The pruned model without recovery emits degenerate output up to the length limit, hence its latency. "
        "Portable numerics (export/portable.py) trade speed for identical tokens on x86 and ARM "
        "(benchmarks/results/arm/).", "",
    ]
    if prov["load_average_before"][0] > 1.0:  # 1 = the benchmark's own thread
        lines += ["Other jobs loaded the 2 cores during this run (see load averages): read latencies as rough.", ""]
    lines.append(provenance_footer(prov, versions=result.get("versions")))
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
