"""The `ekd-edge` command: distill, export, bench, translate, demo.

Every sub-command prints problems with the user's input as one line (``error: …``) and exits
with status 2; progress goes to stderr, results to stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from pathlib import Path

from ekd_edge import __version__
from ekd_edge.errors import EkdError

DESCRIPTION = """\
Evolving knowledge distillation of small translation students, exported to ONNX and benchmarked
for on-device use. A typical session:

  ekd-edge distill demo --run-dir runs/demo         # teachers, then the EKD student stages
  ekd-edge export runs/demo/students/stage-2 --out bundles/s2-int8 --quantize int8
  ekd-edge bench bundles/s2-int8 --corpus lo-help-en-de
  ekd-edge translate bundles/s2-int8 "Select the cell range."

`ekd-edge demo` does all of it on the bundled LibreOffice Help corpus.
"""


def _formatter(prog):
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ekd-edge", description=DESCRIPTION, formatter_class=_formatter)
    parser.add_argument("--version", action="version", version=f"ekd-edge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("distill", formatter_class=_formatter, help="train the teacher ladder and the EKD student stages",
                       description=textwrap.dedent("""\
        Train the teachers of RECIPE that are not given as checkpoints, then the student stage by
        stage: stage k distills from teacher k, warm-started from stage k-1's student.

        RECIPE is a TOML file or the name of a packaged recipe (`demo`). Finished models are kept:
        running the same command again continues with the first unfinished model.

        Output (RUN_DIR): recipe.toml, run.json, tokenizer/, teachers/<name>/, students/stage-<k>/,
        each model directory with model.safetensors, tokenizer files and metrics.json."""))
    p.add_argument("recipe", metavar="RECIPE", help="recipe file or packaged recipe name")
    p.add_argument("--run-dir", type=Path, help="where the run lives (default: runs/<recipe name>)")

    p = sub.add_parser("export", formatter_class=_formatter, help="export a checkpoint to an ONNX bundle (fp32 or int8)",
                       description=textwrap.dedent("""\
        Export CHECKPOINT (a model directory from `distill`) to an ONNX Runtime bundle: encoder +
        merged decoder in optimum's layout, the tokenizer, and manifest.json (sha256 and size of
        every file, versions, source, gate results).

        Parity gate: the fp32 export's greedy tokens must equal PyTorch's on the parity sentences
        (default: 200 validation sentences of --corpus) for at least --parity-threshold of them,
        else nothing is written. For int8 the agreement is measured and recorded."""))
    p.add_argument("checkpoint", type=Path, metavar="CHECKPOINT")
    p.add_argument("--out", type=Path, required=True, help="bundle directory to write (replaced only if it is a bundle)")
    p.add_argument("--quantize", choices=["int8"], help="dynamic int8 quantization of the weights")
    p.add_argument("--arch", default="avx512_vnni", choices=["avx2", "avx512_vnni", "arm64"],
                   help="int8 target instruction set (default: %(default)s)")
    p.add_argument("--corpus", default="lo-help-en-de", help="corpus for the parity sentences (default: %(default)s)")
    p.add_argument("--parity-split", default="valid", choices=["valid", "test"], help="(default: %(default)s)")
    p.add_argument("--parity-sentences", type=int, default=200, help="0 skips the gate (default: %(default)s)")
    p.add_argument("--parity-threshold", type=float, default=0.99, help="(default: %(default)s)")
    p.add_argument("--force", action="store_true", help="write the bundle even if the parity gate fails (recorded)")

    p = sub.add_parser("bench", formatter_class=_formatter, help="BLEU, chrF, latency, memory and size of models",
                       description=textwrap.dedent("""\
        Benchmark each MODEL (an exported bundle or a checkpoint directory) on the same sentences:
        sacrebleu BLEU and chrF with signatures, batch-1 greedy latency p50/p90 after warm-up,
        tokens/s, peak RSS measured in a separate process, and size on disk. Writes report.json,
        report.md and report.png to --out and prints a table."""))
    p.add_argument("models", nargs="+", type=Path, metavar="MODEL")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--corpus", default="lo-help-en-de", help="bundled corpus or directory; scores its --split")
    src.add_argument("--src", type=Path, help="your own source file (one segment per line); needs --ref")
    p.add_argument("--ref", type=Path, help="reference translations aligned with --src")
    p.add_argument("--split", default="test", choices=["valid", "test"], help="(default: %(default)s)")
    p.add_argument("--max-sentences", type=int, default=0, help="score only the first N sentences (0 = all)")
    p.add_argument("--latency-sentences", type=int, default=100, help="(default: %(default)s)")
    p.add_argument("--threads", type=int, default=0, help="inference threads (0 = all cores)")
    p.add_argument("--out", type=Path, default=Path("bench-report"), help="report directory (default: %(default)s)")
    p.add_argument("--no-memory", action="store_true", help="skip the separate-process peak-RSS measurement")

    p = sub.add_parser("translate", formatter_class=_formatter, help="translate text with a bundle or checkpoint",
                       description="Translate TEXT (or, without TEXT, each line of standard input) with MODEL.")
    p.add_argument("model", type=Path, metavar="MODEL")
    p.add_argument("text", nargs="*", metavar="TEXT")
    p.add_argument("--beams", type=int, default=1, help="beam size (default: greedy)")
    p.add_argument("--max-new-tokens", type=int, default=128)

    p = sub.add_parser("demo", formatter_class=_formatter, help="the whole pipeline on the bundled corpus",
                       description=textwrap.dedent("""\
        Distill the packaged `demo` recipe (two teachers, a two-stage student) on LibreOffice Help
        en→de, export every student stage to ONNX fp32 and int8 (parity-gated on 200 test
        sentences), benchmark every teacher, student and export on the test split, and write
        RUN_DIR/report/{report.json,report.md,report.png}. Re-running resumes."""))
    p.add_argument("--run-dir", type=Path, default=Path("runs/demo"))
    p.add_argument("--recipe", default="demo", help="recipe to run instead of the packaged demo")
    p.add_argument("--latency-sentences", type=int, default=100, help="(default: %(default)s)")
    p.add_argument("--test-sentences", type=int, default=0, help="score only the first N test sentences (0 = all)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from ekd_edge.console import console

    try:
        return COMMANDS[args.command](args)
    except EkdError as exc:
        console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]: finished models are kept; run the same command again to continue")
        return 130


def cmd_distill(args) -> int:
    from ekd_edge.console import console
    from ekd_edge.distill.ladder import run_recipe
    from ekd_edge.distill.recipe import load_recipe, recipe_text

    recipe = load_recipe(args.recipe)
    run_dir = args.run_dir or Path("runs") / recipe.name
    summary = run_recipe(recipe, run_dir, recipe_text(args.recipe))
    console.print(f"run finished: {run_dir}/run.json")
    print(json.dumps({k: v.get("valid", {}).get("bleu") for k, v in {**summary["teachers"], **summary["stages"]}.items()}))
    return 0


def _sentences(corpus: str, split: str, n: int):
    from ekd_edge.data.corpus import load_corpus

    text = load_corpus(corpus).split(split)
    return text.head(n) if n else text


def cmd_export(args) -> int:
    from ekd_edge.console import console
    from ekd_edge.export import export_bundle

    texts = _sentences(args.corpus, args.parity_split, args.parity_sentences).src if args.parity_sentences else None
    with console.status(f"exporting {args.checkpoint}") as status:
        manifest = export_bundle(args.checkpoint, args.out, quantize=args.quantize, quant_arch=args.arch,
                                 parity_texts=texts, parity_threshold=args.parity_threshold, force=args.force,
                                 progress=lambda text: status.update(f"{args.checkpoint}: {text}"))
    console.print(f"wrote {args.out} ({manifest.get('total_size', 0) / 1e6:.1f} MB); parity: {manifest.get('parity')}")
    return 0


def cmd_bench(args) -> int:
    from ekd_edge.pipeline import benchmark_models
    from ekd_edge.data.corpus import load_parallel

    if args.src or args.ref:
        if not (args.src and args.ref):
            raise EkdError("--src and --ref go together: give both files")
        data = load_parallel(args.src, args.ref)
        data_name = f"{args.src.name}"
    else:
        data = _sentences(args.corpus, args.split, 0)
        data_name = f"{args.corpus}:{args.split}"
    data = data.head(args.max_sentences or None)
    models = [(path.name, "model", None, path) for path in args.models]
    benchmark_models(models, data, data_name, args.out, threads=args.threads or None,
                     latency_sentences=args.latency_sentences, measure_memory=not args.no_memory)
    return 0


def cmd_translate(args) -> int:
    from ekd_edge.translate import load_translator

    translator = load_translator(args.model)
    texts = args.text or [line.rstrip("\n") for line in sys.stdin]
    for line in translator.translate(texts, max_new_tokens=args.max_new_tokens, num_beams=args.beams):
        print(line)
    return 0


def cmd_demo(args) -> int:
    from ekd_edge.pipeline import run_demo

    run_demo(args.recipe, args.run_dir, latency_sentences=args.latency_sentences,
             test_sentences=args.test_sentences or None)
    return 0


COMMANDS = {"distill": cmd_distill, "export": cmd_export, "bench": cmd_bench, "translate": cmd_translate,
            "demo": cmd_demo}

if __name__ == "__main__":
    raise SystemExit(main())
