"""The lean Marian graphs (export/marian_graph.py) compute what PyTorch computes, and the int8 block format."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ekd_edge.errors import BundleError, ProfileError
from ekd_edge.export.marian_graph import block_size_for, int8_blocks, write_marian_graphs

INT8_BLOCK = 32

pytestmark = pytest.mark.usefixtures("single_torch_thread")


FUSED = {"plain": (), "attention-op": ("MultiHeadAttention",),
         "attention-and-norm-ops": ("MultiHeadAttention", "SkipLayerNormalization")}


@pytest.fixture(scope="module", params=sorted(FUSED))
def graphs(request, sharp_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("lean") / "graphs"
    return write_marian_graphs(sharp_checkpoint, out, fused_ops=FUSED[request.param]), FUSED[request.param]


@pytest.fixture(scope="module")
def batch():
    # two rows, the second padded: the padding mask and the positions both matter
    ids = np.array([[5, 17, 99, 30, 41, 1], [7, 8, 9, 1, 0, 0]], np.int64)
    mask = np.array([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]], np.int64)
    return ids, mask


def _session(path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _run(session, feeds):
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))


def test_three_steps_of_lean_graphs_equal_pytorch_logits(graphs, sharp_checkpoint, batch):
    import torch
    from transformers import MarianMTModel

    graphs, _ = graphs
    ids, mask = batch
    model = MarianMTModel.from_pretrained(sharp_checkpoint).eval()
    decoder_ids = torch.tensor([[0, 11, 25], [0, 12, 6]])
    with torch.no_grad():
        encoded = model.model.encoder(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)).last_hidden_state
        expected = model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                         decoder_input_ids=decoder_ids).logits.numpy()

    hidden = _run(_session(graphs / "encoder_model.onnx"), {"input_ids": ids, "attention_mask": mask})["last_hidden_state"]
    real = mask.astype(bool)
    np.testing.assert_allclose(hidden[real], encoded.numpy()[real], atol=1e-4)

    first = _run(_session(graphs / "decoder_model.onnx"), {"input_ids": decoder_ids[:, :1].numpy(),
                                                          "encoder_attention_mask": mask,
                                                          "encoder_hidden_states": hidden})
    logits = [first["logits"][:, 0]]
    cache = {name.replace("present", "past_key_values"): value for name, value in first.items() if name != "logits"}
    step = _session(graphs / "decoder_with_past_model.onnx")
    for position in (1, 2):  # each later step reads its position from the cache length
        out = _run(step, {"input_ids": decoder_ids[:, position:position + 1].numpy(), "encoder_attention_mask": mask,
                          **cache})
        logits.append(out["logits"][:, 0])
        cache.update({name.replace("present", "past_key_values"): value for name, value in out.items()
                      if name != "logits"})
        assert cache["past_key_values.0.decoder.key"].shape[2] == position + 1
    np.testing.assert_allclose(np.stack(logits, axis=1), expected, atol=1e-4)


def test_a_decoder_step_is_a_fraction_of_optimums_nodes(graphs, sharp_checkpoint, tmp_path):
    import onnx

    from ekd_edge.export.onefile import export_separate_graphs

    graphs, fused = graphs
    step = onnx.load(str(graphs / "decoder_with_past_model.onnx"))
    layers = json.loads((graphs / "config.json").read_text())["decoder_layers"]
    # per layer: q/k/v as one product, the cross-attention query, two output projections, two FFN
    # products, and two products in each attention (scores, context) unless one kernel attends;
    # plus the output projection
    products = [n for n in step.graph.node if n.op_type in ("MatMul", "FusedMatMul")]
    kinds = [n.op_type for n in step.graph.node]
    if "MultiHeadAttention" in fused:
        assert len(products) == 6 * layers + 1 and kinds.count("MultiHeadAttention") == 2 * layers
        assert "Concat" not in kinds and "Softmax" not in kinds
    else:
        assert len(products) == 10 * layers + 1 and "MultiHeadAttention" not in kinds
    norms = 3 * layers  # after self-attention, cross-attention and the feed-forward block
    if "SkipLayerNormalization" in fused:
        assert kinds.count("SkipLayerNormalization") == norms and "LayerNormalization" not in kinds
    else:
        assert kinds.count("LayerNormalization") == norms
    # cache outputs come straight from the node that makes them: no Identity copies per step
    assert "Identity" not in kinds
    if not fused:  # the plain graphs have the most nodes: fused ones are smaller still
        traced = onnx.load(str(export_separate_graphs(sharp_checkpoint, tmp_path / "traced", tmp_path / "raw")
                               / "decoder_with_past_model.onnx"))
        assert len(step.graph.node) * 3 < len(traced.graph.node)


def test_int8_blocks_round_trip_within_half_a_step_and_keep_each_blocks_extreme():
    rng = np.random.default_rng(0)
    matrix = rng.normal(size=(7, 3 * INT8_BLOCK)).astype(np.float32)
    matrix[2] = 0.0                        # an all-zero row must not divide by zero
    matrix[4, 5] = -9.0                    # a negative extreme maps to -128 exactly
    q, scales = int8_blocks(matrix, INT8_BLOCK)
    assert q.dtype == np.uint8 and q.shape == (7, 3, INT8_BLOCK) and scales.shape == (7, 3)
    restored = ((q.astype(np.float32) - 128) * scales[..., None]).reshape(matrix.shape)
    step = np.repeat(np.abs(scales), INT8_BLOCK, axis=1)
    assert np.all(np.abs(restored - matrix) <= step / 2 + 1e-7)
    assert restored[4, 5] == pytest.approx(-9.0, abs=0) and q[4, 0, 5] == 0
    assert np.all(restored[2] == 0)


def test_blockwise_one_file_stores_the_tied_table_once_and_tracks_pytorch(sharp_checkpoint, lo_valid, tmp_path):
    import onnx

    from ekd_edge.export.onefile import export_onefile

    texts = lo_valid.src[:30]
    manifest = export_onefile(sharp_checkpoint, tmp_path / "block", quantize="int8", int8_kernel="blockwise",
                              parity_texts=texts, max_new_tokens=32)
    assert manifest["settings"]["int8_kernel"] == "blockwise" and manifest["settings"]["graphs"] == "lean"
    # int8 flips near-tied tokens of this tiny model (~77 % identical here); a wrong scale or zero
    # point in the int8 table gives garbage, far below this
    assert manifest["parity"]["rate"] >= 0.6
    model = onnx.load(str(tmp_path / "block" / "model.onnx"))
    config = json.loads((sharp_checkpoint / "config.json").read_text())
    vocab, d = config["vocab_size"], config["d_model"]
    float_tables = [t.name for t in model.graph.initializer if list(t.dims) in ([vocab, d], [d, vocab])]
    assert not float_tables, f"a float32 copy of the embedding table is still stored: {float_tables}"
    block = block_size_for(d)
    int8_tables = [t for t in model.graph.initializer if list(t.dims) == [vocab, d // block, block]]
    assert len(int8_tables) == 1


def test_weight_only_kernel_multiplies_in_float32(sharp_checkpoint, lo_valid, tmp_path):
    import onnx

    from ekd_edge.export.onefile import export_onefile

    export_onefile(sharp_checkpoint, tmp_path / "wo", quantize="int8", int8_kernel="weight-only",
                   parity_texts=lo_valid.src[:10], max_new_tokens=16)
    levels = set()

    def walk(graph):
        for node in graph.node:
            if node.op_type == "MatMulNBits":
                levels.update(a.i for a in node.attribute if a.name == "accuracy_level")
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    walk(attr.g)

    walk(onnx.load(str(tmp_path / "wo" / "model.onnx")).graph)
    assert levels == {0}


def test_portable_numerics_refuse_block_wise_kernels(sharp_checkpoint, tmp_path):
    from ekd_edge.export.onefile import export_onefile
    from ekd_edge.export.profiles import parse_profile

    with pytest.raises(BundleError, match="portable numerics need the dynamic int8 kernel"):
        export_onefile(sharp_checkpoint, tmp_path / "x", quantize="int8", int8_kernel="blockwise", portable=True)
    with pytest.raises(ProfileError, match="portable numerics need"):
        parse_profile({"format": "onefile", "quantize": {"mode": "int8", "kernel": "blockwise", "portable": True}},
                      "p.toml")
    with pytest.raises(ProfileError, match="applies to format onefile only"):
        parse_profile({"format": "onnx", "quantize": {"mode": "int8", "kernel": "blockwise"}}, "p.toml")
    assert not (tmp_path / "x").exists()


def test_optimum_graphs_remain_a_choice_and_pass_the_same_gate(sharp_checkpoint, lo_valid, tmp_path):
    from ekd_edge.export.onefile import export_onefile

    manifest = export_onefile(sharp_checkpoint, tmp_path / "opt", graphs="optimum", parity_texts=lo_valid.src[:20],
                              max_new_tokens=32)
    assert manifest["settings"]["graphs"] == "optimum" and manifest["parity"]["status"] == "passed"
