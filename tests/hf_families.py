"""Tiny local Hugging Face seq2seq checkpoints, laid out like downloaded ones, built offline.

Each family gets its own SentencePiece model trained on the bundled LibreOffice text, the family's
own tokenizer class around it, and a model with random weights of a few thousand parameters,
written with ``save_pretrained`` — exactly what a user's downloaded directory holds, minus the
quality. Used as teachers in tests (they teach garbage, which is all a test of plumbing needs).
"""

from __future__ import annotations

import json
from pathlib import Path

FAMILIES = ("marian-opus", "m2m100", "nllb", "mbart50", "t5")
TINY = dict(d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
            decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=128)


def train_spm(texts: list[str], prefix: Path, vocab_size: int, **ids) -> Path:
    import sentencepiece as spm

    spm.SentencePieceTrainer.train(sentence_iterator=iter(texts), model_prefix=str(prefix), vocab_size=vocab_size,
                                   model_type="unigram", character_coverage=1.0, minloglevel=2, num_threads=1, **ids)
    Path(f"{prefix}.vocab").unlink(missing_ok=True)
    return Path(f"{prefix}.model")


def build(family: str, out: Path, src: list[str], tgt: list[str], seed: int = 0) -> Path:
    """A checkpoint of ``family`` in ``out`` (created), translating src → tgt (randomly)."""
    import torch

    out.mkdir(parents=True, exist_ok=True)
    scratch = out.parent / f".{out.name}.spm"
    scratch.mkdir(exist_ok=True)
    torch.manual_seed(seed)
    if family == "marian-opus":
        model, tokenizer = _marian_opus(scratch, src, tgt)
    elif family == "m2m100":
        model, tokenizer = _m2m100(scratch, src + tgt)
    elif family == "nllb":
        model, tokenizer = _nllb(scratch, src + tgt)
    elif family == "mbart50":
        model, tokenizer = _mbart50(scratch, src + tgt)
    elif family == "t5":
        model, tokenizer = _t5(scratch, src + tgt)
    else:
        raise ValueError(family)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


def _marian_opus(scratch: Path, src, tgt):
    """OPUS-MT layout: a SentencePiece model per side and one joint vocab.json whose ids are not
    SentencePiece's (</s> 0, <unk> 1, pieces in sorted order, <pad> last)."""
    import sentencepiece as spm
    from transformers import MarianConfig, MarianMTModel, MarianTokenizer

    pieces = set()
    for side, texts in (("source", src), ("target", tgt)):
        model_file = train_spm(texts, scratch / side, 300)
        (scratch / f"{side}.spm").write_bytes(model_file.read_bytes())
        proc = spm.SentencePieceProcessor(model_file=str(model_file))
        pieces |= {proc.id_to_piece(i) for i in range(proc.get_piece_size())}
    pieces -= {"<unk>", "<s>", "</s>"}
    vocab = {"</s>": 0, "<unk>": 1}
    for piece in sorted(pieces):
        vocab[piece] = len(vocab)
    vocab["<pad>"] = len(vocab)
    (scratch / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    tokenizer = MarianTokenizer(source_spm=str(scratch / "source.spm"), target_spm=str(scratch / "target.spm"),
                                vocab=str(scratch / "vocab.json"))
    config = MarianConfig(vocab_size=len(vocab), pad_token_id=vocab["<pad>"], eos_token_id=0,
                          decoder_start_token_id=vocab["<pad>"], forced_eos_token_id=0, **TINY)
    return MarianMTModel(config), tokenizer


def _m2m100(scratch: Path, texts):
    """M2M100's layout: a SentencePiece model and a vocab.json of fairseq ids (<s> 0, <pad> 1, </s> 2,
    <unk> 3, then the pieces); the language tokens (``__en__``) follow the vocabulary. The corpus
    makes ``en`` and ``de`` ordinary pieces too, as in the real model's vocabulary."""
    import sentencepiece as spm
    from transformers import M2M100Config, M2M100ForConditionalGeneration, M2M100Tokenizer

    model_file = train_spm(texts, scratch / "sentencepiece.bpe", 400)
    proc = spm.SentencePieceProcessor(model_file=str(model_file))
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for i in range(proc.get_piece_size()):
        vocab.setdefault(proc.id_to_piece(i), len(vocab))
    (scratch / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    tokenizer = M2M100Tokenizer(vocab_file=str(scratch / "vocab.json"), spm_file=str(model_file), src_lang="en",
                                tgt_lang="de")
    # len(tokenizer) leaves the language tokens out; the model's rows hold them and the made-up words
    rows = tokenizer.encoder_size + len(tokenizer.lang_code_to_id) + tokenizer.num_madeup_words
    config = M2M100Config(vocab_size=rows, pad_token_id=tokenizer.pad_token_id, bos_token_id=0,
                          eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.eos_token_id,
                          d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                          decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
                          max_position_embeddings=128)
    return M2M100ForConditionalGeneration(config), tokenizer


def _nllb(scratch: Path, texts):
    from transformers import M2M100Config, M2M100ForConditionalGeneration, NllbTokenizer

    model_file = train_spm(texts, scratch / "sentencepiece.bpe", 400)
    tokenizer = NllbTokenizer(vocab_file=str(model_file), src_lang="eng_Latn", tgt_lang="deu_Latn")
    config = M2M100Config(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, bos_token_id=0,
                          eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.eos_token_id,
                          d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                          decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
                          max_position_embeddings=128)
    return M2M100ForConditionalGeneration(config), tokenizer


def _mbart50(scratch: Path, texts):
    from transformers import MBart50Tokenizer, MBartConfig, MBartForConditionalGeneration

    model_file = train_spm(texts, scratch / "sentencepiece.bpe", 400)
    tokenizer = MBart50Tokenizer(vocab_file=str(model_file), src_lang="en_XX", tgt_lang="de_DE")
    config = MBartConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                         eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.eos_token_id, **TINY)
    return MBartForConditionalGeneration(config), tokenizer


def _t5(scratch: Path, texts):
    from transformers import T5Config, T5ForConditionalGeneration, T5Tokenizer

    prefixed = [f"translate English to German: {t}" for t in texts[: len(texts) // 2]] + texts[len(texts) // 2:]
    model_file = train_spm(prefixed, scratch / "spiece", 400, pad_id=0, eos_id=1, unk_id=2, bos_id=-1)
    tokenizer = T5Tokenizer(vocab_file=str(model_file), extra_ids=0, legacy=False)
    config = T5Config(vocab_size=len(tokenizer), d_model=16, d_kv=8, d_ff=32, num_layers=1, num_decoder_layers=1,
                      num_heads=2, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    return T5ForConditionalGeneration(config), tokenizer

