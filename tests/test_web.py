"""Web bundles: the bundle's own JavaScript (translator.mjs, onnxruntime-web and SentencePiece in
WebAssembly) under Node, against the Python tokenizer and PyTorch; then the demo page in headless
Chromium.

Node and the npm packages of package-lock.json (and chromium for the browser tests) come from
`make test` (python -m ekd_edge.bench.browser ensure); with CI set, anything missing is a failure.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conftest import needs
from ekd_edge.bench.browser import missing
from ekd_edge.cli import main
from ekd_edge.data import load_corpus
from ekd_edge.data.tokenizer import load_tokenizer

pytestmark = [pytest.mark.usefixtures("single_torch_thread")]


def _require(what: list[str]) -> None:
    gaps = [gap for gap in missing() if any(gap.startswith(w) for w in what)]
    needs(not gaps, f"missing {', '.join(gaps)} (make web-deps)")


@pytest.fixture(scope="module")
def node_ready():
    _require(["node", "npm package onnxruntime-web", "npm package @sctg/sentencepiece-js"])


@pytest.fixture(scope="module")
def test_split():
    return load_corpus("lo-help-en-de").split("test")


@pytest.fixture(scope="module")
def web_fp32(node_ready, sharp_checkpoint, lo_valid, tmp_path_factory):
    """The sharp student as an fp32 web bundle; its parity gate already ran the bundle in Node."""
    from ekd_edge.export.web import export_web

    out = tmp_path_factory.mktemp("web") / "fp32"
    export_web(sharp_checkpoint, out, quantize=None, parity_texts=lo_valid.head(30).src)
    return out


@pytest.fixture(scope="module")
def web_translator(web_fp32):
    from ekd_edge.runtime.web_engine import WebTranslator

    translator = WebTranslator(web_fp32)
    yield translator
    translator.close()


def _untrained_bundle(tokenizer_dir, out, vocab_size):
    """A web bundle whose graphs are an untrained nano model: enough to run the tokenizer."""
    from ekd_edge.export.web import export_web
    from ekd_edge.models import build_model, save_model

    checkpoint = save_model(build_model("nano", vocab_size, seed=0), out.parent / f"{out.name}-ckpt",
                            tokenizer_dir=tokenizer_dir)
    export_web(checkpoint, out, quantize=None)
    return out


def _ids_equal(bundle, tokenizer_dir, texts):
    """Indices of ``texts`` whose ids from the bundle (Node) differ from the Python tokenizer's."""
    from ekd_edge.runtime.web_engine import WebTranslator

    expected = load_tokenizer(tokenizer_dir)(texts)["input_ids"]
    translator = WebTranslator(bundle)
    try:
        got = translator.encode(texts, truncate=False)
    finally:
        translator.close()
    return [i for i, (a, b) in enumerate(zip(got, expected)) if a != b], len(expected)


# ---------------------------------------------------------------------------------------------
# Node: tokenizer and greedy search against Python


def test_tokenizer_ids_equal_python_on_the_whole_test_split(web_fp32, sharp_checkpoint, test_split):
    differ, n = _ids_equal(web_fp32, sharp_checkpoint, test_split.src)
    assert n == 1086 and differ == [], f"ids differ on {len(differ)}/{n} sentences, first {differ[:5]}"


@pytest.mark.slow
def test_tokenizer_ids_equal_python_with_the_demo_vocabulary_and_a_trimmed_one(node_ready, test_split, lo_train,
                                                                                tmp_path):
    """The demo student speaks the shipped teachers' 4,000-piece vocabulary; a trimmed adoption of
    it re-numbers the pieces, so a tokenizer that returned SentencePiece's ids would fail here."""
    from ekd_edge.data.adopt import adopt_tokenizer
    from ekd_edge.data.tokenizer import sentencepiece_id_maps
    from ekd_edge.models.teacher import load_teacher_tokenizer

    teacher = Path(__file__).resolve().parents[1] / "ekd_edge/teachers/lo-help-en-de/teacher-l"
    trimmed = adopt_tokenizer(teacher, load_teacher_tokenizer(teacher), tmp_path / "trimmed", lo_train.src[:300],
                              lo_train.tgt[:300], trim=True)
    assert trimmed["student_vocab"] < trimmed["teacher_vocab"]
    # its model ids are not SentencePiece's: ids taken straight from SentencePiece would differ
    assert sentencepiece_id_maps(tmp_path / "trimmed")[0] is not None
    for name, tokenizer_dir, size in (("demo", teacher, 4000), ("trimmed", tmp_path / "trimmed", trimmed["student_vocab"])):
        bundle = _untrained_bundle(tokenizer_dir, tmp_path / f"{name}-web", size)
        differ, n = _ids_equal(bundle, tokenizer_dir, test_split.src)
        assert n == 1086 and differ == [], f"{name}: ids differ on {len(differ)}/{n} sentences, first {differ[:5]}"


def test_tokenizer_edge_cases_equal_python(web_translator, sharp_checkpoint):
    texts = ["", "   ", "Hello </s> world", "a <unk>b<pad>", ">>de<< Hallo", ">>de Hallo", "x >>de<< y",
             "constructor toString __proto__", "Tabs\tand  double  spaces ", "Ünïcödé ß — “quotes” 😀 ①",
             "ﬁ ligature and full-width ＡＢＣ"]
    expected = load_tokenizer(sharp_checkpoint)(texts)["input_ids"]
    assert web_translator.encode(texts, truncate=False) == expected


def test_long_inputs_are_cut_as_the_python_tokenizer_cuts_them(web_translator, sharp_checkpoint, test_split):
    limit = json.loads((sharp_checkpoint / "config.json").read_text())["max_position_embeddings"]
    tokenizer = load_tokenizer(sharp_checkpoint)
    long = [t for t in test_split.src if len(tokenizer(t)["input_ids"]) > limit][:20]
    assert long, "the tiny vocabulary makes some test sentences longer than the position table"
    expected = tokenizer(long, truncation=True, max_length=limit)["input_ids"]
    assert web_translator.encode(long) == expected
    counts, model_limit = web_translator.source_token_counts(long)
    assert model_limit == limit and all(n > limit for n in counts)


def test_greedy_ids_and_text_equal_pytorch_on_200_test_sentences(web_translator, sharp_checkpoint, test_split):
    from ekd_edge.runtime.torch_engine import TorchTranslator

    texts = test_split.head(200).src
    torch = TorchTranslator(sharp_checkpoint)
    expected = [ids for start in range(0, 200, 32) for ids in torch.generate_ids(texts[start:start + 32])]
    got = web_translator.generate_ids(texts)
    differ = [i for i, (a, b) in enumerate(zip(got, expected)) if a != b]
    assert len(got) == 200 and len(differ) <= 1, f"greedy ids differ on {len(differ)}/200: {differ[:10]}"
    # the student's outputs vary with the input and some run to the length limit (the forced EOS)
    assert len({tuple(ids) for ids in expected}) > 20
    assert max(len(ids) for ids in expected) >= 62
    assert web_translator.decode(got) == torch.decode(got)


def test_decode_equals_python_on_the_test_references(web_translator, sharp_checkpoint, test_split):
    tokenizer = load_tokenizer(sharp_checkpoint)
    ids = tokenizer(text_target=test_split.tgt)["input_ids"]
    assert web_translator.decode(ids) == tokenizer.batch_decode(ids, skip_special_tokens=True)


def test_a_changed_bundle_file_is_refused(web_fp32, tmp_path):
    import shutil

    from ekd_edge.errors import BundleError
    from ekd_edge.runtime.web_engine import WebTranslator

    copy = tmp_path / "copy"
    shutil.copytree(web_fp32, copy)
    (copy / "translator.mjs").write_text((copy / "translator.mjs").read_text().replace("row[i] > bestScore",
                                                                                        "row[i] < bestScore"))
    with pytest.raises(BundleError, match="translator.mjs"):
        WebTranslator(copy)


# ---------------------------------------------------------------------------------------------
# Export: profile, int8, manifest, command line


@pytest.mark.slow
def test_the_web_profile_exports_a_gated_int8_bundle(node_ready, sharp_checkpoint, tmp_path, capsys):
    import onnx

    out = tmp_path / "web-int8"
    code = main(["export", str(sharp_checkpoint), "--profile", "web", "--out", str(out), "--parity-sentences", "20",
                 "--quality-sentences", "20"])
    assert code == 0, capsys.readouterr()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["backend"] == "web" and manifest["variant"] == "web-int8"
    assert manifest["parity"]["status"] == "measured" and manifest["parity"]["n"] == 20
    assert manifest["quality_gate"]["status"] == "passed" and manifest["quality_gate"]["sentences"] == 20
    pins = json.loads((Path(__file__).resolve().parents[1] / "package.json").read_text())["dependencies"]
    assert manifest["web_runtime"] == pins

    def ops(graph):
        return {node.op_type for node in graph.node} | {op for node in graph.node for a in node.attribute
                                                         if a.type == onnx.AttributeProto.GRAPH for op in ops(a.g)}

    assert "MatMulInteger" in ops(onnx.load(str(out / "decoder_model_merged.onnx")).graph)
    payload = manifest["payload"]
    sizes = {f["path"]: f["size"] for f in manifest["files"]}
    assert payload["model_bytes"] == sum(sizes[p] for p in payload["model_files"])
    assert payload["runtime_bytes"] == sum(sizes[p] for p in payload["runtime_files"])


def test_web_profile_settings(tmp_path, monkeypatch):
    from ekd_edge.errors import ProfileError
    from ekd_edge.export.profiles import load_profile

    profile = load_profile("web")
    assert profile.format == "web" and profile.quantize.mode == "int8"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "portable-web.toml").write_text('format = "web"\n[quantize]\nportable = true\n')
    with pytest.raises(ProfileError, match="portable"):
        load_profile(tmp_path / "portable-web.toml")


def test_serving_something_that_is_not_a_web_bundle_is_one_line_exit_2(tmp_path, capsys, sharp_checkpoint):
    capsys.readouterr()
    for target in (tmp_path / "nothing", sharp_checkpoint):
        assert main(["web", str(target), "--port", "0"]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and str(target) in lines[0], lines


# ---------------------------------------------------------------------------------------------
# The server and the page in a real browser


def test_the_server_isolates_the_page_and_keeps_requests_inside_its_roots(web_fp32):
    from ekd_edge.runtime.web_server import serve_in_background

    server, url = serve_in_background(web_fp32)
    try:
        with urllib.request.urlopen(url + "bundle/runtime/ort-wasm-simd-threaded.wasm") as response:
            assert response.headers["Cross-Origin-Opener-Policy"] == "same-origin"
            assert response.headers["Cross-Origin-Embedder-Policy"] == "require-corp"
            assert response.headers["Content-Type"] == "application/wasm"
        with urllib.request.urlopen(url) as response:
            assert b"app.mjs" in response.read()
        with urllib.request.urlopen(url + "bundle/translator.mjs") as response:
            assert response.headers["Content-Type"].startswith("text/javascript")
        for escape in ("bundle/../../etc/passwd", "bundle/%2e%2e/%2e%2e/etc/passwd", "../manifest.json"):
            try:
                with urllib.request.urlopen(url + escape) as response:
                    assert b"root:" not in response.read()
            except urllib.error.HTTPError as err:
                assert err.code == 404
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def browser_ready(node_ready):
    _require(["npm package playwright-core", "chromium"])


@pytest.mark.slow
def test_the_page_translates_like_pytorch_in_headless_chromium(browser_ready, web_fp32, sharp_checkpoint, test_split):
    from ekd_edge.bench.browser import translate_in_browser
    from ekd_edge.runtime.torch_engine import TorchTranslator

    texts = test_split.head(40).src
    torch = TorchTranslator(sharp_checkpoint)
    expected_ids = torch.generate_ids(texts)
    expected_text = torch.decode(expected_ids)
    result = translate_in_browser(web_fp32, texts, threads=(1, 2), encode=True)
    assert result["browser"].startswith("chromium")
    expected_source = load_tokenizer(sharp_checkpoint)(texts, truncation=True, max_length=64)["input_ids"]
    for run in result["runs"]:
        info = run["info"]
        assert info["crossOriginIsolated"] is True and info["threads"] == run["threads"], info
        assert run["problems"] == []
        assert run["encoded"] == expected_source
        got = run["translations"]
        assert [t["ids"] for t in got] == expected_ids, f"{run['threads']} thread(s)"
        assert [t["text"] for t in got] == expected_text
        assert all(t["ms"] > 0 for t in got)
        assert info["payload"]["runtime_bytes"] > 1_000_000 and info["payload"]["model_bytes"] > 10_000


@pytest.mark.slow
def test_the_browser_benchmark_runs_at_smoke_size(browser_ready, tmp_path):
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(root / "benchmarks" / "web_latency.py"), "--smoke", "--out", str(out),
                           "--work-dir", str(tmp_path / "work")], capture_output=True, text=True, timeout=900,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:] + proc.stdout[-2000:]
    result = json.loads((out / "result.json").read_text())
    engines = [row["engine"] for row in result["latency"]]
    assert engines == ["browser WebAssembly, 1 thread", "browser WebAssembly, 2 threads", "native onefile-int8-x86",
                       "native ct2-int8"]
    assert all(row["p50_ms"] > 0 for row in result["latency"])
    # the page runs the bundle's WebAssembly: the same ids as in Node
    assert result["browser_ids_equal_node"] == {"1": result["sentences"], "2": result["sentences"]}
    sizes = {f["path"]: f["size"] for f in json.loads((tmp_path / "work" / "web-int8" / "manifest.json").read_text())["files"]}
    assert result["payload"]["runtime_bytes"] >= sizes["runtime/ort-wasm-simd-threaded.wasm"]
    assert result["provenance"]["settings"]["smoke"] is True
    assert "## Provenance" in (out / "result.md").read_text()
