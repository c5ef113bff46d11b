"""Portable numerics: the Softmax/LayerNorm rewrite, its manifest record, and every loader honouring it.

The property the rewrite exists for (x86 and aarch64 decode the same tokens) needs the aarch64
root under qemu; that check runs here when the root is built and is otherwise skipped, and
benchmarks/arm_agreement.py measures it on the whole test split.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from ekd_edge.export.onnx_export import export_bundle, make_graphs_portable
from ekd_edge.export.portable import make_portable, optimization_level
from ekd_edge.export.profiles import ProfileError, load_profile, parse_profile

GRAPHS = ("encoder_model.onnx", "decoder_model_merged.onnx")


# tiny models gain nothing from threads, and on a busy 2-core machine two threads can be 50x slower
pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.fixture(scope="module")
def texts(lo_valid):
    return lo_valid.src[:12]


@pytest.fixture(scope="module")
def fp32_dir(nano_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("portable") / "fp32"
    export_bundle(nano_checkpoint, out, max_new_tokens=24)
    return out


@pytest.fixture(scope="module")
def portable_int8(nano_checkpoint, texts, tmp_path_factory):
    out = tmp_path_factory.mktemp("portable") / "int8"
    manifest = export_bundle(nano_checkpoint, out, quantize="int8", quant_arch="arm64", portable=True,
                             parity_texts=texts, max_new_tokens=24, mobile="arm")
    return out, manifest


def _op_types(path) -> list[str]:
    import onnx

    found = []

    def walk(graph):
        for node in graph.node:
            found.append(node.op_type)
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    walk(attr.g)

    walk(onnx.load(str(path)).graph)
    return found


def _encoder_out(path, ids, level="ORT_ENABLE_BASIC", threads=1):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids)})[0]


def test_rewrite_removes_the_fused_ops_and_keeps_the_numbers(fp32_dir, nano_checkpoint, tmp_path, texts):
    from ekd_edge.data.tokenizer import load_tokenizer

    portable = tmp_path / "portable"
    shutil.copytree(fp32_dir, portable)
    counts = make_graphs_portable(portable)
    # nano: 1 + 1 layers; the encoder has 1 Softmax, the merged decoder two branches of 2 each
    assert counts["encoder_model.onnx"]["Softmax"] >= 1 and counts["encoder_model.onnx"]["LayerNormalization"] >= 2
    assert counts["decoder_model_merged.onnx"]["Softmax"] >= 2
    for name in GRAPHS:
        ops = _op_types(portable / name)
        assert "Softmax" not in ops and "LayerNormalization" not in ops
        assert "ReduceSum" in ops and "Cast" in ops
    ids = np.asarray([load_tokenizer(nano_checkpoint)(texts[0])["input_ids"]], dtype=np.int64)
    before = _encoder_out(fp32_dir / GRAPHS[0], ids, "ORT_ENABLE_ALL")
    after = _encoder_out(portable / GRAPHS[0], ids)
    assert before.shape == after.shape
    np.testing.assert_allclose(after, before, atol=2e-5, rtol=1e-5)
    # the rewrite is idempotent: a portable graph has nothing left to replace
    assert make_portable(portable / GRAPHS[0]) == {"Softmax": 0, "LayerNormalization": 0}


def test_portable_int8_bundle_records_and_applies_its_session_level(portable_int8, texts):
    import onnxruntime as ort

    from ekd_edge.bench.ort_greedy import GreedyDecoder
    from ekd_edge.export import OnnxTranslator

    out, manifest = portable_int8
    assert manifest["settings"]["numerics"] == "portable"
    assert manifest["settings"]["graph_optimization_level"] == "basic"
    assert optimization_level(manifest["settings"]) == ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    assert optimization_level({}) == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert set(manifest["portable"]) == set(GRAPHS)
    assert manifest["mobile"]["optimization_style"] == "Runtime"
    assert set(manifest["mobile"]["ort_files"]) == {"encoder_model.ort", "decoder_model_merged.ort"}
    for name in GRAPHS:
        assert "Softmax" not in _op_types(out / name) and "MatMulInteger" in _op_types(out / name)

    translator = OnnxTranslator(out)
    session = translator.model.encoder.session
    assert session.get_session_options().graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    decoder = GreedyDecoder(out, threads=1)
    assert decoder.optimization_level.endswith("ORT_ENABLE_BASIC")
    # both loaders decode the same tokens (generate vs the plain-onnxruntime loop), one sentence at
    # a time: int8 activation scales are per tensor, so a padded batch quantises differently
    for text in texts:
        expected = translator.generate_ids([text], max_new_tokens=24)[0]
        got = decoder.generate(translator.tokenizer(text)["input_ids"], max_new_tokens=24)
        assert got == [t for t in expected if t not in (0, 1)]


def test_portable_int8_is_bit_stable_across_threads_and_levels(portable_int8, nano_checkpoint, lo_valid):
    """With nothing fused, thread count and optimisation level cannot change a single bit."""
    from ekd_edge.data.tokenizer import load_tokenizer

    out, _ = portable_int8
    tokenizer = load_tokenizer(nano_checkpoint)
    for text in lo_valid.src[20:26]:
        ids = np.asarray([tokenizer(text)["input_ids"]], dtype=np.int64)
        reference = _encoder_out(out / GRAPHS[0], ids)
        assert np.array_equal(reference, _encoder_out(out / GRAPHS[0], ids, threads=2))
        assert np.array_equal(reference, _encoder_out(out / GRAPHS[0], ids, "ORT_DISABLE_ALL"))


def test_profiles_carry_the_portable_switch(tmp_path):
    assert load_profile("arm64").quantize.portable is True
    assert load_profile("android").quantize.portable is True
    assert load_profile("cpu-x86").quantize.portable is False
    with pytest.raises(ProfileError, match="quantize.portable applies to the ONNX formats"):
        parse_profile({"format": "ct2", "quantize": {"mode": "int8", "portable": True}}, "p.toml")
    with pytest.raises(ProfileError, match=r"portable: expected bool"):
        parse_profile({"quantize": {"portable": "yes"}}, "p.toml")


def test_aarch64_decodes_the_same_tokens_when_the_root_is_built(portable_int8, nano_checkpoint, lo_valid):
    from ekd_edge.bench.arm import ArmRoot, agreement, greedy_ids
    from ekd_edge.data.tokenizer import load_tokenizer

    root = ArmRoot()
    if not root.is_ready() or not shutil.which(root.qemu):
        pytest.skip("no aarch64 root (python benchmarks/arm_agreement.py --build-root builds it)")
    out, _ = portable_int8
    tokenizer = load_tokenizer(nano_checkpoint)
    id_lists = [tokenizer(t)["input_ids"] for t in lo_valid.src[:8]]
    native = greedy_ids(None, Path(out), id_lists, max_new_tokens=24)
    emulated = greedy_ids(root, Path(out), id_lists, max_new_tokens=24, timeout=300)
    assert agreement(native["ids"], emulated["ids"])["rate"] == 1.0
    assert emulated["machine"] == "aarch64"
