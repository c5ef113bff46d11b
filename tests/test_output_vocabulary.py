"""Output vocabulary: a one-file model whose decoder may produce only some ids (export/onefile.py
output_ids, profile [onefile] output_vocabulary) decodes as the full model wherever the full
model's choices are kept, never produces a dropped id, and multiplies only the kept rows."""

from __future__ import annotations

import json

import onnx
import pytest

from ekd_edge.data.tokenizer import EOS_ID, PAD_ID, UNK_ID, target_side_ids
from ekd_edge.errors import BundleError, ProfileError
from ekd_edge.export.marian_graph import block_size_for
from ekd_edge.export.onefile import export_onefile
from ekd_edge.runtime.onefile_engine import MODEL_FILE, OneFileTranslator
from ekd_edge.runtime.torch_engine import TorchTranslator

pytestmark = pytest.mark.usefixtures("single_torch_thread")
TOKENS = 32


@pytest.fixture(scope="module")
def texts(lo_valid):
    return lo_valid.src[:30]


@pytest.fixture(scope="module")
def reference_ids(sharp_checkpoint, texts):
    ids = TorchTranslator(sharp_checkpoint).generate_ids(texts, max_new_tokens=TOKENS)
    assert len({tuple(row) for row in ids}) > 5, "the reference must depend on its input"
    return ids


@pytest.fixture(scope="module")
def vocab_size(sharp_checkpoint):
    return json.loads((sharp_checkpoint / "config.json").read_text())["vocab_size"]


def _beam_search(path):
    model = onnx.load(str(path / MODEL_FILE))
    return next(n for n in model.graph.node if n.op_type == "BeamSearch"), model


def _every_initializer(graph):
    for tensor in graph.initializer:
        yield tensor
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _every_initializer(attr.g)


def test_kept_choices_decode_exactly_as_the_full_model(sharp_checkpoint, texts, reference_ids, vocab_size, tmp_path):
    used = sorted({i for row in reference_ids for i in row})
    # every id the full model chose, and every third of the others: the search is narrower, the choices the same
    kept = sorted(set(used) | set(range(3, vocab_size, 3)))
    out = tmp_path / "kept"
    manifest = export_onefile(sharp_checkpoint, out, output_ids=kept, parity_texts=texts, max_new_tokens=TOKENS)
    assert manifest["settings"]["output_vocabulary"] == len(set(kept) | {PAD_ID, EOS_ID, UNK_ID})
    assert OneFileTranslator(out).generate_ids(texts, max_new_tokens=TOKENS) == reference_ids

    search, model = _beam_search(out)
    width = next(a.i for a in search.attribute if a.name == "vocab_size")
    assert width == manifest["settings"]["output_vocabulary"] < vocab_size
    d = json.loads((sharp_checkpoint / "config.json").read_text())["d_model"]
    projections = [t for t in _every_initializer(model.graph) if list(t.dims) in ([d, width], [width, d])]
    full = [t.name for t in _every_initializer(model.graph) if list(t.dims) == [d, vocab_size]]
    assert projections and not full, "the output projection must hold the kept rows only"


def test_dropped_ids_are_never_produced(sharp_checkpoint, texts, reference_ids, vocab_size, tmp_path):
    counts = {}
    for row in reference_ids:
        for i in row:
            counts[i] = counts.get(i, 0) + 1
    dropped = max((i for i in counts if i not in (PAD_ID, EOS_ID, UNK_ID)), key=counts.get)
    kept = [i for i in range(vocab_size) if i != dropped]
    out = tmp_path / "dropped"
    export_onefile(sharp_checkpoint, out, output_ids=kept, parity_texts=texts, max_new_tokens=TOKENS, force=True)
    got = OneFileTranslator(out).generate_ids(texts, max_new_tokens=TOKENS)
    assert all(dropped not in row for row in got)
    # sentences whose reference never used the dropped id decode exactly as before: the search's
    # positions were mapped back to model ids (with one id missing, positions above it are off by one)
    untouched = [(g, r) for g, r in zip(got, reference_ids) if dropped not in r]
    assert untouched and all(g == r for g, r in untouched)
    assert any(g != r for g, r in zip(got, reference_ids) if dropped in r)


def test_int8_table_is_stored_once_split_into_kept_and_other_rows(sharp_checkpoint, texts, vocab_size, tmp_path):
    full = tmp_path / "full"
    export_onefile(sharp_checkpoint, full, quantize="int8", int8_kernel="blockwise", max_new_tokens=TOKENS)
    full_ids = OneFileTranslator(full).generate_ids(texts, max_new_tokens=TOKENS)
    kept = sorted({i for row in full_ids for i in row} | set(range(5, vocab_size, 2)))
    out = tmp_path / "trimmed"
    manifest = export_onefile(sharp_checkpoint, out, quantize="int8", int8_kernel="blockwise", output_ids=kept,
                              max_new_tokens=TOKENS)
    # the encoder looks source ids up in both parts: a wrong split or order would change its input
    assert OneFileTranslator(out).generate_ids(texts, max_new_tokens=TOKENS) == full_ids
    d = json.loads((sharp_checkpoint / "config.json").read_text())["d_model"]
    block = block_size_for(d)
    width = manifest["settings"]["output_vocabulary"]
    tables = sorted(t.dims[0] for t in _every_initializer(onnx.load(str(out / MODEL_FILE)).graph)
                    if list(t.dims[1:]) == [d // block, block] and t.data_type == onnx.TensorProto.UINT8
                    and t.dims[0] >= 100)
    assert tables == sorted([width, vocab_size - width])


def test_target_side_ids_are_the_pieces_sentencepiece_gives_the_targets(sharp_checkpoint, lo_train):
    import sentencepiece as spm

    targets = lo_train.tgt[:300]
    target = spm.SentencePieceProcessor(model_file=str(sharp_checkpoint / "target.spm"))
    expected = {i for text in targets for i in target.encode(text)} | {PAD_ID, EOS_ID, UNK_ID}
    got = target_side_ids(sharp_checkpoint, targets)
    assert got == sorted(expected)
    assert len(got) < target.get_piece_size()


def test_bad_output_vocabularies_are_refused(sharp_checkpoint, vocab_size, tmp_path):
    with pytest.raises(BundleError, match="lean graphs"):
        export_onefile(sharp_checkpoint, tmp_path / "a", graphs="optimum", output_ids=[5, 6])
    with pytest.raises(BundleError, match=f"0..{vocab_size - 1}"):
        export_onefile(sharp_checkpoint, tmp_path / "b", output_ids=[5, vocab_size])
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_profile_output_vocabulary_is_checked():
    from ekd_edge.export.profiles import parse_profile

    with pytest.raises(ProfileError, match="onefile.output_vocabulary 'targets' is not one of full, training-targets"):
        parse_profile({"format": "onefile", "onefile": {"output_vocabulary": "targets"}}, "p.toml")
    with pytest.raises(ProfileError, match="applies to format onefile only"):
        parse_profile({"format": "onnx", "onefile": {"output_vocabulary": "training-targets"}}, "p.toml")
    assert parse_profile({"format": "onefile", "onefile": {"output_vocabulary": "training-targets"}},
                         "p.toml").onefile.output_vocabulary == "training-targets"


def test_export_command_takes_the_output_vocabulary_from_the_corpus_training_targets(sharp_checkpoint, tmp_path):
    from ekd_edge.cli import main
    from ekd_edge.data.corpus import load_corpus

    out = tmp_path / "cli"
    assert main(["export", str(sharp_checkpoint), "--out", str(out), "--format", "onefile", "--quantize", "int8",
                 "--int8-kernel", "blockwise", "--output-vocabulary", "training-targets", "--parity-sentences", "20",
                 "--quality-sentences", "0"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    expected = target_side_ids(sharp_checkpoint, load_corpus("lo-help-en-de").split("train").tgt)
    assert manifest["settings"]["output_vocabulary"] == len(expected)
    assert manifest["profile"]["onefile"]["output_vocabulary"] == "training-targets"
    assert manifest["settings"]["fused_ops"] == ["MultiHeadAttention"]  # fast graphs: the attention kernel
