"""One joint SentencePiece model shared by every teacher and student of a run.

Word-level KD compares teacher and student distributions position by position, so both must
speak the same vocabulary. The model is saved in MarianTokenizer's layout (source.spm,
target.spm, vocab.json) with vocab ids equal to SentencePiece ids, so the same ids come out of
transformers, of SentencePiece itself and of the ONNX tokenizer op.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

from ekd_edge.errors import CheckpointError, RecipeError

PAD, EOS, UNK = "<pad>", "</s>", "<unk>"
PAD_ID, EOS_ID, UNK_ID = 0, 1, 2
TOKENIZER_FILES = ("source.spm", "target.spm", "vocab.json", "tokenizer_config.json", "special_tokens_map.json")


# SentencePiece samples input_sentence_size sentences of what it is given, but holds all of it first:
# a corpus larger than this gives it an even stride of its pairs instead of every one.
TOKENIZER_SENTENCES = 1_000_000


def tokenizer_sentences(src, tgt, cap: int = TOKENIZER_SENTENCES) -> list[str]:
    """The sentences a joint tokenizer is trained on: every source then every target, or, past
    ``cap`` sentences, those of an even stride of pairs (source and target sequences of any kind)."""
    stride = max(1, -(-(len(src) + len(tgt)) // cap))
    return list(src[::stride] if stride > 1 else src) + list(tgt[::stride] if stride > 1 else tgt)


def train_tokenizer(texts, out_dir: str | Path, vocab_size: int, seed_sentences: int = 200_000):
    """Train a unigram SentencePiece model on ``texts`` (source and target sides together)."""
    import sentencepiece as spm

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    prefix = out_dir / "joint"
    texts = [t for t in texts if t.strip()]
    try:
        _train_sentencepiece(spm, texts, prefix, vocab_size, seed_sentences)
    except RuntimeError as exc:   # SentencePiece's own checks, e.g. a vocabulary the corpus cannot fill
        detail = " ".join(str(exc).split()).removeprefix("Internal: ")
        raise RecipeError(f"[tokenizer] vocab_size {vocab_size}: SentencePiece cannot build this vocabulary from "
                          f"the corpus ({detail[:200]})") from None
    processor = spm.SentencePieceProcessor(model_file=f"{prefix}.model")
    vocab = {processor.id_to_piece(i): i for i in range(processor.get_piece_size())}
    (out_dir / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    shutil.copy(f"{prefix}.model", out_dir / "source.spm")
    shutil.move(f"{prefix}.model", out_dir / "target.spm")
    Path(f"{prefix}.vocab").unlink(missing_ok=True)
    tokenizer = marian_tokenizer(out_dir)
    tokenizer.save_pretrained(out_dir)
    return tokenizer


def _train_sentencepiece(spm, texts, prefix, vocab_size, seed_sentences):
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts),
        model_prefix=str(prefix),
        vocab_size=vocab_size,
        model_type="unigram",
        character_coverage=1.0,
        pad_id=PAD_ID, eos_id=EOS_ID, unk_id=UNK_ID, bos_id=-1,
        pad_piece=PAD, eos_piece=EOS, unk_piece=UNK,
        input_sentence_size=seed_sentences,
        shuffle_input_sentence=True,
        num_threads=2,
        minloglevel=2,
    )


def marian_tokenizer(directory: Path):
    from transformers import MarianTokenizer

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Recommended: pip install sacremoses")
        return MarianTokenizer(
            source_spm=str(directory / "source.spm"),
            target_spm=str(directory / "target.spm"),
            vocab=str(directory / "vocab.json"),
            model_max_length=512,
        )


def load_tokenizer(directory: str | Path):
    """Load a run's (or a checkpoint's) tokenizer with transformers."""
    from transformers import AutoTokenizer

    directory = Path(directory)
    missing = [f for f in ("source.spm", "target.spm", "vocab.json") if not (directory / f).is_file()]
    if missing:
        raise CheckpointError(f"{directory}: no tokenizer here (missing {', '.join(missing)})")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Recommended: pip install sacremoses")
        return AutoTokenizer.from_pretrained(str(directory))


def copy_tokenizer(src_dir: str | Path, dst_dir: str | Path) -> None:
    """Copy the tokenizer files into a checkpoint or bundle so it is self-contained."""
    src_dir, dst_dir = Path(src_dir), Path(dst_dir)
    dst_dir.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        if (src_dir / name).is_file():
            shutil.copy(src_dir / name, dst_dir / name)


def vocab_fingerprint(directory: str | Path) -> str:
    """sha256 of vocab.json: two models can be distilled into each other only if these match."""
    import hashlib

    return hashlib.sha256((Path(directory) / "vocab.json").read_bytes()).hexdigest()[:16]



def sentencepiece_id_maps(directory: str | Path) -> tuple[list[int] | None, bytes | None]:
    """What a graph that runs SentencePiece itself (the one-file model) needs for a tokenizer whose
    ids are not SentencePiece's (one adopted from a teacher, data/adopt.py: re-numbered, trimmed):

    - source SentencePiece id → model id (a piece the vocabulary lacks → <unk>), and
    - a decode-only SentencePiece model whose pieces are the vocabulary in model-id order (the
      target model's settings; <pad>/</s> control, <unk> unknown), so model ids decode directly —
      pieces that only the source model has included, as MarianTokenizer decodes them.

    Each is None where the tokenizer needs none (one trained here: ids are SentencePiece's)."""
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as model_pb2

    directory = Path(directory)
    vocab = json.loads((directory / "vocab.json").read_text())
    source = spm.SentencePieceProcessor(model_file=str(directory / "source.spm"))
    to_model = [vocab.get(source.id_to_piece(i), UNK_ID) for i in range(source.get_piece_size())]
    target_bytes = (directory / "target.spm").read_bytes()
    target = model_pb2.ModelProto()
    target.ParseFromString(target_bytes)
    pieces = sorted(vocab, key=vocab.get)
    same = [p.piece for p in target.pieces] == pieces and vocab.get(PAD) == PAD_ID and vocab.get(UNK) == UNK_ID
    if same and to_model == list(range(len(to_model))):
        return None, None
    kinds = model_pb2.ModelProto.SentencePiece
    scores = {p.piece: p.score for p in target.pieces}
    decoder = model_pb2.ModelProto()
    decoder.CopyFrom(target)
    del decoder.pieces[:]
    for model_id, piece in enumerate(pieces):
        kind = {PAD_ID: kinds.CONTROL, EOS_ID: kinds.CONTROL, UNK_ID: kinds.UNKNOWN}.get(model_id, kinds.NORMAL)
        decoder.pieces.add(piece=piece, score=scores.get(piece, 0.0), type=kind)
    spec = decoder.trainer_spec
    spec.pad_id, spec.eos_id, spec.unk_id, spec.bos_id = PAD_ID, EOS_ID, UNK_ID, -1
    spec.pad_piece, spec.eos_piece, spec.unk_piece = PAD, EOS, UNK
    return (None if to_model == list(range(len(to_model))) else to_model), decoder.SerializeToString()


def target_side_ids(directory: str | Path, texts, batch_size: int = 2000) -> list[int]:
    """The model ids that target-side ``texts`` tokenise into, sorted, with <pad>, </s> and <unk>.

    A decoder restricted to these (an output vocabulary, export/onefile.py) never needs the
    source-only pieces of a joint vocabulary; take ``texts`` from the training targets, never
    from a split the model is scored on."""
    tokenizer = load_tokenizer(directory)
    seen = {PAD_ID, EOS_ID, UNK_ID}
    texts = list(texts)
    for start in range(0, len(texts), batch_size):
        for ids in tokenizer(text_target=texts[start:start + batch_size])["input_ids"]:
            seen.update(ids)
    return sorted(seen)
