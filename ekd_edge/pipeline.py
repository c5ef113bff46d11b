"""The end-to-end job: distill → compare → export the final student → benchmark.

This is what `ekd-edge demo` runs; each step is a plain call into its sub-package, and each one
skips work that is already on disk (finished models, verified bundles), so a re-run resumes:

1. distill the recipe: the EKD stages and, beside them in a second process, the recipe's baselines;
2. compare every model on the test split with paired-bootstrap p-values against the final stage,
   so the run itself says whether the ladder beat direct distillation;
3. export the final student as the Android app ships it (one-file int8), as the one-file int8
   model for x86, as CTranslate2 int8 and as a web page's bundle (int8);
4. benchmark the top teacher, the final student and its exports (BLEU, latency, memory, size).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from ekd_edge.console import console
from ekd_edge.errors import RunError
from ekd_edge.files import write_json_atomic
from ekd_edge.markdown import count, table

def benchmark_models(models, data, data_name: str, out_dir: str | Path, *, threads=None, latency_sentences=100,
                     measure_memory=True, extra_signature: dict | None = None, sections=(), extra=None) -> dict:
    """Benchmark (name, role, stage, path[, variant]) models on ``data``; write and print the report."""
    from ekd_edge.bench import benchmark_model
    from ekd_edge.bench.report import rich_table, write_report
    from ekd_edge.bench.signature import environment_signature

    rows = []
    with console.status("benchmarking") as status:
        for entry in models:
            name, role, stage, path = entry[:4]
            variant = entry[4] if len(entry) > 4 else None
            status.update(f"benchmarking {name}")
            rows.append(benchmark_model(path, data.src, data.tgt, name=name, role=role, stage=stage, variant=variant,
                                        threads=threads, latency_sentences=latency_sentences,
                                        measure_memory=measure_memory,
                                        progress=lambda text, n=name: status.update(f"{n}: {text}")))
    signature = environment_signature(threads)
    signature.update({"data": data_name, "data_sha256": data.fingerprint(), "sentences": len(data),
                      "latency_sentences": min(latency_sentences, len(data)), "decoding": "greedy, batch 1 for latency"})
    signature.update(extra_signature or {})
    paths = write_report(rows, out_dir, signature, sections=sections, extra=extra)
    console.print(rich_table(rows))
    console.print(f"report: {', '.join(str(p) for p in paths.values())}")
    return {"rows": rows, "signature": signature, "paths": {k: str(v) for k, v in paths.items()}}


# Every engine is timed on one thread: engines' own defaults differ (CTranslate2's default thread
# count oversubscribes a 2-core machine), and an app translates on one thread.
BENCH_THREADS = 1

# What the demo ships of its final student: the Android app's one-file int8 model (portable
# numerics), the one-file int8 model for x86 (block-wise int8, fast numerics) and, when the
# ctranslate2 package is installed, a CTranslate2 int8 bundle (the fast-CPU reference).
SHIPPED_EXPORTS = (("onefile-int8", "android-app"), ("onefile-int8-x86", "onefile-x86"), ("ct2-int8", "ct2-int8"),
                   ("web-int8", "web"))
# The web bundle runs in a browser: benchmarks/web_latency.py measures it there, not step 4.
BROWSER_EXPORTS = ("web-int8",)


def final_student(run_dir: str | Path) -> Path:
    """The last EKD stage's student of a finished run (from its run.json), as a path under ``run_dir``."""
    run_dir = Path(run_dir)
    try:
        stages = json.loads((run_dir / "run.json").read_text())["stages"]
    except (OSError, ValueError, KeyError):
        raise RunError(f"{run_dir}/run.json: no finished run here (run `make demo` first)") from None
    done = sorted((record.get("stage", 0), name) for name, record in stages.items() if record.get("role") == "student")
    if not done:
        raise RunError(f"{run_dir}/run.json: no student stage has finished")
    return run_dir / "students" / done[-1][1]


def export_final_student(run_dir: Path, student: Path, corpus_name: str) -> list[tuple[str, Path]]:
    """The final student through each of SHIPPED_EXPORTS' profiles, kept if already valid.

    A refused gate is a result, not a reason to stop the demo: it is logged and the bundle left out.
    """
    from ekd_edge.errors import BundleError
    from ekd_edge.export.profiles import load_profile, run_export
    from ekd_edge.runtime.manifest import verify_bundle

    written = []
    for variant, profile_name in SHIPPED_EXPORTS:
        if variant.startswith("ct2") and not _has_module("ctranslate2"):
            console.log(f"{variant}: skipped (the ctranslate2 package is not installed)")
            continue
        out = run_dir / "exports" / f"{student.name}-{variant}"
        try:
            verify_bundle(out)
            console.log(f"{out.relative_to(run_dir)}: already exported and verified")
        except BundleError:
            profile = load_profile(profile_name)
            profile.corpus = corpus_name   # the gates use the run's own validation data
            try:
                with console.status(f"exporting {student.name} ({variant}, profile {profile_name})") as status:
                    manifest = run_export(student, out, profile,
                                          progress=lambda text: status.update(f"{variant}: {text}"))
            except BundleError as err:
                console.log(f"[yellow]{variant} not written:[/] {err}")
                continue
            console.log(f"{out.relative_to(run_dir)}: {manifest['total_size'] / 1e6:.2f} MB, parity "
                        f"{manifest.get('parity', {}).get('rate')}, quality gate "
                        f"{manifest.get('quality_gate', {}).get('status', 'off')}")
        written.append((variant, out))
    return written


def given_teacher_scores(models, run_dir: Path) -> dict:
    """Test scores that teachers given as checkpoints (not trained in this run) carry in metrics.json."""
    import json

    out = {}
    for name, role, _, path in models:
        metrics = path / "metrics.json"
        if role != "teacher" or Path(run_dir) in path.parents or not metrics.is_file():
            continue
        record = json.loads(metrics.read_text())
        if "test" in record:
            out[name] = {"params": record.get("params"), "path": str(path), **{k: record["test"][k] for k in (
                "bleu", "chrf", "bleu_signature", "sentences") if k in record["test"]}}
    return out


def given_teacher_table(given: dict) -> str:
    return table(["teacher", "params", "test BLEU", "test chrF", "sentences"],
                 [[name, r["params"], r["bleu"], r.get("chrf"), r.get("sentences")] for name, r in given.items()],
                 align="lrrrr", formats={1: count})


def _has_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def run_demo(recipe_name: str, run_dir: str | Path, latency_sentences: int = 100,
             test_sentences: int | None = None, jobs: int | None = None) -> dict:
    """distill (ladder and baselines side by side) → paired comparison on test → export → benchmark."""
    import os

    from ekd_edge.data.corpus import load_corpus
    from ekd_edge.distill.compare import compare_run, markdown_table, rich_table
    from ekd_edge.distill.ladder import model_dirs, run_recipe
    from ekd_edge.distill.recipe import load_recipe, recipe_text

    started = time.perf_counter()
    run_dir = Path(run_dir)
    recipe = load_recipe(recipe_name)
    jobs = jobs or min(2, len(os.sched_getaffinity(0)))
    console.rule(f"[bold]1/4 distill[/] · recipe {recipe.name} → {run_dir}"
                 + (" · baselines in a second process" if jobs > 1 and recipe.student.baselines else ""))
    run_recipe(recipe, run_dir, recipe_text(recipe_name), jobs=jobs)
    phases = {"distill_s": round(time.perf_counter() - started, 1)}

    corpus = load_corpus(recipe.data.corpus, recipe.data.src_lang or None, recipe.data.tgt_lang or None)
    test = corpus.split("test").head(test_sentences)
    models = model_dirs(run_dir)
    final_name, _, _, final = [entry for entry in models if entry[1] == "student"][-1]
    console.rule(f"[bold]2/4 compare[/] · every model on {len(test)} test sentences, paired bootstrap "
                 f"against {final_name}")
    mark = time.perf_counter()
    comparison = compare_run(run_dir, "test", sentences=len(test), reference=f"ekd-{final_name}",
                             max_new_tokens=recipe.training.eval_max_new_tokens)
    console.print(rich_table(comparison))
    phases["compare_s"] = round(time.perf_counter() - mark, 1)

    console.rule(f"[bold]3/4 export[/] · {final_name}: " + ", ".join(v for v, _ in SHIPPED_EXPORTS))
    mark = time.perf_counter()
    bundles = export_final_student(run_dir, final, recipe.data.corpus)
    phases["export_s"] = round(time.perf_counter() - mark, 1)

    console.rule("[bold]4/4 benchmark[/] · the final student and its exports")
    mark = time.perf_counter()
    stage = int(final_name.split("-")[1])
    entries = [(final_name, "student", stage, final, "pytorch")]
    entries += [(final_name, "student", stage, path, variant) for variant, path in bundles
                if variant not in BROWSER_EXPORTS]
    sections = [("Every model of the run on the test split, paired bootstrap", markdown_table(comparison))]
    given = given_teacher_scores(models, run_dir)
    if given:
        sections.append(("Teachers given as checkpoints (test scores from their own metrics.json)",
                         given_teacher_table(given)))
    result = benchmark_models(entries, test, f"{corpus.name}:test", run_dir / "report", threads=BENCH_THREADS,
                              latency_sentences=latency_sentences,
                              extra_signature={"recipe": recipe.name, "run_dir": str(run_dir)},
                              sections=sections, extra={"comparison": comparison, "given_teachers": given})
    phases["benchmark_s"] = round(time.perf_counter() - mark, 1)
    result["wall_s"] = round(time.perf_counter() - started, 1)
    result["phases"] = phases
    result["comparison"] = comparison
    write_json_atomic(run_dir / "demo.json", {"wall_s": result["wall_s"], "phases": phases, "jobs": jobs,
                                              "paths": result["paths"]})
    for variant, path in bundles:
        if variant in BROWSER_EXPORTS:
            console.print(f"in the browser: `ekd-edge web {path}`, then open http://127.0.0.1:8000/")
    console.print(f"[bold green]demo finished[/] in {result['wall_s'] / 60:.1f} min "
                  f"({', '.join(f'{k[:-2]} {v / 60:.1f}' for k, v in phases.items())} min)")
    return result
