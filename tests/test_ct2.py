"""CTranslate2 bundles: same tokens as PyTorch in float32, int8, dispatch, and tamper checks."""

from __future__ import annotations

import pytest

from ekd_edge.errors import BundleError
from ekd_edge.export.ct2 import Ct2Translator, export_ct2_bundle
from ekd_edge.translate import TorchTranslator, load_translator


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
