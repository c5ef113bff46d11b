"""Engines side by side: one student, the same sentences, one run, interleaved.

Each engine is a translator with ``generate_ids(texts, max_new_tokens, num_beams)`` and a
``tokenizer``. ``compare_engines`` loads them all into one process and times them round-robin:
sentence 1 on A, B, C…, then sentence 2 on B, C…, A (the start rotates), so that drift of a
shared machine (other load, frequency changes) lands on every engine alike. Ratios are computed
pair by pair: for each sentence, engine A's time over engine B's on that same sentence, and the
median of those ratios is reported next to the ratio of the p50s.

Load time and peak RSS come from a fresh process per engine (``python -m ekd_edge.bench.engines
probe …``), as ``ekd_edge.bench.probe`` does for the main report.
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ekd_edge.bench import model_size_mb
from ekd_edge.bench.speed import latency_summary, percentile

_MIB = 1024 * 1024


@dataclass(frozen=True)
class EngineSpec:
    """One engine to compare: ``kind`` picks the loader, ``path`` is what it loads."""

    name: str      # "onefile-int8"
    kind: str      # an engine of ekd_edge.runtime.ENGINES
    path: Path
    precision: str  # fp32 | int8


def load_engine(spec: EngineSpec, threads: int | None):
    """A translator for ``spec`` with ``threads`` intra-op threads (None: the engine's default)."""
    from ekd_edge.runtime import load_translator

    return load_translator(spec.path, threads=threads, engine=spec.kind)


def pair_ratios(numerator_s: list[float], denominator_s: list[float]) -> dict:
    """Per-sentence ratios numerator/denominator of two engines timed on the same sentences.

    ``median`` < 1 means the numerator engine is faster. ``p50_ratio`` is the ratio of the two
    p50 latencies, for comparison; the per-sentence median is the robust figure because each
    pair was measured moments apart on the same input.
    """
    if len(numerator_s) != len(denominator_s):
        raise ValueError(f"{len(numerator_s)} timings against {len(denominator_s)}: not the same sentences")
    if not numerator_s:
        raise ValueError("no timings to compare")
    if any(t <= 0 for t in denominator_s):
        raise ValueError("a timing of zero or less cannot divide")
    ratios = [a / b for a, b in zip(numerator_s, denominator_s)]
    return {
        "median": percentile(ratios, 50),
        "p10": percentile(ratios, 10),
        "p90": percentile(ratios, 90),
        "p50_ratio": percentile(numerator_s, 50) / percentile(denominator_s, 50),
        "wins": sum(r < 1 for r in ratios),
        "n": len(ratios),
    }


def timed_translate(translator, text: str, max_new_tokens: int) -> tuple[str, int]:
    """One sentence text-to-text, as an app calls it: (translation, number of generated tokens).

    A one-file model tokenises and detokenises inside its graph; the other engines do it around
    ``generate_ids`` with their tokenizer. Both are timed whole.
    """
    texts, ids = translator.translate_with_ids([text], max_new_tokens, 1)
    return texts[0], len(ids[0])


def interleaved_latency(translators: dict, texts: list[str], warmup: int = 5, max_new_tokens: int = 128,
                        progress=None) -> dict:
    """Batch-1 greedy seconds per sentence for each translator, measured round-robin.

    Returns {name: {"seconds": [...], "tokens": [...]}} with one entry per text, in text order.
    """
    names = list(translators)
    for name in names:
        for i in range(max(0, warmup)):
            timed_translate(translators[name], texts[i % len(texts)], max_new_tokens)
    timings = {name: {"seconds": [], "tokens": []} for name in names}
    gc.collect()
    for i, text in enumerate(texts):
        # rotate who goes first: none always runs right after a particular other engine
        for name in names[i % len(names):] + names[: i % len(names)]:
            translator = translators[name]
            start = time.perf_counter()
            _, n_tokens = timed_translate(translator, text, max_new_tokens)
            timings[name]["seconds"].append(time.perf_counter() - start)
            timings[name]["tokens"].append(n_tokens)
        if progress and (i + 1) % 10 == 0:
            progress(i + 1)
    return timings


def warm_block_latency(translators: dict, texts: list[str], rounds: int = 4, warmup: int = 5,
                       max_new_tokens: int = 128, progress=None) -> dict:
    """Batch-1 greedy seconds per sentence for each translator, each timed warm: a translator
    runs the whole block of ``texts`` in a row, as an app translates with one engine, and the
    engines alternate block by block for ``rounds`` rounds (the first engine rotates each round).

    Round-robin per sentence (``interleaved_latency``) spreads machine drift evenly but evicts
    each engine's caches between its sentences; blocks keep them warm. Returns {name: {"seconds":
    per-sentence median over the rounds, "tokens": [...], "rounds": [[seconds] per round]}}.
    """
    if rounds < 1:
        raise ValueError("rounds must be at least 1")
    names = list(translators)
    for name in names:
        for i in range(max(0, warmup)):
            timed_translate(translators[name], texts[i % len(texts)], max_new_tokens)
    per_round = {name: [] for name in names}
    tokens: dict[str, list[int]] = {}
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            gc.collect()
            seconds, counts = [], []
            for text in texts:
                start = time.perf_counter()
                _, n_tokens = timed_translate(translators[name], text, max_new_tokens)
                seconds.append(time.perf_counter() - start)
                counts.append(n_tokens)
            per_round[name].append(seconds)
            tokens.setdefault(name, counts)
            if progress:
                progress(r + 1, name)
    return {name: {"seconds": [percentile(list(column), 50) for column in zip(*per_round[name])],
                   "tokens": tokens[name], "rounds": per_round[name]} for name in names}


def summarise(timing: dict) -> dict:
    summary = latency_summary(timing["seconds"])
    total = sum(timing["seconds"])
    summary["tokens_per_s"] = sum(timing["tokens"]) / total if total > 0 else 0.0
    summary["n_sentences"] = len(timing["seconds"])
    return summary


def probe_engine(spec: EngineSpec, src_file: Path, n: int, threads: int | None, max_new_tokens: int = 128) -> dict:
    """Load time and peak RSS of ``spec`` in a fresh process translating ``n`` lines of ``src_file``."""
    command = probe_command(spec, src_file, n, threads, max_new_tokens)
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        from ekd_edge.errors import ProbeError

        raise ProbeError(f"{spec.path}: engine probe failed (exit {done.returncode}): {done.stderr.strip()[-300:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def probe_command(spec: EngineSpec, src_file: Path, n: int, threads: int | None, max_new_tokens: int) -> list[str]:
    return [sys.executable, "-m", "ekd_edge.bench.engines", "probe", spec.name, spec.kind, str(spec.path),
            spec.precision, str(src_file), str(n), str(threads or 0), str(max_new_tokens)]


def _probe_main(args: list[str]) -> int:
    from ekd_edge.bench.probe import peak_rss_mib
    from ekd_edge.data.corpus import read_lines

    name, kind, path, precision, src, n, threads, max_new_tokens = args
    lines = read_lines(src)[: int(n)]
    start = time.perf_counter()
    translator = load_engine(EngineSpec(name, kind, Path(path), precision), int(threads) or None)
    load_s = time.perf_counter() - start
    for line in lines:
        timed_translate(translator, line, int(max_new_tokens))
    peak, source = peak_rss_mib()
    print(json.dumps({"load_s": load_s, "peak_rss_mb": peak, "rss_source": source, "n_sentences": len(lines)}))
    return 0


def compare_engines(specs: list[EngineSpec], texts: list[str], threads: int | None, *, warmup: int = 5,
                    max_new_tokens: int = 128, src_file: Path | None = None, probe_sentences: int = 20,
                    progress=None) -> dict:
    """Interleaved latency of every engine, their pair-by-pair ratios, size, load time and peak RSS."""
    translators = {}
    for spec in specs:
        translators[spec.name] = load_engine(spec, threads)
    timings = interleaved_latency(translators, texts, warmup=warmup, max_new_tokens=max_new_tokens,
                                  progress=progress)
    # the first translations of each engine, kept so that a reader can see they do the same work
    outputs = {name: [timed_translate(t, text, max_new_tokens)[0] for text in texts[:20]]
               for name, t in translators.items()}
    del translators
    gc.collect()
    engines = {}
    for spec in specs:
        row = {"kind": spec.kind, "precision": spec.precision, "path": str(spec.path),
               "size_mb": model_size_mb(spec.path), **summarise(timings[spec.name])}
        if src_file is not None:
            row.update({k: v for k, v in probe_engine(spec, src_file, probe_sentences, threads, max_new_tokens).items()
                        if k in ("load_s", "peak_rss_mb", "rss_source")})
        engines[spec.name] = row
    return {"engines": engines, "timings": timings, "outputs_first_20": outputs}


# onnxruntime operator types by what they spend time on (step_costs)
OP_CATEGORIES = {
    "matrix products": ("MatMulNBits", "DynamicQuantizeMatMul", "MatMulInteger", "MatMulIntegerToFloat",
                        "DynamicQuantizeLinear", "MatMul", "FusedMatMul", "Gemm"),
    "softmax, layer norm, activation": ("Softmax", "LayerNormalization", "SkipLayerNormalization", "QuickGelu",
                                        "Sigmoid", "Gelu", "Relu"),
    "cache concatenation": ("Concat",),
    "attention kernel (with its cache copy)": ("MultiHeadAttention",),
}


def step_costs(bundle: Path, texts: list[str], max_new_tokens: int = 128) -> dict:
    """Where a one-file model's time goes: its two subgraphs run on their own, against the whole.

    The BeamSearch node's subgraphs (encoder + first step; one decoder step) are lifted out as
    models of their own and driven by a plain greedy loop here, one sentence at a time, timing
    each call; the whole model then translates the same sentences. What the whole takes beyond
    the subgraphs' time is the search's bookkeeping (logits processing, handing each step's
    cache to the next, the subgraph calls) plus tokenising and detokenising. A profiler run of
    the step model splits a step's kernel time by OP_CATEGORIES ("other": elementwise ops,
    reshapes, casts, copies); profiling adds cost per node, so those shares are indicative.
    """
    import numpy as np
    import onnx
    import onnxruntime as ort
    import sentencepiece as spm

    from ekd_edge.runtime.manifest import read_manifest
    from ekd_edge.runtime.onefile_engine import MODEL_FILE, onefile_session, run_onefile
    from ekd_edge.runtime.session import optimization_level

    bundle = Path(bundle)
    settings = read_manifest(bundle)["settings"]
    model = onnx.load(str(bundle / MODEL_FILE))
    search = next(node for node in model.graph.node if node.op_type == "BeamSearch")
    tokenizer = next(node for node in model.graph.node if node.op_type == "SentencepieceTokenizer")
    pieces = spm.SentencePieceProcessor(model_proto=next(a.s for a in tokenizer.attribute if a.name == "model"))
    weights = {t.name: t for t in model.graph.initializer}

    def lifted(graph_name: str, profile_dir: str | None = None):
        graph = onnx.GraphProto()
        graph.CopyFrom(next(a.g for a in search.attribute if a.name == graph_name))
        read = {name for node in graph.node for name in node.input}
        graph.initializer.extend(weights[name] for name in sorted(read) if name in weights)
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
        options.graph_optimization_level = optimization_level(settings)
        if profile_dir:
            options.enable_profiling, options.profile_file_prefix = True, str(Path(profile_dir) / "step")
        lifted_model = onnx.helper.make_model(graph, opset_imports=model.opset_import)
        lifted_model.ir_version = model.ir_version
        return ort.InferenceSession(lifted_model.SerializeToString(), options, providers=["CPUExecutionProvider"])

    def greedy(text: str, init, step, timings: dict | None = None):
        ids = pieces.encode(text)[: settings["max_positions"] - 1] + [settings["eos_token_id"]]
        feeds = {"encoder_input_ids": np.array([ids], np.int32), "encoder_attention_mask": np.ones((1, len(ids)), np.int32),
                 "decoder_input_ids": np.array([[settings["decoder_start_token_id"]]], np.int32)}
        clock = time.perf_counter()
        names = [o.name for o in init.get_outputs()]
        outputs = dict(zip(names, init.run(None, feeds)))
        init_s, steps, step_s = time.perf_counter() - clock, 0, 0.0
        past = {name.replace("present", "past"): value for name, value in outputs.items() if name.startswith("present")}
        step_names = [o.name for o in step.get_outputs()]
        token = int(outputs["logits"][0, -1].argmax())
        while token != settings["eos_token_id"] and steps + 1 < max_new_tokens:
            clock = time.perf_counter()
            result = dict(zip(step_names, step.run(None, {"input_ids": np.array([[token]], np.int32),
                                                          "encoder_attention_mask": feeds["encoder_attention_mask"],
                                                          **past})))
            step_s += time.perf_counter() - clock
            steps += 1
            past.update({name.replace("present", "past"): value for name, value in result.items()
                         if name.startswith("present")})
            token = int(result["logits"][0, -1].argmax())
        if timings is not None:
            timings["init_s"] += init_s
            timings["step_s"] += step_s
            timings["steps"] += steps
        return steps

    init, step = lifted("encoder"), lifted("decoder")
    whole = onefile_session(bundle / MODEL_FILE, threads=1, settings=settings)
    for text in texts[:3]:  # warm-up
        greedy(text, init, step)
        run_onefile(whole, [text], max_new_tokens=max_new_tokens)
    timings = {"init_s": 0.0, "step_s": 0.0, "steps": 0}
    whole_s = 0.0
    for text in texts:
        greedy(text, init, step, timings)
        clock = time.perf_counter()
        run_onefile(whole, [text], max_new_tokens=max_new_tokens)
        whole_s += time.perf_counter() - clock
    n = max(1, len(texts))
    with tempfile.TemporaryDirectory(prefix="ekd-profile-") as tmp:
        profiled = lifted("decoder", tmp)
        for text in texts[:20]:
            greedy(text, init, profiled)
        events = json.loads(Path(profiled.end_profiling()).read_text())
    kernel_us: dict[str, float] = {}
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            op = event["args"].get("op_name")
            category = next((name for name, ops in OP_CATEGORIES.items() if op in ops), "other")
            kernel_us[category] = kernel_us.get(category, 0.0) + float(event["dur"])
    total_kernel = sum(kernel_us.values()) or 1.0
    init_ms, steps_ms = timings["init_s"] * 1000 / n, timings["step_s"] * 1000 / n
    return {
        "sentences": len(texts),
        "decoder_steps_per_sentence": timings["steps"] / n,
        "whole_model_ms_per_sentence": whole_s * 1000 / n,
        "encoder_and_first_step_ms": init_ms,
        "later_steps_ms": steps_ms,
        "ms_per_later_step": timings["step_s"] * 1000 / max(1, timings["steps"]),
        "search_tokenizer_and_calls_ms": whole_s * 1000 / n - init_ms - steps_ms,
        "step_kernel_share": {k: round(v / total_kernel, 3) for k, v in sorted(kernel_us.items())},
    }


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "probe":
        raise SystemExit(_probe_main(sys.argv[2:]))
    raise SystemExit("usage: python -m ekd_edge.bench.engines probe NAME KIND PATH PRECISION SRC N THREADS MAX_NEW")
