"""The batch pair encoder gives exactly MarianTokenizer's ids: on the bundled corpora, on text
transformers treats specially, and on a renumbered vocabulary that knows a piece SentencePiece
does not."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ekd_edge.data.corpus import load_corpus
from ekd_edge.data.pair_encoder import PairEncoder
from ekd_edge.data.tokenizer import EOS, PAD, UNK, load_tokenizer, marian_tokenizer
from ekd_edge.distill.batches import tokenize_pairs, tokenize_to_disk

TEACHER_M = Path(__file__).resolve().parents[1] / "ekd_edge" / "teachers" / "lo-help-en-de" / "teacher-m"

# what transformers splits before SentencePiece (a language code, special-token strings), what
# SentencePiece normalises (NFKC ligatures, full-width letters, runs of spaces) and what it does
# not know (a snowman, an emoji)
AWKWARD = [">>de<< Click here", "Press </s> to end", "an <unk> piece", "<pad>", "☃ snow ☃", "ﬁle Ｆｉｌｅ",
           "two  spaces\tand a tab", "emoji 🙂 here", " leading and trailing ", "ÄÖÜ äöü ß", "x"]


@pytest.fixture(scope="module")
def teacher_tokenizer():
    return load_tokenizer(TEACHER_M)


def expected(tokenizer, src, tgt):
    enc = tokenizer(src, text_target=tgt)
    return enc["input_ids"], enc["labels"]


@pytest.mark.parametrize("corpus, split, n", [("lo-help-en-de", "train", 6000), ("lo-help-en-de", "test", None),
                                              ("bible-en-es", "train", 3000)])
def test_same_ids_as_the_tokenizer_on_the_bundled_corpora(teacher_tokenizer, corpus, split, n):
    data = load_corpus(corpus).split(split).head(n)
    encoder = PairEncoder.for_tokenizer(teacher_tokenizer, threads=2)
    assert encoder is not None
    assert encoder.encode(data.src, data.tgt) == expected(teacher_tokenizer, data.src, data.tgt)


def test_same_ids_on_text_transformers_treats_specially(teacher_tokenizer):
    encoder = PairEncoder.for_tokenizer(teacher_tokenizer, threads=2)
    reversed_ = list(reversed(AWKWARD))
    assert encoder.encode(AWKWARD, reversed_) == expected(teacher_tokenizer, AWKWARD, reversed_)


def test_a_renumbered_vocabulary_with_a_surface_string_sentencepiece_lacks(tmp_path, teacher_tokenizer):
    """An adopted vocabulary (data/adopt.py): ids are not SentencePiece's, pieces are missing, and
    a joint vocabulary may hold a string the source model encodes as unknown ("☃")."""
    directory = tmp_path / "tok"
    directory.mkdir()
    for name in ("source.spm", "target.spm"):
        shutil.copy(TEACHER_M / name, directory / name)
    teacher_vocab = json.loads((TEACHER_M / "vocab.json").read_text())
    kept = sorted((p for p in teacher_vocab if p not in (PAD, EOS, UNK)), reverse=True)[::2]   # every other piece
    vocab = {PAD: 0, EOS: 1, UNK: 2, "☃": 3, **{p: i + 4 for i, p in enumerate(kept)}}
    (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    marian_tokenizer(directory).save_pretrained(directory)
    tokenizer = load_tokenizer(directory)
    data = load_corpus("lo-help-en-de").split("valid").head(800)
    src, tgt = data.src + AWKWARD, data.tgt + list(reversed(AWKWARD))
    got = PairEncoder.for_tokenizer(tokenizer, threads=2).encode(src, tgt)
    want = expected(tokenizer, src, tgt)
    assert got == want
    assert any(3 in ids for ids in want[0])       # the snowman really went through its vocabulary id


def test_a_tokenizer_that_is_not_marian_gets_no_encoder(tmp_path):
    from transformers import PreTrainedTokenizerFast
    from tokenizers import Tokenizer, models

    fast = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]")))
    assert PairEncoder.for_tokenizer(fast) is None


def test_the_token_store_holds_the_tokenizers_ids_across_chunk_boundaries(tmp_path, teacher_tokenizer):
    """Chunks of 7 pairs: a pair lost, repeated or shifted at a boundary changes the store."""
    data = load_corpus("lo-help-en-de").split("valid").head(200)
    stored = tokenize_to_disk(teacher_tokenizer, data.src, data.tgt, 64, tmp_path / "cache", chunk=7)
    src_ids, tgt_ids = expected(teacher_tokenizer, data.src, data.tgt)
    kept = [(s, t) for s, t in zip(src_ids, tgt_ids) if len(s) <= 64 and len(t) <= 64]
    assert len(stored) == len(kept)
    assert [(stored.src[i], stored.tgt[i]) for i in range(len(stored))] == kept
    in_memory = tokenize_pairs(teacher_tokenizer, data.src, data.tgt, 64, chunk=7)
    assert (in_memory.src, in_memory.tgt) == ([s for s, _ in kept], [t for _, t in kept])


def test_encoding_ahead_gives_each_chunk_its_own_ids_and_passes_errors_on(teacher_tokenizer):
    """The next chunk is encoded in a thread while this one is finished: a chunk's ids paired with
    another chunk's texts, a chunk dropped or repeated, or an error lost in the thread fails here."""
    encoder = PairEncoder.for_tokenizer(teacher_tokenizer, threads=2)
    data = load_corpus("lo-help-en-de").split("valid").head(300)
    chunks = [(data.src[i:i + 50], data.tgt[i:i + 50]) for i in range(0, 300, 50)]
    chunks.insert(3, (AWKWARD, list(reversed(AWKWARD))))   # rows that take the tokenizer's own path
    got = [(s.tolist(), t.tolist()) for s, t in encoder.encode_ahead(chunks)]
    assert got == [expected(teacher_tokenizer, s, t) for s, t in chunks]
    with pytest.raises(ValueError, match="2 sources but 1 targets"):
        list(encoder.encode_ahead([chunks[0], (AWKWARD[:2], AWKWARD[:1])]))
