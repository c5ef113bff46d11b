"""The one-file model: strings in, strings out, equal to PyTorch generate on a tiny real Marian."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ekd_edge.errors import BundleError, CheckpointError
from ekd_edge.runtime.manifest import MANIFEST_NAME
from ekd_edge.runtime.onefile_engine import MODEL_FILE, OneFileTranslator, onefile_session, run_onefile, verify_onefile
from ekd_edge.export.onefile import export_onefile
from ekd_edge.runtime.torch_engine import TorchTranslator

SENTENCES = 30


# tiny models gain nothing from threads, and on a busy 2-core machine two threads can be 50x slower
pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.fixture(scope="module")
def texts(lo_valid):
    return lo_valid.src[:SENTENCES]


@pytest.fixture(scope="module")
def reference(sharp_checkpoint):
    return TorchTranslator(sharp_checkpoint)


@pytest.fixture(scope="module")
def onefile_fp32(sharp_checkpoint, texts, tmp_path_factory):
    out = tmp_path_factory.mktemp("onefile") / "fp32"
    steps = []
    manifest = export_onefile(sharp_checkpoint, out, parity_texts=texts, max_new_tokens=32, progress=steps.append)
    assert steps
    return out, manifest


def test_fp32_passes_parity_gate_and_ships_one_verified_file(onefile_fp32):
    out, manifest = onefile_fp32
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST_NAME, MODEL_FILE]
    assert manifest["parity"]["status"] == "passed" and manifest["parity"]["rate"] >= 0.99
    assert manifest["backend"] == "onefile" and manifest["variant"] == "onefile-fp32"
    assert manifest["versions"]["onnxruntime-extensions"]
    assert verify_onefile(out)["files"] == manifest["files"]


def test_greedy_strings_and_ids_equal_pytorch_generate(onefile_fp32, reference, texts):
    translator = OneFileTranslator(onefile_fp32[0])
    expected = reference.translate(texts, max_new_tokens=32)
    assert len(set(expected)) > 5, "the reference must depend on its input for this test to mean anything"
    assert translator.translate(texts, max_new_tokens=32) == expected
    assert translator.generate_ids(texts, max_new_tokens=32) == reference.generate_ids(texts, max_new_tokens=32)


def test_beam_search_equals_pytorch(onefile_fp32, reference, texts):
    # Both stop a sentence once num_beams hypotheses have ended (early stopping), so beam search
    # gives generate()'s hypotheses exactly; benchmarks/onefile_parity.py measures the demo model.
    translator = OneFileTranslator(onefile_fp32[0])
    expected = reference.generate_ids(texts, max_new_tokens=40, num_beams=3)
    got = translator.generate_ids(texts, max_new_tokens=40, num_beams=3)
    assert got == expected
    assert got != translator.generate_ids(texts, max_new_tokens=40, num_beams=1), "num_beams must change the search"


def test_length_limit_is_an_input(onefile_fp32, reference, texts):
    session = onefile_session(onefile_fp32[0] / MODEL_FILE)
    short, ids = run_onefile(session, texts[:4], max_new_tokens=3)
    assert ids.shape[1] <= 4
    assert short == reference.translate(texts[:4], max_new_tokens=3)


def test_tampered_model_is_refused(onefile_fp32, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(onefile_fp32[0], copy)
    with open(copy / MODEL_FILE, "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(BundleError, match="differs from manifest"):
        OneFileTranslator(copy)


def test_optimum_bundle_manifest_is_not_a_onefile_bundle(onefile_fp32, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(onefile_fp32[0], copy)
    manifest = json.loads((copy / MANIFEST_NAME).read_text())
    manifest["backend"] = "onnx"
    (copy / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="not a one-file bundle"):
        verify_onefile(copy)


def test_int8_export_records_agreement(onefile_fp32, sharp_checkpoint, texts, tmp_path):
    manifest = export_onefile(sharp_checkpoint, tmp_path / "int8", quantize="int8", parity_texts=texts,
                              max_new_tokens=32)
    assert manifest["variant"] == "onefile-int8"
    assert manifest["parity"]["status"] == "measured" and 0.0 <= manifest["parity"]["rate"] <= 1.0
    assert len(OneFileTranslator(tmp_path / "int8").translate(texts[:3])) == 3


def test_checkpoint_without_tokenizer_is_refused(sharp_checkpoint, tmp_path):
    broken = tmp_path / "ckpt"
    shutil.copytree(sharp_checkpoint, broken)
    (broken / "source.spm").unlink()
    with pytest.raises(CheckpointError, match="source.spm"):
        export_onefile(broken, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_cli_exports_onefile(sharp_checkpoint, tmp_path):
    from ekd_edge.cli import main

    out = tmp_path / "cli"
    assert main(["export", str(sharp_checkpoint), "--out", str(out), "--format", "onefile",
                 "--parity-sentences", "0"]) == 0
    assert verify_onefile(out)["settings"]["layout"] == "onefile"


def test_translate_and_bench_load_the_shipped_one_file_bundle(tmp_path):
    """`ekd-edge translate` and `ekd-edge bench` accept a one-file bundle like any other."""
    from pathlib import Path

    from ekd_edge.bench import benchmark_model
    from ekd_edge.runtime import load_translator

    bundle = Path(__file__).resolve().parents[1] / "android_demo" / "app" / "src" / "main" / "assets" / "model"
    translator = load_translator(bundle, threads=1)
    assert translator.engine == "onnxruntime-onefile"
    (german,) = translator.translate(["Open the file."], max_new_tokens=32)
    assert german.strip()
    row = benchmark_model(bundle, ["Open the file.", "Close"], ["Öffnen Sie die Datei.", "Schließen"], name="onefile",
                          role="student", latency_sentences=2, warmup=1, max_new_tokens=32, measure_memory=False)
    assert row["engine"] == "onnxruntime-onefile" and row["latency_p50_ms"] > 0 and row["size_mb"] > 1


def test_standalone_onefile_runner_matches_the_translator(onefile_fp32, texts):
    """ort_onefile.py (what runs under qemu or on a device, text in) decodes what OneFileTranslator decodes."""
    from ekd_edge.bench.arm import greedy_ids

    translator = OneFileTranslator(onefile_fp32[0])
    expected = [translator.generate_ids([t], max_new_tokens=24)[0] for t in texts]
    result = greedy_ids(None, onefile_fp32[0], list(texts), threads=1, max_new_tokens=24)
    assert result["ids"] == expected
    assert result["translations"] == translator.translate(list(texts), batch_size=1, max_new_tokens=24)
    assert len(result["seconds"]) == len(texts) and result["graph_optimization_level"].endswith("ENABLE_ALL")
    assert len({tuple(e) for e in expected}) > 1  # the outputs depend on the input


def test_empty_and_blank_texts_translate_to_empty_lines(onefile_fp32, reference, texts):
    translator = OneFileTranslator(onefile_fp32[0])
    got = translator.translate(["", texts[0], "   ", texts[1]], max_new_tokens=32)
    assert got[0] == "" and got[2] == ""
    assert got[1::2] == reference.translate(texts[:2], max_new_tokens=32)
    assert translator.generate_ids(["", " "], max_new_tokens=8) == [[], []]


def test_over_long_input_is_warned_about_not_cut_silently(onefile_fp32, texts, capsys):
    from ekd_edge.cli import main

    limit = onefile_fp32[1]["settings"]["max_positions"]
    long_text = " ".join(texts) * 3
    assert main(["translate", str(onefile_fp32[0]), texts[0], long_text]) == 0
    captured = capsys.readouterr()
    warnings = [line for line in captured.err.splitlines() if "warning:" in line]
    assert len(warnings) == 1 and "argument 2:" in warnings[0] and f"reads only the first {limit}" in warnings[0]
    assert len(captured.out.splitlines()) == 2


def test_onefile_export_runs_the_quality_gate(sharp_checkpoint, lo_train, tmp_path):
    data = (lo_train.src[:20], lo_train.tgt[:20])
    manifest = export_onefile(sharp_checkpoint, tmp_path / "q", quality_data=data, max_new_tokens=32)
    gate = manifest["quality_gate"]
    assert gate["status"] == "passed" and gate["sentences"] == 20 and gate["bleu_drop"] == 0.0


def test_the_app_runtime_probe_runs_the_model_with_onnxruntime_alone(onefile_fp32, texts, monkeypatch):
    """The memory a phone pays: no torch in the process, and the model really translated there."""
    import subprocess
    import sys

    from ekd_edge.bench.probe import measure_app_footprint
    from ekd_edge.runtime.onefile_engine import OneFileTranslator

    out, _ = onefile_fp32
    monkeypatch.chdir(out.parent)   # a relative bundle path, as `ekd-edge demo` passes it
    probe = measure_app_footprint(Path(out.name), "onnxruntime-onefile", texts[:4], 1, max_new_tokens=32,
                                  timeout=300)
    assert probe["torch_imported"] is False and probe["runner"] == "ort_onefile.py"
    assert probe["idle_rss_mb"] <= probe["loaded_rss_mb"] <= probe["peak_rss_mb"] and probe["model_mb"] > 0
    assert probe["translations"] == OneFileTranslator(out).translate(texts[:4], batch_size=1, max_new_tokens=32)
    # the package's own loader finds the extensions' library the same way: torch stays out of it too
    code = ("import sys; from ekd_edge.runtime.onefile_engine import OneFileTranslator; "
            f"OneFileTranslator({str(out)!r}).translate(['Macro']); print('torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "False", proc.stderr[-500:]
