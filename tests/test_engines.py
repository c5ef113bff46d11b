"""Engines comparison: pair-by-pair ratios, interleaved timing on real (nano) translators, sizes."""

import time

import numpy as np
import pytest

from ekd_edge.errors import EkdError

from ekd_edge.bench.engines import (EngineSpec, interleaved_latency, load_engine, pair_ratios, probe_command,
                                   summarise, warm_block_latency)


def test_pair_ratios_are_per_sentence():
    a = [2.0, 1.0, 3.0, 4.0]
    b = [1.0, 2.0, 3.0, 1.0]
    r = pair_ratios(a, b)
    per_sentence = [2.0, 0.5, 1.0, 4.0]
    assert r["median"] == pytest.approx(np.percentile(per_sentence, 50))
    assert r["p10"] == pytest.approx(np.percentile(per_sentence, 10))
    assert r["p90"] == pytest.approx(np.percentile(per_sentence, 90))
    # the ratio of the medians is a different figure from the median of the ratios
    assert r["p50_ratio"] == pytest.approx(np.median(a) / np.median(b))
    assert r["p50_ratio"] != pytest.approx(r["median"])
    assert r["wins"] == 1 and r["n"] == 4


def test_pair_ratios_of_an_engine_with_itself_is_one():
    times = [0.01, 0.02, 0.5, 0.003]
    r = pair_ratios(times, times)
    assert r["median"] == r["p10"] == r["p90"] == r["p50_ratio"] == 1.0
    assert r["wins"] == 0


def test_pair_ratios_refuses_unpaired_or_zero_timings():
    with pytest.raises(ValueError, match="same sentences"):
        pair_ratios([1.0, 2.0], [1.0])
    with pytest.raises(ValueError):
        pair_ratios([], [])
    with pytest.raises(ValueError, match="zero"):
        pair_ratios([1.0], [0.0])


def test_summarise_tokens_per_second():
    s = summarise({"seconds": [0.5, 0.25, 0.25], "tokens": [10, 5, 5]})
    assert s["tokens_per_s"] == pytest.approx(20.0)
    assert s["p50_ms"] == pytest.approx(250.0)
    assert s["n_sentences"] == 3


def test_probe_command_names_engine_and_threads(tmp_path):
    spec = EngineSpec("ct2-int8", "ctranslate2", tmp_path / "b", "int8")
    command = probe_command(spec, tmp_path / "src.txt", 20, None, 64)
    assert command[1:4] == ["-m", "ekd_edge.bench.engines", "probe"]
    assert command[4:] == ["ct2-int8", "ctranslate2", str(tmp_path / "b"), "int8", str(tmp_path / "src.txt"), "20",
                           "0", "64"]


def test_unknown_engine_kind(tmp_path):
    with pytest.raises(EkdError, match="unknown engine"):
        load_engine(EngineSpec("x", "tvm", tmp_path, "fp32"), 1)


def test_interleaved_latency_on_two_real_translators(nano_checkpoint, lo_valid):
    spec = EngineSpec("pytorch", "pytorch", nano_checkpoint, "fp32")
    translators = {"a": load_engine(spec, 1), "b": load_engine(spec, 1)}
    texts = lo_valid.src[:6]
    timings = interleaved_latency(translators, texts, warmup=1, max_new_tokens=16)
    for name in ("a", "b"):
        assert len(timings[name]["seconds"]) == len(texts)
        assert all(t > 0 for t in timings[name]["seconds"])
    # the same model decodes the same tokens whichever slot of the round it ran in
    assert timings["a"]["tokens"] == timings["b"]["tokens"]
    assert sum(timings["a"]["tokens"]) > 0
    ratio = pair_ratios(timings["a"]["seconds"], timings["b"]["seconds"])
    assert ratio["n"] == len(texts)


class _Clocked:
    """A real translator whose every call takes at least ``pause`` seconds longer when it did not
    run the call before: a stand-in for a cold cache, which only block timing avoids."""

    def __init__(self, translator, pause, log):
        self.inner, self.pause, self.log = translator, pause, log

    def translate_with_ids(self, texts, max_new_tokens, num_beams):
        if self.log and self.log[-1] is not self:
            time.sleep(self.pause)
        self.log.append(self)
        return self.inner.translate_with_ids(texts, max_new_tokens, num_beams)


SWITCH = 0.15  # seconds; a nano model decodes 8 tokens in a few milliseconds


def test_warm_blocks_keep_each_engine_warm_where_round_robin_does_not(nano_checkpoint, lo_valid):
    spec = EngineSpec("pytorch", "pytorch", nano_checkpoint, "fp32")
    inner, log = load_engine(spec, 1), []
    translators = {"a": _Clocked(inner, SWITCH, log), "b": _Clocked(inner, SWITCH, log)}
    texts = lo_valid.src[:5]
    warm = warm_block_latency(translators, texts, rounds=3, warmup=1, max_new_tokens=8)
    cold = interleaved_latency(translators, texts, warmup=1, max_new_tokens=8)
    for name in ("a", "b"):
        assert len(warm[name]["rounds"]) == 3 and all(len(r) == len(texts) for r in warm[name]["rounds"])
        # only the first sentence of a block follows the other engine, so the median over rounds
        # of every other sentence never paid the switch; round-robin (the start rotating each
        # sentence) pays it on about every other sentence
        assert all(t < SWITCH for t in warm[name]["seconds"][1:])
        assert sum(t >= SWITCH for t in cold[name]["seconds"]) >= len(texts) // 2
    assert warm["a"]["tokens"] == warm["b"]["tokens"] == cold["a"]["tokens"]
    with pytest.raises(ValueError):
        warm_block_latency(translators, texts, rounds=0)


def test_step_costs_drive_the_lifted_subgraphs_through_the_same_greedy_search(sharp_checkpoint, lo_valid, tmp_path):
    from ekd_edge.bench.engines import step_costs
    from ekd_edge.export.onefile import export_onefile
    from ekd_edge.runtime.onefile_engine import OneFileTranslator

    export_onefile(sharp_checkpoint, tmp_path / "fp32", max_new_tokens=32)
    texts = lo_valid.src[:8]
    costs = step_costs(tmp_path / "fp32", texts, max_new_tokens=32)
    ids = OneFileTranslator(tmp_path / "fp32").generate_ids(texts, max_new_tokens=32)
    # one later step per generated token after the first (EOS included, the decoder start excluded)
    assert costs["decoder_steps_per_sentence"] == pytest.approx(sum(len(row) for row in ids) / len(texts))
    assert costs["whole_model_ms_per_sentence"] > 0 and costs["ms_per_later_step"] > 0
    assert set(costs["step_kernel_share"]) >= {"matrix products", "other"}
    assert sum(costs["step_kernel_share"].values()) == pytest.approx(1.0, abs=0.01)
