"""A student tokenizer made from a teacher's: the same SentencePiece segmentation, a smaller vocabulary.

``[tokenizer] from = "TEACHER"`` makes the student speak a given teacher's tokenizer. Every
supported teacher family (Marian/OPUS-MT, NLLB/M2M100, mBART-50, T5) segments text with
SentencePiece, so the student is always a Marian model: its tokenizer is a MarianTokenizer around
the teacher's own SentencePiece model(s) and a new vocab.json in the run's layout —

    <pad> 0 · </s> 1 · <unk> 2 · then the kept pieces in the teacher's id order

Language tokens are left out: a student translates one direction and needs none (the KD bridge
adds them back when it prompts the teacher). With ``trim = true`` only the pieces the training
corpus uses (source side with the source model, target side with the target model) are kept,
optionally only the ``max_pieces`` most frequent; text with a dropped piece becomes <unk>.

``vocab_map.json`` beside it records, for each student id, the teacher id of the same piece
(specials to the teacher's specials), the teacher's vocabulary size and the teacher's weights
digest: word-level KD maps the teacher's distribution through it (distill/vocab_bridge.py).
A Marian teacher whose vocab.json already has this layout and is not trimmed is simply copied:
then ids are shared and no map is needed.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

from ekd_edge.data.tokenizer import EOS, EOS_ID, PAD, PAD_ID, UNK, UNK_ID, marian_tokenizer, copy_tokenizer
from ekd_edge.errors import CheckpointError

VOCAB_MAP = "vocab_map.json"
SPM_NAMES = ("sentencepiece.bpe.model", "spiece.model", "sentencepiece.model", "spm.model")


def spm_files(teacher_dir: Path) -> tuple[Path, Path]:
    """(source, target) SentencePiece models of a teacher checkpoint."""
    if (teacher_dir / "source.spm").is_file() and (teacher_dir / "target.spm").is_file():
        return teacher_dir / "source.spm", teacher_dir / "target.spm"
    for name in SPM_NAMES:
        if (teacher_dir / name).is_file():
            return teacher_dir / name, teacher_dir / name
    raise CheckpointError(f"{teacher_dir}: no SentencePiece model ({', '.join(('source.spm', *SPM_NAMES))}); "
                          "[tokenizer] from needs a SentencePiece teacher tokenizer")


def shares_run_layout(teacher_dir: Path) -> bool:
    """A Marian checkpoint whose vocab.json already puts <pad>, </s>, <unk> at 0, 1, 2 and keeps
    SentencePiece's order (a model trained by ekd-edge): its tokenizer can be copied as it is."""
    vocab_path = teacher_dir / "vocab.json"
    if not vocab_path.is_file() or not (teacher_dir / "source.spm").is_file():
        return False
    import sentencepiece as spm

    vocab = json.loads(vocab_path.read_text())
    proc = spm.SentencePieceProcessor(model_file=str(teacher_dir / "source.spm"))
    return (vocab.get(PAD) == PAD_ID and vocab.get(EOS) == EOS_ID and vocab.get(UNK) == UNK_ID
            and all(vocab.get(proc.id_to_piece(i)) == i for i in range(proc.get_piece_size())))


def piece_counts(model_file: Path, texts, chunk: int = 20_000) -> Counter:
    """How often each piece occurs in ``texts`` (any sequence of strings, read a chunk at a time)."""
    import sentencepiece as spm

    proc = spm.SentencePieceProcessor(model_file=str(model_file))
    counts: Counter = Counter()
    for start in range(0, len(texts), chunk):
        for pieces in proc.encode(list(texts[start:start + chunk]), out_type=str):
            counts.update(pieces)
    return counts


def all_pieces(model_file: Path) -> list[str]:
    import sentencepiece as spm

    proc = spm.SentencePieceProcessor(model_file=str(model_file))
    return [proc.id_to_piece(i) for i in range(proc.get_piece_size())
            if not (proc.is_control(i) or proc.is_unknown(i))]


def adopt_tokenizer(teacher_dir: str | Path, teacher_tokenizer, out_dir: str | Path, src: list[str], tgt: list[str],
                    trim: bool, max_pieces: int = 0, teacher_digest: str = "") -> dict:
    """Write the student's tokenizer made from the teacher's to ``out_dir``; returns its summary."""
    teacher_dir, out_dir = Path(teacher_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not trim and not max_pieces and shares_run_layout(teacher_dir):
        copy_tokenizer(teacher_dir, out_dir)
        size = len(json.loads((out_dir / "vocab.json").read_text()))
        return {"mapped": False, "teacher_vocab": size, "student_vocab": size}
    source_spm, target_spm = spm_files(teacher_dir)
    if trim:
        counts = piece_counts(source_spm, src) + piece_counts(target_spm, tgt)
        ranked = [p for p, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
        kept = set(ranked[:max_pieces] if max_pieces else ranked)
    else:
        kept = set(all_pieces(source_spm)) | set(all_pieces(target_spm))
        if max_pieces:
            raise ValueError("max_pieces needs trim")
    kept -= {PAD, EOS, UNK, "<s>"}
    teacher_id = {p: teacher_tokenizer.convert_tokens_to_ids(p) for p in kept}
    unk = teacher_tokenizer.unk_token_id
    kept = sorted((p for p in kept if teacher_id[p] is not None and teacher_id[p] != unk), key=teacher_id.get)
    vocab = {PAD: PAD_ID, EOS: EOS_ID, UNK: UNK_ID}
    for piece in kept:
        vocab[piece] = len(vocab)
    specials = [teacher_tokenizer.pad_token_id, teacher_tokenizer.eos_token_id, unk]
    if None in specials:
        raise CheckpointError(f"{teacher_dir}: its tokenizer lacks a pad, eos or unk token, so ids cannot be mapped")
    teacher_ids = specials + [teacher_id[p] for p in kept]
    shutil.copy(source_spm, out_dir / "source.spm")
    shutil.copy(target_spm, out_dir / "target.spm")
    (out_dir / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    marian_tokenizer(out_dir).save_pretrained(out_dir)
    summary = {"mapped": True, "trim": trim, "max_pieces": max_pieces, "teacher_vocab": len(teacher_tokenizer),
               "student_vocab": len(vocab), "teacher_weights": teacher_digest, "teacher_ids": teacher_ids}
    (out_dir / VOCAB_MAP).write_text(json.dumps(summary))
    return summary


def read_vocab_map(tokenizer_dir: str | Path) -> dict | None:
    path = Path(tokenizer_dir) / VOCAB_MAP
    return json.loads(path.read_text()) if path.is_file() else None
