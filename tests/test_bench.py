"""Benchmark sub-package: statistics, metrics, a real benchmark of the nano checkpoint, reports, the memory probe."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from ekd_edge.bench import (
    ROW_KEYS, ProbeError, benchmark_model, environment_signature, latency_summary, measure_peak_rss, model_params,
    model_size_mb, percentile, rich_table, score, with_run_context, write_report,
)

QS = (0, 0.1, 1, 5, 25, 33.3, 50, 75, 90, 95, 99, 99.9, 100)


@pytest.mark.parametrize("n", [1, 2, 3, 7, 10, 101, 1000])
def test_percentile_matches_numpy(n):
    rng = random.Random(n)
    values = [rng.uniform(-5, 50) for _ in range(n)]
    for q in QS + tuple(rng.uniform(0, 100) for _ in range(10)):
        assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)), rel=1e-12, abs=1e-12)


def test_percentile_edge_cases():
    assert percentile([4.2], 0) == percentile([4.2], 50) == percentile([4.2], 100) == 4.2
    data = [3, 1, 2, 2, 9]
    assert percentile(data, 0) == 1 and percentile(data, 100) == 9
    assert percentile(data, 50) == pytest.approx(np.percentile(data, 50))
    assert percentile([5, 5, 5], 37) == 5
    for bad in (-0.01, 100.01):
        with pytest.raises(ValueError):
            percentile(data, bad)
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0, float("nan")], 50)


def test_latency_summary_in_milliseconds():
    seconds = [i / 1000 for i in range(1, 101)]  # 1 ms .. 100 ms
    summary = latency_summary(seconds)
    ms = np.array(seconds) * 1000
    assert summary["p50_ms"] == pytest.approx(np.percentile(ms, 50))
    assert summary["p90_ms"] == pytest.approx(np.percentile(ms, 90))
    assert summary["p99_ms"] == pytest.approx(np.percentile(ms, 99))
    assert summary["mean_ms"] == pytest.approx(50.5)
    with pytest.raises(ValueError):
        latency_summary([])


def test_score_matches_sacrebleu():
    import sacrebleu

    hyps = ["The cat sat on the mat.", "Open the file menu and choose Save.", "It rains a lot today"]
    refs = ["The cat sat on the mat.", "Open the File menu, then choose Save.", "Today it is raining heavily"]
    result = score(hyps, refs)
    assert result["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score)
    assert result["chrf"] == pytest.approx(sacrebleu.corpus_chrf(hyps, [refs]).score)
    assert 0 < result["bleu"] < 100 and 0 < result["chrf"] < 100
    assert result["n"] == 3
    assert result["bleu_signature"].startswith("nrefs:1|") and "tok:13a" in result["bleu_signature"]
    assert result["chrf_signature"].startswith("nrefs:1|") and f"version:{sacrebleu.__version__}" in result["chrf_signature"]

    perfect = score(refs, refs)
    assert perfect["bleu"] == pytest.approx(100) and perfect["chrf"] == pytest.approx(100)

    with pytest.raises(ValueError):
        score(hyps, refs[:2])
    with pytest.raises(ValueError):
        score([], [])


@pytest.fixture(scope="module")
def nano_row(nano_checkpoint, lo_valid):
    import torch

    valid = lo_valid.head(20)
    messages = []
    threads_before = torch.get_num_threads()
    row = benchmark_model(nano_checkpoint, valid.src, valid.tgt, name="nano", role="student", stage="s1",
                          threads=1, latency_sentences=8, warmup=2, max_new_tokens=32, batch_size=8,
                          progress=messages.append)
    # threads=1 must not leak into this process: TorchTranslator sets it process-wide
    assert torch.get_num_threads() == threads_before
    return row, messages


def test_benchmark_model_on_nano_checkpoint(nano_row, nano_checkpoint):
    from ekd_edge.models import count_parameters, load_model

    row, messages = nano_row
    assert set(ROW_KEYS) <= set(row)
    assert (row["name"], row["role"], row["stage"]) == ("nano", "student", "s1")
    assert row["variant"] == "pytorch" and row["engine"] == "pytorch"
    assert row["path"] == str(nano_checkpoint)
    assert row["params"] == count_parameters(load_model(nano_checkpoint))
    assert row["size_mb"] == pytest.approx((nano_checkpoint / "model.safetensors").stat().st_size / 2**20)
    assert row["n_sentences"] == 20 and row["latency_sentences"] == 8
    assert 0 <= row["bleu"] <= 100 and 0 <= row["chrf"] <= 100
    assert row["bleu_signature"].startswith("nrefs:1|") and row["chrf_signature"].startswith("nrefs:1|")
    assert 0 < row["latency_p50_ms"] <= row["latency_p90_ms"] <= row["latency_p99_ms"]
    assert row["latency_p99_ms"] < 10_000
    assert row["tokens_per_s"] > 0
    # a fresh interpreter with torch and transformers loaded cannot be smaller than this
    assert 50 < row["peak_rss_mb"] < 4096
    assert 0 < row["load_s"] < 120
    assert messages and all(isinstance(m, str) for m in messages)
    json.dumps(row)  # a row must be JSON as it is


def test_benchmark_model_on_an_exported_bundle(nano_checkpoint, lo_valid, tmp_path):
    from ekd_edge.export import export_bundle
    from ekd_edge.models import count_parameters, load_model

    bundle = tmp_path / "nano-fp32"
    export_bundle(nano_checkpoint, bundle, max_new_tokens=32)
    valid = lo_valid.head(12)
    row = benchmark_model(bundle, valid.src, valid.tgt, name="nano", role="student", stage=1, threads=1,
                          latency_sentences=4, warmup=1, max_new_tokens=32)
    assert row["engine"] == "onnxruntime" and row["variant"] == "fp32"
    onnx_bytes = sum(p.stat().st_size for p in bundle.glob("*.onnx"))
    assert onnx_bytes > 0 and row["size_mb"] == pytest.approx(onnx_bytes / 2**20)
    assert row["params"] == count_parameters(load_model(nano_checkpoint))
    assert row["latency_p50_ms"] > 0 and row["tokens_per_s"] > 0
    assert 50 < row["peak_rss_mb"] < 4096 and row["load_s"] > 0


def test_generation_is_capped_by_the_position_table(nano_checkpoint):
    from ekd_edge.bench import _generation_limit
    from ekd_edge.runtime import load_translator

    limit = json.loads((nano_checkpoint / "config.json").read_text())["max_position_embeddings"]
    assert _generation_limit(nano_checkpoint, 10_000) == limit
    assert _generation_limit(nano_checkpoint, 8) == 8
    # the cap itself is decodable: the longest allowed output does not overrun the table
    ids = load_translator(nano_checkpoint).generate_ids(["Open the file."], max_new_tokens=limit)
    assert len(ids[0]) <= limit


def test_benchmark_model_rejects_bad_input(nano_checkpoint):
    with pytest.raises(ValueError, match="references"):
        benchmark_model(nano_checkpoint, ["a", "b"], ["a"], name="x", role="student")
    with pytest.raises(ValueError, match="role"):
        benchmark_model(nano_checkpoint, ["a"], ["a"], name="x", role="teachr")


def test_probe_reports_only_its_own_memory(nano_checkpoint, lo_valid):
    # a child started by fork/exec inherits the parent's high-water mark in ru_maxrss; hold 1 GiB
    # here (every page touched, so resident) and check that the probe's peak does not include it
    ballast = bytearray(2**30)
    ballast[::4096] = b"\x01" * (len(ballast) // 4096)
    result = measure_peak_rss(nano_checkpoint, lo_valid.src[:2], threads=1, max_new_tokens=16)
    del ballast
    assert 50 < result["peak_rss_mb"] < 1024
    assert result["peak_rss_after_load_mb"] <= result["peak_rss_mb"]
    assert result["n_sentences"] == 2 and result["engine"] == "pytorch"


def test_probe_failure_is_a_clear_error(tmp_path):
    bogus = tmp_path / "no-such-model"
    with pytest.raises(ProbeError) as info:
        measure_peak_rss(bogus, ["Hello world."], threads=1)
    message = str(info.value)
    assert str(bogus) in message and "failed" in message
    # the child's own one-line reason is passed on, not a bare exit status
    assert "neither an exported bundle" in message
    assert "Traceback" not in message


def test_size_and_params_of_a_bundle_directory(tmp_path, nano_checkpoint):
    import shutil

    from ekd_edge.models import count_parameters, load_model
    bundle = tmp_path / "bundle"
    (bundle / "sub").mkdir(parents=True)
    (bundle / "encoder_model.onnx").write_bytes(b"\0" * 300_000)
    (bundle / "sub" / "decoder_model.onnx").write_bytes(b"\0" * 700_000)
    (bundle / "decoder_model.onnx_data").write_bytes(b"\0" * 48_576)
    (bundle / "vocab.json").write_text("{}" * 50_000)  # not an ONNX file: not counted
    (bundle / "manifest.json").write_text(json.dumps({"variant": "int8", "params": 1234, "files": []}))
    assert model_size_mb(bundle) == pytest.approx(1_048_576 / 2**20)
    assert model_size_mb(bundle / "encoder_model.onnx") == pytest.approx(300_000 / 2**20)   # one model file
    assert model_params(bundle) == 1234
    (bundle / "manifest.json").write_text(json.dumps({"variant": "int8", "files": []}))
    assert model_params(bundle) is None
    # without a count in the manifest, the bundle's config.json gives the architecture's count
    shutil.copy(nano_checkpoint / "config.json", bundle / "config.json")
    assert model_params(bundle) == count_parameters(load_model(nano_checkpoint))


def _synthetic_rows():
    base = {k: None for k in ROW_KEYS}
    sig = "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0"
    chrf_sig = "nrefs:1|case:mixed|eff:yes|nc:6|nw:0|space:no|version:2.6.0"
    return [
        {**base, "name": "teacher-base", "role": "teacher", "variant": "pytorch", "engine": "pytorch", "params": 74_000_000,
         "size_mb": 282.4, "bleu": 31.2, "chrf": 58.0, "latency_p50_ms": 410.0, "latency_p90_ms": 650.0,
         "tokens_per_s": 55.0, "peak_rss_mb": 1210.0, "bleu_signature": sig, "chrf_signature": chrf_sig},
        {**base, "name": "student|tiny", "role": "student", "stage": "s2", "variant": "fp32", "engine": "onnxruntime",
         "params": 8_100_000, "size_mb": 31.0, "bleu": 27.9, "chrf": 55.1, "latency_p50_ms": 22.0,
         "latency_p90_ms": 35.0, "tokens_per_s": 950.0, "peak_rss_mb": 180.0, "bleu_signature": sig,
         "chrf_signature": chrf_sig},
        {**base, "name": "student-tiny", "role": "student", "stage": "s2", "variant": "int8", "engine": "onnxruntime",
         "params": 8_100_000, "size_mb": 8.2, "bleu": 27.1, "chrf": 54.6, "latency_p50_ms": 9.5,
         "latency_p90_ms": 15.0, "tokens_per_s": 2100.0, "peak_rss_mb": float("nan"), "bleu_signature": sig,
         "chrf_signature": chrf_sig},
    ]


def test_write_report_writes_three_readable_files(tmp_path, nano_row, lo_valid):
    import matplotlib.image

    row, _ = nano_row
    rows = [row] + _synthetic_rows()
    signature = with_run_context(environment_signature(1), data=lo_valid.head(20), data_name="lo-help-en-de valid",
                                 settings={"latency_sentences": 8, "max_new_tokens": 32})
    paths = write_report(rows, tmp_path / "out", signature, title="bench test")
    assert set(paths) == {"json", "md", "png"} and all(p.is_file() for p in paths.values())
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["report.json", "report.md", "report.png"]

    data = json.loads(paths["json"].read_text())
    assert data["title"] == "bench test"
    assert data["rows"][0] == row
    assert data["rows"][3]["peak_rss_mb"] is None  # NaN is written as null, the file stays valid JSON
    assert data["signature"]["data"]["fingerprint"] == lo_valid.head(20).fingerprint()
    assert data["signature"]["settings"]["max_new_tokens"] == 32

    md = paths["md"].read_text()
    for r in rows:
        assert r["name"].replace("|", "\\|") in md
    for header in ("BLEU", "chrF", "p50 ms", "p90 ms", "tokens/s", "Peak RSS MB", "Size MB", "Params"):
        assert header in md
    assert row["bleu_signature"] in md and signature["cpu"] in md
    assert "74.0M" in md and "282.4" in md
    # every table line has the same number of cells, even with a "|" inside a name
    table = [line for line in md.splitlines() if line.startswith("| ")]
    assert len(table) == 2 + len(rows)
    assert len({line.replace("\\|", "").count("|") for line in table}) == 1

    png = paths["png"].read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    image = matplotlib.image.imread(paths["png"])
    assert image.shape[0] > 400 and image.shape[1] > 600

    # rewriting over an existing report leaves no temporary files behind; a flat signature
    # (data named by a string, extra scalar keys) is rendered too
    flat = {**environment_signature(None), "data": "lo-help-en-de:test", "data_sha256": "54393466a0697ebe",
            "sentences": 20}
    write_report(rows[:1], tmp_path / "out", flat)
    md = paths["md"].read_text()
    assert "lo-help-en-de:test" in md and "54393466a0697ebe" in md
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["report.json", "report.md", "report.png"]
    with pytest.raises(ValueError):
        write_report([], tmp_path / "empty", signature)


def test_rich_table_and_signature(nano_row):
    import torch
    from rich.console import Console

    row, _ = nano_row
    console = Console(record=True, width=220)
    console.print(rich_table([row] + _synthetic_rows()))
    text = console.export_text()
    assert "nano" in text and "teacher-base" in text and "BLEU" in text

    sig = environment_signature(4)
    assert sig["threads"] == 4 and sig["logical_cores"] >= 1 and sig["cpu"]
    assert sig["packages"]["torch"] == torch.__version__
    assert set(sig["packages"]) == {"torch", "transformers", "onnxruntime", "optimum", "sacrebleu", "ekd_edge"}
    assert environment_signature(None)["threads"] == "engine default"
