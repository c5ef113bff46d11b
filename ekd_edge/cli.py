"""The `ekd-edge` command: distill, export, bench, translate, demo, report, compare.

Every sub-command prints problems with the user's input — bad arguments, data, recipes,
checkpoints, bundles, unwritable or full disks — as one line (``error: …``) and exits with status
2, changing none of the user's files. A failure of ekd-edge itself is also one line, exit status
1, with the path of a log file that holds the traceback. Progress goes to stderr, results to stdout.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
import textwrap
import time
import traceback
from pathlib import Path

from ekd_edge import __version__
from ekd_edge.defaults import (DEFAULT_CORPUS, MAX_BLEU_DROP, MAX_NEW_TOKENS, PARITY_SENTENCES, PARITY_THRESHOLD,
                               QUALITY_SENTENCES)
from ekd_edge.errors import EkdError, RankError
from ekd_edge.files import KEPT, user_path

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


class _Parser(argparse.ArgumentParser):
    """argparse with the project's error style: one line, exit status 2 (no usage block)."""

    def error(self, message):
        self.exit(2, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def _bounded(kind, low, high=None, what=""):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {kind.__name__ == 'int' and 'whole number' or 'number'}")
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{text} is outside {what or f'[{low}, {high}]'}")
        return value
    return parse


POSITIVE = _bounded(int, 1, what="1 or more")
COUNT = _bounded(int, 0, what="0 or more")
SHARE = _bounded(float, 0.0, 1.0, what="[0, 1]")
NON_NEGATIVE = _bounded(float, 0.0, what="0 or more")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ekd-edge", description=DESCRIPTION, formatter_class=_formatter)
    parser.add_argument("--version", action="version", version=f"ekd-edge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("distill", formatter_class=_formatter, help="train the teacher ladder and the EKD student stages",
                       description=textwrap.dedent("""\
        Train the teachers of RECIPE that are not given as checkpoints, then the student stage by
        stage: stage k distills from teacher k, warm-started from stage k-1's student.

        RECIPE is a TOML file or the name of a packaged recipe (`demo`). Finished models are kept:
        running the same command again continues with the first unfinished model, from its last
        progress checkpoint ([training] checkpoint_every steps).

        Data-parallel: `torchrun --nproc_per_node N -m ekd_edge distill RECIPE ...` (gloo on CPU,
        NCCL on GPU); the global batch is the same as with one process, rank 0 writes.

        Output (RUN_DIR): recipe.toml, run.json, tokenizer/, teachers/<name>/, students/stage-<k>/,
        each model directory with model.safetensors, tokenizer files and metrics.json."""))
    p.add_argument("recipe", metavar="RECIPE", help="recipe file or packaged recipe name")
    p.add_argument("--run-dir", type=Path, help="where the run lives (default: runs/<recipe name>)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in RUN_DIR (an error if there is none); a run directory that "
                        "already holds progress is resumed even without it")
    p.add_argument("--only", metavar="NAME", action="append",
                   help="train only this teacher or baseline (ce-only, direct-kd) of the recipe (repeatable), "
                        "nothing else; lets the teachers of one run train on several machines")
    p.add_argument("--baselines", action="store_true",
                   help="also train, with the ladder's total student steps, a CE-only student and one distilled "
                        "directly from the strongest teacher (RUN_DIR/baselines/), besides any the recipe's "
                        "[student] baselines names; compare them with `ekd-edge compare`")
    p.add_argument("--jobs", type=POSITIVE, default=1, metavar="N",
                   help="2: train the baselines in a second process at the same time as the ladder (default 1)")
    p.add_argument("--cache-dir", type=Path, metavar="DIR",
                   help="tokenised corpus, teacher caches and seq-KD targets (default RUN_DIR/cache); runs of one "
                        "sweep can share it")

    p = sub.add_parser("compare", formatter_class=_formatter, help="BLEU/chrF of every model of a run, with bootstrap statistics",
                       description=textwrap.dedent("""\
        Translate the SPLIT sentences of the run's corpus with every finished model of RUN (teachers,
        EKD stages, baselines, method variants) and print BLEU, chrF and parameters, each score with
        its sacrebleu paired-bootstrap 95% interval and p-value against the final EKD student.

        Output: RUN/compare/<split>.json and RUN/compare/<split>.md."""))
    p.add_argument("run", metavar="RUN", type=Path, help="a run directory written by `ekd-edge distill`")
    p.add_argument("--split", default="test", choices=["valid", "test"], help="held-out split (default: test)")
    p.add_argument("--sentences", type=COUNT, default=0, help="first N sentences only (default: all)")
    p.add_argument("--bootstrap", type=POSITIVE, default=1000, help="bootstrap resamples (default: 1000)")
    p.add_argument("--against", default="", help="reference system for the p-values (default: the last EKD stage)")

    p = sub.add_parser("export", formatter_class=_formatter, help="export a checkpoint to an ONNX bundle (fp32 or int8)",
                       description=textwrap.dedent("""\
        Export CHECKPOINT (a model directory from `distill`) to an ONNX Runtime bundle: encoder +
        merged decoder in optimum's layout, the tokenizer, and manifest.json (sha256 and size of
        every file, versions, source, gate results).

        Parity gate: the fp32 export's greedy tokens must equal PyTorch's on the parity sentences
        (default: 200 validation sentences of --corpus) for at least --parity-threshold of them,
        else nothing is written. For int8 the agreement is measured and recorded.

        Quality gate: greedy BLEU of the bundle and of the checkpoint on --quality-sentences
        validation sentences; a drop above --max-bleu-drop refuses the bundle (--force writes it,
        recorded in the manifest).

        --profile NAME reads a packaged profile (cpu-x86, arm64, android, android-app, onefile-x86, ct2-int8, web),
        ./export/NAME.toml of your own, or a .toml path:
        format, quantisation, pruning, .ort conversion and gates in one file; options given on
        the command line override it."""))
    p.add_argument("checkpoint", type=Path, metavar="CHECKPOINT")
    p.add_argument("--out", type=Path, required=True, help="bundle directory to write (replaced only if it is a bundle)")
    p.add_argument("--profile", help="export profile: a packaged name, a name in ./export/, or a .toml file")
    p.add_argument("--quantize", choices=["int8"], help="dynamic int8 quantization of the weights")
    p.add_argument("--arch", choices=["avx2", "avx512_vnni", "arm64", "host"],
                   help="int8 target instruction set (default: the profile's, else host: this machine's — "
                        "avx512_vnni where the CPU has AVX-512 VNNI, avx2 on other x86, arm64 on ARM)")
    p.add_argument("--int8-kernel", choices=["dynamic", "blockwise", "weight-only", "host"],
                   help="how a one-file int8 model multiplies: dynamic (int8 activations per tensor), blockwise "
                        "(int8 weights and activations in blocks of up to 128 inputs; the fastest on x86) or weight-only "
                        "(int8 weights, float32 products) or host (the fastest measured for the target instruction set); "
                        "default: the profile's, else dynamic")
    p.add_argument("--per-channel", action=argparse.BooleanOptionalAction, default=None,
                   help="per-channel int8 weight scales (default: on)")
    p.add_argument("--keep-fp32", action="append", metavar="NODE",
                   help="leave ONNX nodes whose name contains NODE in fp32, e.g. lm_head (repeatable)")
    p.add_argument("--portable-numerics", action=argparse.BooleanOptionalAction, default=None,
                   help="rewrite Softmax/LayerNorm so x86 and ARM decode the same tokens (slower; "
                        "default: the profile's, else off)")
    p.add_argument("--prune", action="store_true",
                   help="structured pruning before export (the profile's [prune], else half the FFN channels, "
                        "one decoder layer, 300 KD recovery steps)")
    p.add_argument("--mobile", choices=["arm", "amd64"], help="also write .ort graphs + required_operators.config")
    p.add_argument("--output-vocabulary", choices=["full", "training-targets"],
                   help="one-file models: 'training-targets' lets the decoder produce only the pieces of the "
                        "corpus's training targets (fewer output rows per step; default: the profile's, else full)")
    p.add_argument("--quality-sentences", type=COUNT, help=f"validation sentences of the BLEU gate, 0 skips it (default: {QUALITY_SENTENCES})")
    p.add_argument("--max-bleu-drop", type=NON_NEGATIVE, help=f"largest BLEU drop the gate accepts (default: {MAX_BLEU_DROP})")
    # None = the profile's value (or GateSettings' default): an explicit value always wins.
    p.add_argument("--corpus", help=f"corpus of the gates' sentences (default: the profile's, else {DEFAULT_CORPUS})")
    p.add_argument("--parity-split", choices=["valid", "test"], help="(default: valid)")
    p.add_argument("--parity-sentences", type=COUNT, help=f"0 skips the gate (default: {PARITY_SENTENCES})")
    p.add_argument("--parity-threshold", type=SHARE, help=f"(default: {PARITY_THRESHOLD})")
    p.add_argument("--force", action="store_true", help="write the bundle even if a gate fails (recorded)")
    p.add_argument("--format", choices=["onnx", "ct2", "onefile", "web"],
                   help="onnx: optimum's encoder/decoder layout; onefile: one model.onnx taking and returning "
                        "strings (tokenizer, beam search and detokenizer inside the graph); ct2: CTranslate2; "
                        "web: a static page's bundle for onnxruntime-web (see `ekd-edge web`) (default: onnx)")

    p = sub.add_parser("bench", formatter_class=_formatter, help="BLEU, chrF, latency, memory and size of models",
                       description=textwrap.dedent("""\
        Benchmark each MODEL (an exported bundle or a checkpoint directory) on the same sentences:
        sacrebleu BLEU and chrF with signatures, batch-1 greedy latency p50/p90 after warm-up,
        tokens/s, peak RSS measured in a separate process, and size on disk. Writes report.json,
        report.md and report.png to --out and prints a table."""))
    p.add_argument("models", nargs="+", type=Path, metavar="MODEL")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--corpus", default=DEFAULT_CORPUS, help="bundled corpus or directory; scores its --split")
    src.add_argument("--src", type=Path, help="your own source file (one segment per line); needs --ref")
    p.add_argument("--ref", type=Path, help="reference translations aligned with --src")
    p.add_argument("--split", default="test", choices=["valid", "test"], help="(default: %(default)s)")
    p.add_argument("--max-sentences", type=COUNT, default=0, help="score only the first N sentences (0 = all)")
    p.add_argument("--latency-sentences", type=POSITIVE, default=100, help="(default: %(default)s)")
    p.add_argument("--threads", type=COUNT, default=0, help="inference threads (0 = all cores)")
    p.add_argument("--out", type=Path, default=Path("bench-report"), help="report directory (default: %(default)s)")
    p.add_argument("--no-memory", action="store_true", help="skip the separate-process peak-RSS measurement")

    p = sub.add_parser("translate", formatter_class=_formatter, help="translate text with a bundle or checkpoint",
                       description="Translate TEXT (or, without TEXT, each line of standard input) with MODEL.")
    p.add_argument("model", type=Path, metavar="MODEL")
    p.add_argument("text", nargs="*", metavar="TEXT")
    p.add_argument("--beams", type=POSITIVE, default=1, help="beam size (default: greedy)")
    p.add_argument("--max-new-tokens", type=POSITIVE, default=MAX_NEW_TOKENS, help="(default: %(default)s)")

    p = sub.add_parser("demo", formatter_class=_formatter, help="the whole pipeline on the bundled corpus",
                       description=textwrap.dedent("""\
        Distill the packaged `demo` recipe on LibreOffice Help en→de: a three-stage EKD student
        from the three shipped teachers and, beside it in a second process, the direct-KD
        baseline with the same total steps. Then compare every model on the test split (paired
        bootstrap against the final stage), export the final student as the Android app's
        one-file int8 model, as CTranslate2 int8 and as a web page's bundle (`ekd-edge web`),
        benchmark the top teacher, the final student
        and its exports, and write RUN_DIR/report/{report.json,report.md,report.png}.
        Re-running resumes."""))
    p.add_argument("--run-dir", type=Path, default=Path("runs/demo"))
    p.add_argument("--recipe", default="demo", help="recipe to run instead of the packaged demo")
    p.add_argument("--latency-sentences", type=POSITIVE, default=100, help="(default: %(default)s)")
    p.add_argument("--test-sentences", type=COUNT, default=0, help="score only the first N test sentences (0 = all)")
    p.add_argument("--jobs", type=POSITIVE, default=None, metavar="N",
                   help="processes for the ladder and its baselines (default: 2 where 2 cores are free, else 1)")
    p = sub.add_parser("report", formatter_class=_formatter, help="stage versus deploy cost: table, Pareto plot, HTML",
                       description=textwrap.dedent("""\
        Gather every teacher and every stage's student (all export variants) of RUN from its
        benchmark report (RUN/report/report.json) into one table and a plot of BLEU against p50
        latency (marker area = size on disk), mark the Pareto-optimal models, and state each EKD
        stage's BLEU gain and deploy cost. Writes pareto.json, pareto.md, pareto.png and a
        self-contained pareto.html to --out (default RUN/report). --rebench measures the models
        again first (on the test split) instead of reading the stored numbers."""))
    p.add_argument("run", type=Path, metavar="RUN", help="run directory (or a report.json)")
    p.add_argument("--out", type=Path, help="output directory (default: RUN/report)")
    p.add_argument("--rebench", action="store_true", help="benchmark the report's models again before reporting")
    p.add_argument("--corpus", default=DEFAULT_CORPUS, help="corpus for --rebench (default: %(default)s)")
    p.add_argument("--threads", type=COUNT, default=0, help="threads for --rebench (0 = all cores)")

    p = sub.add_parser("web", formatter_class=_formatter, help="serve the browser demo page with a web bundle",
                       description=textwrap.dedent("""\
        Serve the demo page (web_demo/) and BUNDLE (a web bundle: `ekd-edge export CHECKPOINT
        --profile web --out BUNDLE`) from one local origin, cross-origin isolated so that
        onnxruntime-web can use WebAssembly threads. The page translates in the browser; this
        server only hands out files. Add ?threads=N to the page's address to pick the threads."""))
    p.add_argument("bundle", type=Path, metavar="BUNDLE")
    p.add_argument("--host", default="127.0.0.1", help="(default: %(default)s)")
    p.add_argument("--port", type=COUNT, default=8000, help="(default: %(default)s; 0 picks a free port)")
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # a bad argument: argparse printed its one line; --help/--version exit as usual
        if exc.code:
            return int(exc.code)
        raise
    from ekd_edge.console import console

    try:
        return COMMANDS[args.command](args)
    except EkdError as exc:
        if console.quiet:   # a data-parallel rank other than 0 (cmd_distill): rank 0 says what they all met
            if not isinstance(exc, RankError):
                return 2
            console.quiet = False   # ... except a failure of this rank alone
        _error_line(console, str(exc))
        return 2
    except BrokenPipeError:
        # The reader of stdout has gone (`ekd-edge translate … | head -1`): it has what it wanted.
        _drop_stdout()
        return 0
    except OSError as exc:
        if exc.errno not in ENVIRONMENT_ERRNOS:
            return _internal_error(console, exc, argv)
        # The machine's problem, not ekd-edge's: a full disk, a read-only or forbidden path.
        where = user_path(exc.filename) if exc.filename else "a file"
        _error_line(console, f"{where}: {exc.strerror or exc} {KEPT}")
        return 2
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]: finished models are kept; run the same command again to continue")
        return 130
    except Exception as exc:  # a bug of ekd-edge: one line here, the traceback in a log file
        return _internal_error(console, exc, argv)


# Errors of the environment that a user fixes (space, permissions, paths), reported like bad input.
ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.EFBIG,
                      errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.ENAMETOOLONG}


def _drop_stdout() -> None:
    """Point stdout at /dev/null, so that flushing it at exit does not fail on the closed pipe again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):   # a stdout without a file descriptor has nothing left to flush there
        pass


def _error_line(console, message: str) -> None:
    from rich.markup import escape  # "[distill] alpha ..." is the message, not a style tag

    console.print(f"[bold red]error:[/] {escape(' '.join(message.split()))}", highlight=False, soft_wrap=True)


def crash_log_dir() -> Path:
    return Path(os.environ.get("EKD_EDGE_LOG_DIR") or Path.home() / ".cache" / "ekd-edge" / "logs")


def _internal_error(console, exc: BaseException, argv) -> int:
    """One line for the user, the full traceback in a log file they can attach to a bug report."""
    detail = " ".join(str(exc).split())[:200]
    try:
        folder = crash_log_dir()
        folder.mkdir(parents=True, exist_ok=True)
        log = folder / f"ekd-edge-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
        log.write_text(f"ekd-edge {__version__}\ncommand: {sys.argv[0]} {' '.join(argv or sys.argv[1:])}\n\n"
                       + "".join(traceback.format_exception(exc)))
        where = f"traceback in {log}"
    except OSError:
        where = "no log file could be written"
    _error_line(console, f"ekd-edge failed unexpectedly ({type(exc).__name__}: {detail}); {where}")
    return 1


def cmd_distill(args) -> int:
    from ekd_edge.console import console
    from ekd_edge.distill.ladder import run_recipe
    from ekd_edge.distill.recipe import load_recipe, recipe_text

    from ekd_edge.distill import distributed

    recipe = load_recipe(args.recipe)
    run_dir = args.run_dir or Path("runs") / recipe.name
    distributed.prefer_device(recipe.training.device)   # before torchrun's process group is set up
    if not distributed.context().is_main:
        console.quiet = True  # one rank reports
    try:
        summary = run_recipe(recipe, run_dir, recipe_text(args.recipe), resume=args.resume,
                             baselines=args.baselines, only=args.only, jobs=args.jobs,
                             cache_dir=args.cache_dir)
    finally:
        distributed.shutdown()
    if console.quiet:
        return 0
    console.print(f"run finished: {run_dir}/run.json")
    print(json.dumps({k: v.get("valid", {}).get("bleu") for k, v in {**summary["teachers"], **summary["stages"]}.items()}))
    return 0


def _sentences(corpus: str, split: str, n: int):
    from ekd_edge.data.corpus import load_corpus

    text = load_corpus(corpus).split(split)
    return text.head(n) if n else text


def cmd_export(args) -> int:
    from ekd_edge.console import console
    from ekd_edge.export.profiles import profile_from_args, run_export

    profile = profile_from_args(args)
    with console.status(f"exporting {args.checkpoint}") as status:
        manifest = run_export(args.checkpoint, args.out, profile, force=args.force,
                              progress=lambda text: status.update(f"{args.checkpoint}: {text}"))
    gate = manifest.get("quality_gate")
    gate_text = (f"{gate['status']}{' (forced)' if gate.get('forced') else ''}: BLEU {gate['bundle_bleu']:.2f} vs "
                 f"checkpoint {gate['checkpoint_bleu']:.2f}, drop {gate['bleu_drop']:.2f} (max {gate['max_drop']:.2f})"
                 if gate else "not run")
    console.print(f"wrote {args.out} ({manifest.get('total_size', 0) / 1e6:.1f} MB, profile {profile.name}); "
                  f"parity: {manifest.get('parity')}; quality gate {gate_text}")
    return 0


def cmd_bench(args) -> int:
    from ekd_edge.bench.report import check_report_destination
    from ekd_edge.console import console
    from ekd_edge.data.corpus import load_corpus, load_parallel
    from ekd_edge.runtime.manifest import model_languages
    from ekd_edge.pipeline import benchmark_models

    # Refuse an --out that would overwrite someone else's files before minutes of benchmarking.
    check_report_destination(args.out, [args.out / f"report.{ext}" for ext in ("json", "md", "png")],
                             args.out / "report.json")
    languages = None
    if args.src or args.ref:
        if not (args.src and args.ref):
            raise EkdError("--src and --ref go together: give both files")
        data = load_parallel(args.src, args.ref)
        data_name = f"{args.src.name}"
    else:
        corpus = load_corpus(args.corpus)
        languages = {"src": corpus.src_lang, "tgt": corpus.tgt_lang}
        data = corpus.split(args.split)
        data_name = f"{args.corpus}:{args.split}"
    for path in args.models:
        trained = model_languages(path)
        if languages and trained and (trained.get("src"), trained.get("tgt")) != (languages["src"], languages["tgt"]):
            console.print(f"[yellow]warning:[/] {path}: translates {trained.get('src')}→{trained.get('tgt')}, but "
                          f"{data_name} is {languages['src']}→{languages['tgt']}: its scores will mean little",
                          highlight=False)
    data = data.head(args.max_sentences or None)
    models = [(path.name, "model", None, path) for path in args.models]
    benchmark_models(models, data, data_name, args.out, threads=args.threads or None,
                     latency_sentences=args.latency_sentences, measure_memory=not args.no_memory)
    return 0


def cmd_translate(args) -> int:
    from ekd_edge.console import console
    from ekd_edge.data.corpus import arriving_lines
    from ekd_edge.runtime import load_translator
    from ekd_edge.runtime.base import over_long_inputs

    translator = load_translator(args.model)
    # Standard input is translated as it arrives, so translate works as a filter in a pipeline.
    batches = [(1, list(args.text))] if args.text else arriving_lines(sys.stdin.buffer, "<stdin>")
    for first, texts in batches:
        # The model reads a bounded number of tokens: say which inputs lose their end, never cut silently.
        for index, tokens, limit in over_long_inputs(translator, texts):
            where = f"argument {first + index}" if args.text else f"<stdin>:{first + index}"
            console.print(f"[yellow]warning:[/] {where}: {tokens} tokens, the model reads only the first {limit}; "
                          "the rest is not translated (split the text into sentences)", highlight=False)
        for line in translator.translate(texts, max_new_tokens=args.max_new_tokens, num_beams=args.beams):
            print(line)
        sys.stdout.flush()
    return 0


def cmd_demo(args) -> int:
    from ekd_edge.pipeline import run_demo

    run_demo(args.recipe, args.run_dir, latency_sentences=args.latency_sentences,
             test_sentences=args.test_sentences or None, jobs=args.jobs)
    return 0


def cmd_report(args) -> int:
    from ekd_edge.bench.pareto import load_run_report, write_stage_report
    from ekd_edge.console import console

    if args.rebench:
        from ekd_edge.pipeline import benchmark_models

        payload = load_run_report(args.run)
        models = [(r["name"], r["role"], r.get("stage"), Path(r["path"]), r.get("variant")) for r in payload["rows"]]
        data = _sentences(args.corpus, "test", 0)
        benchmark_models(models, data, f"{args.corpus}:test", args.run / "report", threads=args.threads or None)
    written = write_stage_report(args.run, args.out)
    for line in written["report"]["pareto"]:
        console.print(f"Pareto-optimal: {line}")
    console.print(f"report: {', '.join(str(p) for p in written['paths'].values())}")
    return 0


def cmd_compare(args) -> int:
    from ekd_edge.console import console
    from ekd_edge.distill.compare import compare_run, rich_table

    result = compare_run(args.run, split=args.split, sentences=args.sentences, samples=args.bootstrap,
                         reference=args.against)
    console.print(rich_table(result))
    print(json.dumps({"written": str(Path(args.run) / "compare" / f"{args.split}.json")}))
    return 0


def cmd_web(args) -> int:
    from ekd_edge.runtime.web_server import make_server

    server = make_server(args.bundle, host=args.host, port=args.port)
    host, port = server.server_address[:2]
    print(f"serving {args.bundle} at http://{host}:{port}/ (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


COMMANDS = {"compare": cmd_compare, "distill": cmd_distill, "export": cmd_export, "bench": cmd_bench, "translate": cmd_translate,
            "demo": cmd_demo, "report": cmd_report, "web": cmd_web}

if __name__ == "__main__":
    raise SystemExit(main())
