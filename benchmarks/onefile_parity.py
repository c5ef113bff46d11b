"""Parity of the one-file ONNX model (strings in, strings out) with PyTorch ``generate``.

Exports the demo's final student (the last stage of runs/demo) as a one-file model, fp32 and
block-wise int8 (profile onefile-x86), then translates the lo-help-en-de test split with both and
with PyTorch at the same beam size and length limit, in batches of 32, and counts identical
strings and identical token ids.

    .venv/bin/python benchmarks/onefile_parity.py [--beams 1 4] [--sentences N] [--run-dir runs/demo]
        [--checkpoint DIR] [--work runs/onefile-parity] [--out benchmarks/results/onefile-parity]

Writes benchmarks/results/onefile-parity/parity.{json,md} (or into --out). Batch-1 latency of the same builds is
benchmarks/engines.py's.
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
from ekd_edge.runtime.onefile_engine import OneFileTranslator  # noqa: E402
from ekd_edge.export.onefile import export_onefile  # noqa: E402
from ekd_edge.runtime.torch_engine import TorchTranslator  # noqa: E402
from ekd_edge.defaults import DEMO_RUN_DIR  # noqa: E402
from ekd_edge.errors import RunError  # noqa: E402
from ekd_edge.markdown import plain, provenance_footer, table  # noqa: E402
from ekd_edge.pipeline import final_student  # noqa: E402

EXPORTS = ROOT / "runs/onefile-parity"
# the one-file builds compared with PyTorch: fp32 and the x86 int8 build (profile onefile-x86)
VARIANTS = {"fp32": {}, "int8": {"quantize": "int8", "int8_kernel": "blockwise"}}
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
    parser.add_argument("--sentences", type=int, default=0, help="0 = the whole split")
    parser.add_argument("--split", default="test", choices=("train", "valid", "test"),
                        help="the lo-help-en-de split translated (default: test)")
    parser.add_argument("--run-dir", type=Path, default=ROOT / DEMO_RUN_DIR, help="a finished demo run")
    parser.add_argument("--checkpoint", type=Path, help="a student checkpoint instead of the run's final student")
    parser.add_argument("--work", type=Path, default=EXPORTS, help="where the one-file exports go")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    provenance = Provenance.begin(threads=1, settings={"beams": args.beams, "sentences": args.sentences,
                                                           "split": args.split})
    try:
        checkpoint = args.checkpoint or final_student(args.run_dir)
    except RunError as exc:
        console.print(str(exc))
        return 2
    texts = load_corpus("lo-help-en-de").split(args.split).src
    texts = texts[: args.sentences] if args.sentences else texts

    models = {}
    for variant, settings in VARIANTS.items():
        out = args.work / f"{checkpoint.name}-onefile-{variant}"
        started = time.perf_counter()
        manifest = export_onefile(checkpoint, out, **settings, force=True, progress=console.print)
        models[variant] = {"dir": out, "size": manifest["total_size"], "export_s": time.perf_counter() - started,
                           "manifest": manifest}

    reference = TorchTranslator(checkpoint, threads=1)
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
        "checkpoint": str(checkpoint.relative_to(ROOT) if checkpoint.is_relative_to(ROOT) else checkpoint),
        "data": f"lo-help-en-de {args.split} split" + (f", first {args.sentences}" if args.sentences else ""),
        "settings": {"max_new_tokens": MAX_NEW_TOKENS, "batch_size": BATCH, "threads": 1,
                     "builds": VARIANTS},
        "results": results,
        "provenance": provenance.end(models=[checkpoint, *(info["dir"] for info in models.values())]),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "parity.json").write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n")
    body = [[r["variant"], r["num_beams"], f"{r['n_same_string']}/{r['n']} ({r['string_rate']:.1%})",
             f"{r['n_same_ids']}/{r['n']} ({r['id_rate']:.1%})", r["size_bytes"] / 1e6, r["pytorch_s"], r["onefile_s"]]
            for r in results]
    lines = ["# One-file model parity with PyTorch generate", "",
             f"`{record['command']}` — {record['data']}, max_new_tokens {MAX_NEW_TOKENS}, batch {BATCH}, "
             f"1 thread; checkpoint `{record['checkpoint']}`.", "",
             table(["variant", "beams", "same string", "same token ids", "size MB", "PyTorch s", "one-file s"], body,
                   align="lrrrrrr", formats={5: plain, 6: plain}),
             provenance_footer(record["provenance"])]
    (args.out / "parity.md").write_text("\n".join(lines))
    console.print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
