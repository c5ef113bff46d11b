"""ONNX export: parity with PyTorch, int8, the manifest's integrity checks and atomic output.

All models are tiny real Marian checkpoints built from the bundled corpus; nothing is mocked.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest

from ekd_edge.errors import BundleError
from ekd_edge.export import export_bundle
from ekd_edge.export.parity import check_parity_gate, token_agreement
from ekd_edge.runtime.manifest import verify_bundle
from ekd_edge.runtime.onnx_engine import OnnxTranslator
from ekd_edge.export import onnx_export
from ekd_edge.runtime.manifest import MANIFEST_NAME
from ekd_edge.hashing import file_sha256
from ekd_edge.runtime.torch_engine import TorchTranslator
from ekd_edge.runtime import load_translator

PARITY_SENTENCES = 30
MODEL_FILES = {"encoder_model.onnx", "decoder_model_merged.onnx"}


@pytest.fixture(scope="module")
def parity_texts(lo_valid):
    return lo_valid.src[:PARITY_SENTENCES]


# tiny models gain nothing from threads, and on a busy 2-core machine two threads can be 50x slower
pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.fixture(scope="module")
def reference(sharp_checkpoint):
    return TorchTranslator(sharp_checkpoint)


@pytest.fixture(scope="module")
def fp32_bundle(sharp_checkpoint, parity_texts, tmp_path_factory):
    out = tmp_path_factory.mktemp("bundles") / "fp32"
    steps = []
    with pytest.MonkeyPatch.context() as mp:
        # The export must work offline: any connection attempt fails the build.
        def no_network(*args, **kwargs):
            raise RuntimeError("network access attempted during export")

        mp.setattr(socket.socket, "connect", no_network)
        mp.setattr(socket, "create_connection", no_network)
        manifest = export_bundle(sharp_checkpoint, out, parity_texts=parity_texts, max_new_tokens=48,
                                 progress=steps.append)
    assert steps, "progress callback was never called"
    return out, manifest


def _copy_bundle(bundle: Path, dest: Path) -> Path:
    shutil.copytree(bundle, dest)
    return dest


def _rehash(bundle: Path, record: bool = False) -> None:
    """Bring manifest.json's file list in line with the files, as a careless re-packager would; with
    ``record`` the gates' verified record too, as only a deliberate edit does."""
    manifest = json.loads((bundle / MANIFEST_NAME).read_text())
    for entry in manifest["files"]:
        path = bundle / entry["path"]
        entry["sha256"], entry["size"] = file_sha256(path), path.stat().st_size
        if record and entry["path"] in manifest["verified"]["graphs"]:
            manifest["verified"]["graphs"][entry["path"]]["sha256"] = entry["sha256"]
    (bundle / MANIFEST_NAME).write_text(json.dumps(manifest))


def _break_decoder(bundle: Path) -> None:
    """Shuffle the largest weight of the merged decoder: a graph that loads and runs, but wrongly."""
    import onnx
    from onnx import numpy_helper

    path = bundle / "decoder_model_merged.onnx"
    model = onnx.load(str(path))
    target = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    weights = numpy_helper.to_array(target).copy()
    flat = weights.reshape(-1)
    np.random.default_rng(0).shuffle(flat)
    target.CopyFrom(numpy_helper.from_array(flat.reshape(weights.shape), target.name))
    onnx.save(model, str(path))


def _tree(directory: Path) -> dict:
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def _leftovers(parent: Path) -> list[str]:
    return [p.name for p in parent.iterdir() if p.name.startswith(".")]


def test_fp32_export_passes_parity_gate_and_verifies(fp32_bundle, reference, parity_texts):
    bundle, manifest = fp32_bundle
    # The gate is only meaningful if the model's output depends on its input.
    ref_ids = reference.generate_ids(parity_texts, max_new_tokens=48)
    assert len({tuple(ids) for ids in ref_ids}) > 1

    parity = manifest["parity"]
    assert parity["status"] == "passed" and parity["gated"] is True
    assert parity["n"] == PARITY_SENTENCES and parity["rate"] == 1.0 and parity["first_mismatch"] is None

    assert verify_bundle(bundle) == json.loads((bundle / MANIFEST_NAME).read_text())
    names = {entry["path"] for entry in manifest["files"]}
    assert MODEL_FILES <= names
    assert {"config.json", "generation_config.json", "source.spm", "target.spm", "vocab.json"} <= names
    # The merged decoder replaces the two separate ones.
    assert not names & {"decoder_model.onnx", "decoder_with_past_model.onnx"}
    assert manifest["total_size"] == sum(e["size"] for e in manifest["files"])
    assert manifest["variant"] == "fp32"
    assert manifest["settings"] == {"quantize": None, "arch": None, "max_new_tokens": 48,
                                    "numerics": "fast", "graph_optimization_level": "all"}
    assert set(manifest["versions"]) >= {"ekd_edge", "torch", "transformers", "optimum", "onnx", "onnxruntime"}
    source = Path(manifest["source"]["checkpoint"])
    assert manifest["source"]["model_sha256"] == hashlib.sha256((source / "model.safetensors").read_bytes()).hexdigest()
    from ekd_edge.data.tokenizer import vocab_fingerprint

    assert manifest["tokenizer"]["vocab_fingerprint"] == vocab_fingerprint(source)


def test_onnx_translator_matches_torch_translator(fp32_bundle, reference, parity_texts):
    bundle, _ = fp32_bundle
    onnx_tr = load_translator(bundle, threads=1)
    assert isinstance(onnx_tr, OnnxTranslator)
    assert onnx_tr.engine == "onnxruntime" and onnx_tr.variant == "fp32"
    texts = parity_texts[:10]
    assert onnx_tr.translate(texts, batch_size=4, max_new_tokens=24) == reference.translate(
        texts, batch_size=4, max_new_tokens=24)
    result = token_agreement(reference, onnx_tr, texts, max_new_tokens=24, batch_size=3)
    assert result == {"rate": 1.0, "n": 10, "n_equal": 10, "first_mismatch": None}


def test_int8_export_is_smaller_and_records_agreement(fp32_bundle, sharp_checkpoint, parity_texts, tmp_path):
    fp32_dir, fp32_manifest = fp32_bundle
    out = _copy_bundle(fp32_dir, tmp_path / "bundle")  # an earlier bundle here is replaced
    manifest = export_bundle(sharp_checkpoint, out, quantize="int8", quant_arch="avx2",
                             parity_texts=parity_texts, max_new_tokens=48)

    def model_bytes(m):
        return sum(e["size"] for e in m["files"] if e["path"] in MODEL_FILES)

    assert model_bytes(manifest) < model_bytes(fp32_manifest)
    assert manifest["variant"] == "int8"
    assert manifest["settings"] == {"quantize": "int8", "arch": "avx2", "max_new_tokens": 48,
                                    "numerics": "fast", "graph_optimization_level": "all"}
    # the quantiser's intermediate shape annotations are dropped: onnxruntime infers shapes itself
    import onnx

    assert not onnx.load(str(out / "decoder_model_merged.onnx")).graph.value_info
    parity = manifest["parity"]
    assert parity["status"] == "measured" and parity["gated"] is False
    assert parity["n"] == PARITY_SENTENCES and 0.0 <= parity["rate"] <= 1.0
    # The same file names as fp32, so optimum's loader finds them.
    assert MODEL_FILES <= {e["path"] for e in manifest["files"]}
    assert json.loads((out / MANIFEST_NAME).read_text())["variant"] == "int8"
    translator = OnnxTranslator(out)
    assert translator.variant == "int8"
    assert len(translator.translate(parity_texts[:3], max_new_tokens=16)) == 3
    assert not _leftovers(tmp_path)


def test_reexport_replaces_bundle_and_records_parity_not_run(fp32_bundle, nano_checkpoint, tmp_path):
    out = _copy_bundle(fp32_bundle[0], tmp_path / "bundle")
    assert verify_bundle(out)["parity"]["status"] == "passed"   # the earlier, gated export
    manifest = export_bundle(nano_checkpoint, out)
    assert manifest["parity"] == {"status": "not run"}
    assert verify_bundle(out)["parity"] == {"status": "not run"}   # replaced by the new one
    assert verify_bundle(out)["source"]["checkpoint"] == str(Path(nano_checkpoint).resolve())
    assert not _leftovers(tmp_path)

    # This model never emits EOS, so both engines run into the position-table cap the same way.
    texts = ["Macro", "Runs or saves the current macro."]
    onnx_ids = OnnxTranslator(out).generate_ids(texts, max_new_tokens=500)
    assert onnx_ids == TorchTranslator(nano_checkpoint).generate_ids(texts, max_new_tokens=500)
    assert max(len(ids) for ids in onnx_ids) < 500


def test_broken_export_fails_parity_gate_and_writes_nothing(sharp_checkpoint, parity_texts, reference, tmp_path,
                                                            monkeypatch):
    real_export = onnx_export.export_onnx

    def broken_export(checkpoint_dir, out_dir, scratch):
        real_export(checkpoint_dir, out_dir, scratch)
        _break_decoder(Path(out_dir))
        return out_dir

    monkeypatch.setattr(onnx_export, "export_onnx", broken_export)
    out = tmp_path / "bundle"
    with pytest.raises(BundleError, match=r"parity gate failed.*first mismatch: sentence \d+ ") as err:
        export_bundle(sharp_checkpoint, out, parity_texts=parity_texts, max_new_tokens=48)
    assert "\n" not in str(err.value)
    assert not out.exists() and not _leftovers(tmp_path)

    # force=True writes it anyway, with the failure on record.
    manifest = export_bundle(sharp_checkpoint, out, parity_texts=parity_texts, max_new_tokens=48, force=True)
    assert manifest["parity"]["status"] == "failed" and manifest["parity"]["forced"] is True
    assert manifest["parity"]["rate"] < 0.99 and manifest["parity"]["first_mismatch"]["text"] in parity_texts
    verify_bundle(out)

    # The gate itself works on any pair of translators.
    with pytest.raises(BundleError, match="parity gate failed"):
        check_parity_gate(reference, OnnxTranslator(out), parity_texts[:10], max_new_tokens=48)


def test_broken_and_rehashed_bundle_fails_parity_gate(fp32_bundle, reference, parity_texts, tmp_path):
    bundle = _copy_bundle(fp32_bundle[0], tmp_path / "broken")
    _break_decoder(bundle)
    with pytest.raises(BundleError, match="sha256 differs"):
        verify_bundle(bundle)
    _rehash(bundle)
    with pytest.raises(BundleError, match="not the graph the export's gates verified"):
        verify_bundle(bundle)
    _rehash(bundle, record=True)
    candidate = OnnxTranslator(bundle)  # integrity alone does not prove correctness...
    with pytest.raises(BundleError, match=r"parity gate failed.*first mismatch"):
        check_parity_gate(reference, candidate, parity_texts, max_new_tokens=48)  # ...the gate does


@pytest.mark.parametrize("tamper, message", [
    ("modify", r"encoder_model\.onnx: (sha256|size) .*differs"),
    ("truncate", r"encoder_model\.onnx: size \d+ differs"),
    ("delete", r"missing encoder_model\.onnx"),
    ("add", r"not listed in manifest\.json: extra\.onnx"),
])
def test_tampered_bundle_is_refused(fp32_bundle, tmp_path, tamper, message):
    bundle = _copy_bundle(fp32_bundle[0], tmp_path / "bundle")
    target = bundle / "encoder_model.onnx"
    data = bytearray(target.read_bytes())
    if tamper == "modify":
        data[len(data) // 2] ^= 0xFF
        target.write_bytes(bytes(data))
    elif tamper == "truncate":
        target.write_bytes(bytes(data[:-10]))
    elif tamper == "delete":
        target.unlink()
    else:
        (bundle / "extra.onnx").write_bytes(bytes(data))
    for check in (verify_bundle, OnnxTranslator, load_translator):
        with pytest.raises(BundleError, match=message) as err:
            check(bundle)
        assert "\n" not in str(err.value)


@pytest.mark.parametrize("bad_path", ["../outside.onnx", "/etc/passwd", "sub/../../x", "C:/x.onnx", "a\\..\\b"])
def test_manifest_entry_outside_bundle_is_refused(fp32_bundle, tmp_path, bad_path):
    bundle = _copy_bundle(fp32_bundle[0], tmp_path / "bundle")
    (tmp_path / "outside.onnx").write_bytes(b"x")
    manifest = json.loads((bundle / MANIFEST_NAME).read_text())
    manifest["files"].append({"path": bad_path, "sha256": "0" * 64, "size": 1})
    (bundle / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="manifest.json") as err:
        verify_bundle(bundle)
    assert "\n" not in str(err.value)


def test_symlink_out_of_bundle_is_refused(fp32_bundle, tmp_path):
    bundle = _copy_bundle(fp32_bundle[0], tmp_path / "bundle")
    outside = tmp_path / "vocab.json"
    shutil.move(bundle / "vocab.json", outside)
    (bundle / "vocab.json").symlink_to(outside)
    with pytest.raises(BundleError, match="outside the bundle"):
        verify_bundle(bundle)


def test_unrelated_output_dir_is_refused_and_unchanged(sharp_checkpoint, tmp_path):
    out = tmp_path / "results"
    out.mkdir()
    (out / "notes.txt").write_text("not a bundle")
    (out / "sub").mkdir()
    (out / "sub" / "data.bin").write_bytes(b"\x00\x01")
    before = _tree(out)
    with pytest.raises(BundleError, match="refusing") as err:
        export_bundle(sharp_checkpoint, out)
    assert "\n" not in str(err.value) and str(out) in str(err.value)
    assert _tree(out) == before and not _leftovers(tmp_path)

    a_file = tmp_path / "file.onnx"
    a_file.write_bytes(b"x")
    with pytest.raises(BundleError, match="refusing"):
        export_bundle(sharp_checkpoint, a_file)
    assert a_file.read_bytes() == b"x"


@pytest.mark.parametrize("kwargs, message", [
    ({"quantize": "int4"}, "unknown quantisation 'int4'"),
    ({"quantize": "int8", "quant_arch": "sse2"}, "unknown quantisation arch 'sse2'"),
    ({"parity_threshold": 1.5}, "outside"),
])
def test_bad_options_are_refused_before_any_work(sharp_checkpoint, tmp_path, kwargs, message):
    with pytest.raises(BundleError, match=message):
        export_bundle(sharp_checkpoint, tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()


def test_checkpoint_is_validated_first(tmp_path):
    from ekd_edge.errors import CheckpointError

    with pytest.raises(CheckpointError, match="not a checkpoint"):
        export_bundle(tmp_path, tmp_path / "out")
