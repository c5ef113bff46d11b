"""Benchmarking teachers, students and their exported bundles: quality, latency, memory, size.

``benchmark_model`` measures one model and returns one report row; ``write_report`` turns rows
plus an environment signature into report.json, report.md and report.png.
"""

from __future__ import annotations

import gc
import json
from pathlib import Path

from ekd_edge.metrics import score
from ekd_edge.bench.report import rich_table, write_report
from ekd_edge.bench.signature import data_signature, environment_signature, with_run_context
from ekd_edge.bench.speed import latency_summary, measure_latency, percentile
from ekd_edge.errors import BundleError, CheckpointError

__all__ = [
    "ROW_KEYS", "ProbeError", "benchmark_model", "data_signature", "environment_signature", "latency_summary",
    "measure_latency", "measure_peak_rss", "model_params", "model_size_mb", "percentile", "rich_table", "score",
    "with_run_context", "write_report",
]


def __getattr__(name: str):
    # the probe module is imported on first use only: `python -m ekd_edge.bench.probe` runs it as
    # __main__, and a copy already imported by this package would make runpy warn
    if name in ("ProbeError", "measure_peak_rss"):
        from ekd_edge.bench import probe

        return getattr(probe, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


ROW_KEYS = (
    "name", "role", "stage", "variant", "engine", "path", "params", "size_mb", "bleu", "chrf", "bleu_signature",
    "chrf_signature", "latency_p50_ms", "latency_p90_ms", "latency_p99_ms", "tokens_per_s", "peak_rss_mb", "load_s",
    "app_peak_rss_mb", "app_model_mb", "app_load_s", "n_sentences",
)
ROLES = ("teacher", "student", "model")  # "model": a user-given model of unknown role
_MIB = 1024 * 1024


def _is_bundle(path: Path) -> bool:
    return (path / "manifest.json").is_file()


def _is_onnx_file(path: Path) -> bool:
    # external-data files hold the weights of large graphs and count towards the size too
    return path.is_file() and (path.suffix == ".onnx" or path.name.endswith((".onnx_data", ".onnx.data")))


def model_size_mb(path: str | Path) -> float:
    """Size on disk in MiB of what inference loads — the one size rule of every report.

    A bundle: its ONNX graphs (with external data) or CTranslate2's model.bin; a checkpoint: its
    model.safetensors; a single model file: that file. Tokenizer and metadata files never count.
    """
    path = Path(path)
    if path.is_file():
        return path.stat().st_size / _MIB
    if _is_bundle(path):
        files = [p for p in path.rglob("*") if _is_onnx_file(p)]
        if not files and (path / "ct2" / "model.bin").is_file():  # a CTranslate2 bundle
            files = [path / "ct2" / "model.bin"]
        if not files:
            raise BundleError(f"{path}: bundle holds no .onnx file")
        return sum(p.stat().st_size for p in files) / _MIB
    weights = path / "model.safetensors"
    if not weights.is_file():
        raise CheckpointError(f"{path}: no model.safetensors to measure")
    return weights.stat().st_size / _MIB


def _params_from_manifest(manifest: dict) -> int | None:
    for holder in (manifest, manifest.get("model"), manifest.get("source")):
        if isinstance(holder, dict):
            for key in ("params", "parameters", "num_parameters", "n_params"):
                value = holder.get(key)
                if isinstance(value, int) and not isinstance(value, bool):
                    return value
    return None


def model_params(path: str | Path, translator=None) -> int | None:
    """Parameter count, as ``count_parameters`` gives it for the PyTorch model.

    A checkpoint: counted on the loaded model. A bundle: the manifest's count if it has one,
    else counted from the bundle's ``config.json``; None if neither is usable.
    """
    path = Path(path)
    if _is_bundle(path):
        try:
            manifest = json.loads((path / "manifest.json").read_text())
        except (OSError, ValueError):
            manifest = None
        found = _params_from_manifest(manifest) if isinstance(manifest, dict) else None
        if found is not None:
            return found
        from ekd_edge.models import config_parameters

        return config_parameters(path)
    from ekd_edge.models import count_parameters

    model = getattr(translator, "model", None)
    if model is None:
        from ekd_edge.models import load_model

        model = load_model(path)
    return count_parameters(model)


def _torch_threads() -> int | None:
    try:
        import torch
    except ImportError:
        return None
    return torch.get_num_threads()


def _generation_limit(path: Path, requested: int) -> int:
    """``requested`` capped by the model's position table: Marian cannot decode past it (index error)."""
    try:
        limit = json.loads((path / "config.json").read_text()).get("max_position_embeddings")
    except (OSError, ValueError):
        return requested
    return min(requested, limit) if isinstance(limit, int) and limit > 0 else requested


def benchmark_model(path, src: list[str], refs: list[str], *, name: str, role: str, stage: str | None = None,
                    variant: str | None = None, threads: int | None = None, latency_sentences: int = 100,
                    warmup: int = 5, max_new_tokens: int = 128, batch_size: int = 32, measure_memory: bool = True,
                    progress=None) -> dict:
    """Measure one model (checkpoint or bundle) and return one report row (keys: ``ROW_KEYS``).

    Quality: all of ``src`` translated in batches of ``batch_size`` (greedy), scored against ``refs``.
    Speed: batch-1 greedy latency on the first ``latency_sentences`` of ``src`` after ``warmup``
    untimed ones. Memory and load time: a fresh process (``measure_peak_rss``) loading the model
    and translating the same latency sentences; with ``measure_memory=False`` both are None.
    ``variant`` defaults to the bundle's variant, or "pytorch" for a checkpoint. ``max_new_tokens``
    is capped by the model's ``max_position_embeddings``. ``progress`` receives short status texts.
    """
    from ekd_edge.bench.probe import measure_app_footprint, measure_peak_rss
    from ekd_edge.runtime import load_translator

    say = progress or (lambda message: None)
    path = Path(path)
    src, refs = list(src), list(refs)
    if len(src) != len(refs):
        raise ValueError(f"{len(src)} source sentences but {len(refs)} references")
    if not src:
        raise ValueError("no sentences to benchmark")
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, not {role!r}")
    if latency_sentences < 1:
        raise ValueError(f"latency_sentences must be at least 1, not {latency_sentences}")

    say(f"loading {path}")
    # TorchTranslator sets torch's thread count for the whole process: put it back afterwards
    threads_before = _torch_threads()
    translator = load_translator(path, threads=threads)
    max_new_tokens = _generation_limit(path, max_new_tokens)
    try:
        engine = translator.engine
        variant = variant or getattr(translator, "variant", None) or ("pytorch" if engine == "pytorch" else engine)
        params = model_params(path, translator)
        size_mb = model_size_mb(path)

        say(f"translating {len(src)} sentences (batch {batch_size})")
        hyps = translator.translate(src, batch_size=batch_size, max_new_tokens=max_new_tokens)
        quality = score(hyps, refs)

        timed = src[:latency_sentences]
        say(f"batch-1 latency on {len(timed)} sentences ({warmup} warm-up)")
        speed = measure_latency(translator, timed, warmup=warmup, max_new_tokens=max_new_tokens)
    finally:
        # the next model of a benchmark run should not share the process with this one
        del translator
        gc.collect()
        if threads_before is not None:
            import torch

            torch.set_num_threads(threads_before)

    peak_rss_mb = load_s = app = None
    if measure_memory:
        say("peak memory in a fresh process")
        probe = measure_peak_rss(path, timed, threads, max_new_tokens=max_new_tokens)
        peak_rss_mb, load_s = probe["peak_rss_mb"], probe["load_s"]
        say("memory with the app's runtime only")
        app = measure_app_footprint(path, engine, timed, threads, max_new_tokens=max_new_tokens)

    return {
        "name": name,
        "role": role,
        "stage": stage,
        "variant": variant,
        "engine": engine,
        "path": str(path),
        "params": params,
        "size_mb": size_mb,
        "bleu": quality["bleu"],
        "chrf": quality["chrf"],
        "bleu_signature": quality["bleu_signature"],
        "chrf_signature": quality["chrf_signature"],
        "latency_p50_ms": speed["p50_ms"],
        "latency_p90_ms": speed["p90_ms"],
        "latency_p99_ms": speed["p99_ms"],
        "tokens_per_s": speed["tokens_per_s"],
        "peak_rss_mb": peak_rss_mb,
        "load_s": load_s,
        "app_peak_rss_mb": app["peak_rss_mb"] if app else None,
        "app_model_mb": app["model_mb"] if app else None,
        "app_load_s": app["load_s"] if app else None,
        "n_sentences": quality["n"],
        "latency_sentences": speed["n_sentences"],
    }
