"""Latency statistics and the in-process batch-1 latency measurement."""

from __future__ import annotations

import gc
import math
import time


def percentile(values, q: float) -> float:
    """The ``q``-th percentile (0 <= q <= 100) of ``values`` by linear interpolation.

    Same definition as ``numpy.percentile``'s default ("linear", Hyndman & Fan type 7): with the
    values sorted as x[0] <= ... <= x[n-1], the rank is h = (n - 1) * q / 100 and the result is
    x[floor(h)] + (h - floor(h)) * (x[floor(h) + 1] - x[floor(h)]). So q=0 is the minimum,
    q=100 the maximum, q=50 the usual median, and one value is its own every percentile.
    """
    data = sorted(float(v) for v in values)
    if not data:
        raise ValueError("percentile of an empty sequence")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile q must be within [0, 100], not {q}")
    if any(math.isnan(v) for v in data):
        raise ValueError("percentile of a sequence holding NaN")
    rank = (len(data) - 1) * q / 100
    lo = math.floor(rank)
    hi = min(lo + 1, len(data) - 1)
    frac = rank - lo
    return data[lo] + frac * (data[hi] - data[lo])


def latency_summary(seconds_list) -> dict:
    """p50/p90/p99/mean of per-sentence latencies given in seconds, reported in milliseconds."""
    ms = [s * 1000.0 for s in seconds_list]
    if not ms:
        raise ValueError("no latencies to summarise")
    return {
        "p50_ms": percentile(ms, 50),
        "p90_ms": percentile(ms, 90),
        "p99_ms": percentile(ms, 99),
        "mean_ms": sum(ms) / len(ms),
    }


def measure_latency(translator, texts: list[str], warmup: int = 5, max_new_tokens: int = 128) -> dict:
    """Batch-1 greedy latency of ``translator`` over ``texts``, one sentence at a time.

    ``warmup`` sentences (taken from ``texts``, cycling if there are fewer) run untimed first so
    that one-off costs (lazy allocation, kernel selection, caches) do not land on the first
    timed sentence. Each timed sentence covers what a caller waits for: tokenising, generating
    and detokenising. ``tokens_per_s`` is the number of generated tokens (EOS not counted) over
    the summed time of the timed sentences.
    """
    texts = list(texts)
    if not texts:
        raise ValueError("no sentences to time")
    for i in range(max(0, warmup)):
        translator.translate_with_ids([texts[i % len(texts)]], max_new_tokens, 1)
    seconds, tokens = [], 0
    # a collection pause inside one timed sentence would show up as a fake tail latency
    gc.collect()
    for text in texts:
        start = time.perf_counter()
        _, ids = translator.translate_with_ids([text], max_new_tokens, 1)   # text in, text out
        seconds.append(time.perf_counter() - start)
        tokens += len(ids[0])
    total = sum(seconds)
    summary = latency_summary(seconds)
    summary.update(
        tokens_per_s=tokens / total if total > 0 else 0.0,
        generated_tokens=tokens,
        total_s=total,
        n_sentences=len(texts),
    )
    return summary
