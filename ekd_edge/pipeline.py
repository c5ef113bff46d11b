"""The end-to-end job: distill → export every student stage (fp32, int8; the last also for arm64) → benchmark.

This is what `ekd-edge demo` runs; each step is a plain call into its sub-package, and each one
skips work that is already on disk (finished models, verified bundles), so a re-run resumes.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from ekd_edge.console import console

DEMO_PARITY_SENTENCES = 200
VARIANTS = (("fp32", None), ("int8", "int8"))


def benchmark_models(models, data, data_name: str, out_dir: str | Path, *, threads=None, latency_sentences=100,
                     measure_memory=True, extra_signature: dict | None = None) -> dict:
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
    paths = write_report(rows, out_dir, signature)
    console.print(rich_table(rows))
    console.print(f"report: {', '.join(str(p) for p in paths.values())}")
    return {"rows": rows, "signature": signature, "paths": {k: str(v) for k, v in paths.items()}}


def export_students(run_dir: Path, parity_texts: list[str]) -> list[tuple[str, str, int, Path, str]]:
    """Export every student stage of a finished run as fp32 and int8 bundles (kept if already valid)."""
    from ekd_edge.distill.ladder import model_dirs
    from ekd_edge.errors import BundleError
    from ekd_edge.export import export_bundle
    from ekd_edge.runtime.manifest import verify_bundle

    exported = []
    for name, role, stage, path in model_dirs(run_dir):
        if role != "student":
            continue
        for variant, quantize in VARIANTS:
            out = run_dir / "exports" / f"{name}-{variant}"
            try:
                verify_bundle(out)
                console.log(f"{out.relative_to(run_dir)}: already exported and verified")
            except BundleError:
                with console.status(f"exporting {name} ({variant})") as status:
                    manifest = export_bundle(path, out, quantize=quantize, parity_texts=parity_texts,
                                             progress=lambda text: status.update(f"{name} {variant}: {text}"))
                console.log(f"{out.relative_to(run_dir)}: {manifest['total_size'] / 1e6:.2f} MB, "
                            f"parity {manifest['parity'].get('rate')}")
            exported.append((f"{name}", role, stage, out, variant))
    return exported


def export_for_arm(run_dir: Path, corpus_name: str) -> Path | None:
    """The final student through the arm64 profile (int8, portable numerics): the bundle to ship to
    ARM, whose tokens match x86's (benchmarks/arm_agreement.py). Kept if already valid; None when
    the profile's quality gate refuses it (logged)."""
    from ekd_edge.distill.ladder import model_dirs
    from ekd_edge.errors import BundleError
    from ekd_edge.runtime.manifest import verify_bundle
    from ekd_edge.export.profiles import load_profile, run_export

    name, _, _, path = [entry for entry in model_dirs(run_dir) if entry[1] == "student"][-1]
    out = run_dir / "exports" / f"{name}-int8-arm64"
    try:
        verify_bundle(out)
        console.log(f"{out.relative_to(run_dir)}: already exported and verified")
    except BundleError:
        profile = load_profile("arm64")
        profile.corpus = corpus_name   # the gates use the run's own validation data
        try:
            with console.status(f"exporting {name} for arm64 (portable int8)") as status:
                manifest = run_export(path, out, profile, progress=lambda text: status.update(f"{name} arm64: {text}"))
        except BundleError as err:  # a refused gate is a result, not a reason to stop the demo
            console.log(f"[yellow]arm64 bundle not written:[/] {err}")
            return None
        console.log(f"{out.relative_to(run_dir)}: {manifest['total_size'] / 1e6:.2f} MB, "
                    f"quality gate {manifest.get('quality_gate', {}).get('status')}")
    return out


def run_demo(recipe_name: str, run_dir: str | Path, latency_sentences: int = 100,
             test_sentences: int | None = None) -> dict:
    from ekd_edge.data.corpus import load_corpus
    from ekd_edge.distill.ladder import model_dirs, run_recipe
    from ekd_edge.distill.recipe import load_recipe, recipe_text

    started = time.perf_counter()
    run_dir = Path(run_dir)
    recipe = load_recipe(recipe_name)
    console.rule(f"[bold]1/3 distill[/] · recipe {recipe.name} → {run_dir}")
    run_recipe(recipe, run_dir, recipe_text(recipe_name))

    corpus = load_corpus(recipe.data.corpus, recipe.data.src_lang or None, recipe.data.tgt_lang or None)
    test = corpus.split("test").head(test_sentences)
    console.rule("[bold]2/3 export[/] · every student stage, fp32 and int8; the final one for arm64")
    bundles = export_students(run_dir, test.src[:DEMO_PARITY_SENTENCES])
    export_for_arm(run_dir, recipe.data.corpus)

    console.rule("[bold]3/3 benchmark[/] · test split")
    models = [(name, role, stage, path, "pytorch") for name, role, stage, path in model_dirs(run_dir)]
    models += bundles
    result = benchmark_models(models, test, f"{corpus.name}:test", run_dir / "report",
                              latency_sentences=latency_sentences,
                              extra_signature={"recipe": recipe.name, "run_dir": str(run_dir)})
    result["wall_s"] = round(time.perf_counter() - started, 1)
    (run_dir / "demo.json").write_text(json.dumps({"wall_s": result["wall_s"], "paths": result["paths"]}, indent=2))
    console.print(f"[bold green]demo finished[/] in {result['wall_s'] / 60:.1f} min")
    return result
