"""CTranslate2 bundles: same tokens as PyTorch in float32, int8, dispatch, and tamper checks."""

from __future__ import annotations

import pytest

from ekd_edge.errors import BundleError
from ekd_edge.runtime.ct2_engine import Ct2Translator
from ekd_edge.export.ct2 import export_ct2_bundle
from ekd_edge.runtime.torch_engine import TorchTranslator
from ekd_edge.runtime import load_translator


@pytest.fixture(scope="module")
def ct2_fp32(nano_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("ct2") / "fp32"
    export_ct2_bundle(nano_checkpoint, out, quantization="float32")
    return out


def test_float32_bundle_decodes_the_same_tokens_as_pytorch(ct2_fp32, nano_checkpoint, lo_valid):
    translator = load_translator(ct2_fp32)
    assert isinstance(translator, Ct2Translator) and translator.engine == "ctranslate2"
    reference = TorchTranslator(nano_checkpoint)
    texts = lo_valid.src[:20]
    expected = [reference.generate_ids([t], max_new_tokens=24)[0] for t in texts]
    assert translator.generate_ids(texts, max_new_tokens=24) == expected
    assert len(set(map(tuple, expected))) > 3  # the check means something only if outputs differ


def test_int8_bundle_passes_its_quality_gate_and_records_it(nano_checkpoint, lo_valid, tmp_path):
    data = (lo_valid.src[:30], lo_valid.tgt[:30])
    manifest = export_ct2_bundle(nano_checkpoint, tmp_path / "int8", quantization="int8", quality_data=data,
                                 max_bleu_drop=100.0, max_new_tokens=24)
    assert manifest["backend"] == "ct2" and manifest["variant"] == "int8"
    gate = manifest["quality_gate"]
    assert gate["status"] == "passed" and gate["sentences"] == 30 and "checkpoint_bleu" in gate
    assert any(f["path"] == "ct2/model.bin" for f in manifest["files"])
    assert load_translator(tmp_path / "int8").translate(["Click OK."], max_new_tokens=16)


def test_tampered_ct2_bundle_is_refused(ct2_fp32, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(ct2_fp32, copy)
    weights = copy / "ct2" / "model.bin"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="sha256 differs"):
        load_translator(copy)


def test_unknown_quantization_is_refused(nano_checkpoint, tmp_path):
    with pytest.raises(BundleError, match="unknown ct2 quantization"):
        export_ct2_bundle(nano_checkpoint, tmp_path / "x", quantization="int4")
    assert not (tmp_path / "x").exists()


def test_float32_export_runs_the_parity_gate(nano_checkpoint, lo_valid, tmp_path):
    manifest = export_ct2_bundle(nano_checkpoint, tmp_path / "fp32", quantization="float32",
                                 parity_texts=lo_valid.src[:20], max_new_tokens=24)
    parity = manifest["parity"]
    assert parity["status"] == "passed" and parity["gated"] and parity["n"] == 20 and parity["n_equal"] == 20


def _untrained(checkpoint, out):
    from ekd_edge.data.tokenizer import load_tokenizer
    from ekd_edge.models import build_model, save_model

    return save_model(build_model("nano", len(load_tokenizer(checkpoint)), seed=3, max_positions=64), out,
                      tokenizer_dir=checkpoint)


def test_parity_gate_refuses_a_float32_bundle_that_decodes_differently(sharp_checkpoint, lo_train, tmp_path,
                                                                       monkeypatch):
    import ctranslate2.converters

    # A converter that (wrongly) converts other weights: the bundle's tokens differ from the checkpoint's.
    other = _untrained(sharp_checkpoint, tmp_path / "other")
    real = ctranslate2.converters.TransformersConverter
    monkeypatch.setattr(ctranslate2.converters, "TransformersConverter", lambda path, **kw: real(str(other), **kw))
    out = tmp_path / "bundles" / "fp32"
    with pytest.raises(BundleError, match="parity gate failed"):
        export_ct2_bundle(sharp_checkpoint, out, quantization="float32", parity_texts=lo_train.src[:20],
                          max_new_tokens=24)
    assert not (tmp_path / "bundles").exists() or not list((tmp_path / "bundles").iterdir())


def test_quality_gate_refuses_a_bundle_that_translates_worse(sharp_checkpoint, lo_train, tmp_path):
    # An untrained model of the same vocabulary, judged against the trained checkpoint on the very
    # pairs that checkpoint learned: its BLEU is far lower, so the gate must refuse it.
    untrained = _untrained(sharp_checkpoint, tmp_path / "untrained")
    data = (lo_train.src[:30], lo_train.tgt[:30])
    with pytest.raises(BundleError, match="quality gate failed") as err:
        export_ct2_bundle(untrained, tmp_path / "int8", quantization="int8", quality_data=data,
                          quality_reference=sharp_checkpoint, max_bleu_drop=1.0, max_new_tokens=24)
    assert "nothing written" in str(err.value) and not (tmp_path / "int8").exists()


def test_the_app_runtime_probe_runs_ct2_with_ctranslate2_and_sentencepiece_alone(ct2_fp32, nano_checkpoint, lo_valid):
    from ekd_edge.bench.probe import measure_app_footprint
    from ekd_edge.runtime.ct2_engine import Ct2Translator

    texts = lo_valid.src[:4]
    probe = measure_app_footprint(ct2_fp32, "ctranslate2", texts, 1, max_new_tokens=32, timeout=300)
    assert probe["torch_imported"] is False and probe["model_mb"] > 0
    assert probe["translations"] == Ct2Translator(ct2_fp32).translate(texts, batch_size=1, max_new_tokens=32)
    assert measure_app_footprint(nano_checkpoint, "pytorch", texts) is None   # no app runtime for a checkpoint
