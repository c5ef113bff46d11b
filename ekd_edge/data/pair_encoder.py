"""Tokenising many pairs at once on every core, with exactly the ids MarianTokenizer gives.

MarianTokenizer encodes one sentence at a time in Python (about 3,000 pairs/s on one core).
SentencePiece's own batch encoder runs a whole chunk in C++ threads; what MarianTokenizer adds
around it is reproduced here:

- a SentencePiece id becomes a model id through the vocabulary (vocab.json), as the piece's
  string would: ``vocab.get(piece, <unk>)``; a renumbered or trimmed (adopted) vocabulary works
  the same way;
- a piece SentencePiece does not know comes out as <unk> from the id encoder but as its surface
  string from MarianTokenizer, which a joint vocabulary may know (a character only the target
  model has): such sentences are looked up by string;
- a leading language code (``>>de<<``) and special-token strings inside the text (``</s>``) are
  split off by transformers before SentencePiece sees the text: those rare sentences go through
  the transformers tokenizer itself;
- EOS ends every sequence.

``PairEncoder.for_tokenizer`` returns None for any tokenizer that is not MarianTokenizer (a
teacher's own NLLB or T5 tokenizer): callers then use that tokenizer directly.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ekd_edge.data.flat import Ragged


def default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


class _Side:
    """One SentencePiece model and its id table into the model's vocabulary."""

    def __init__(self, model_file: Path, vocab: dict[str, int], unk_id: int):
        import sentencepiece as spm

        self.sp = spm.SentencePieceProcessor(model_file=str(model_file))
        self.vocab, self.unk_id = vocab, unk_id
        self.table = np.array([vocab.get(self.sp.id_to_piece(i), unk_id) for i in range(self.sp.get_piece_size())],
                              dtype=np.int64)
        self.sp_unk = self.sp.unk_id()

    def to_model(self, texts: list[str], ids: list[list[int]]) -> Ragged:
        """SentencePiece's ids of ``texts`` as the model's vocabulary numbers them (int32, end to end)."""
        out = Ragged.from_lists(ids, dtype=np.int64)
        unknown = np.unique(out.row_of(np.flatnonzero(out.ids == self.sp_unk))).tolist()
        out = Ragged(self.table[out.ids].astype(np.int32), out.lengths)   # every row through the table at once
        # an unknown piece: its surface string may still be in the vocabulary
        return out.with_rows({r: [self.vocab.get(piece, self.unk_id) for piece in self.sp.encode(texts[r], out_type=str)]
                              for r in unknown})


class PairEncoder:
    """Source and target sides of a Marian tokenizer, batch-encoded: ``encode(src, tgt)`` returns
    (source ids, target ids) per pair, EOS included, equal to ``tokenizer(src, text_target=tgt)``."""

    def __init__(self, tokenizer, threads: int | None = None):
        directory = Path(tokenizer.name_or_path)
        vocab = json.loads((directory / "vocab.json").read_text())
        unk_id = vocab[str(tokenizer.unk_token)]
        self.tokenizer = tokenizer
        self.eos_id = tokenizer.eos_token_id
        self.threads = threads or default_threads()
        self.source = _Side(directory / "source.spm", vocab, unk_id)
        self.target = _Side(directory / "target.spm", vocab, unk_id)
        # text that transformers splits before SentencePiece: special tokens and a language code
        self._specials = sorted({str(t) for t in tokenizer.all_special_tokens} | set(tokenizer.get_added_vocab()))

    @classmethod
    def for_tokenizer(cls, tokenizer, threads: int | None = None) -> "PairEncoder | None":
        from transformers import MarianTokenizer

        if not isinstance(tokenizer, MarianTokenizer) or getattr(tokenizer, "separate_vocabs", False):
            return None
        directory = Path(getattr(tokenizer, "name_or_path", "") or ".")
        if not all((directory / name).is_file() for name in ("source.spm", "target.spm", "vocab.json")):
            return None
        return cls(tokenizer, threads)

    def _special_rows(self, texts: list[str]) -> list[int]:
        """Rows transformers would split before SentencePiece (a language code, a special-token string).
        One search of the whole chunk first: most chunks have none."""
        joined = "\n".join(texts)
        if not joined.startswith(">>") and "\n>>" not in joined and not any(t in joined for t in self._specials):
            return []
        return [i for i, text in enumerate(texts)
                if text.startswith(">>") or any(special in text for special in self._specials)]

    def encode(self, src: list[str], tgt: list[str]) -> tuple[list[list[int]], list[list[int]]]:
        src_ids, tgt_ids = self._finish(src, tgt, self._pieces((src, tgt)))
        return src_ids.tolist(), tgt_ids.tolist()

    def encode_ahead(self, chunks: Iterable[tuple[list[str], list[str]]]) -> Iterator[tuple[Ragged, Ragged]]:
        """``encode`` of each (sources, targets) chunk in turn, as Ragged ids (int32), with the next
        chunk read and run through SentencePiece in a thread while the caller works on this one:
        SentencePiece's batch encoder releases the GIL, so the Python around it no longer waits for
        it (and the reverse)."""
        chunks = iter(chunks)

        def next_pieces():
            chunk = next(chunks, None)
            return None if chunk is None else (chunk, self._pieces(chunk))

        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="sentencepiece") as pool:
            ahead = pool.submit(next_pieces)
            while (ready := ahead.result()) is not None:
                ahead = pool.submit(next_pieces)
                (src, tgt), pieces = ready
                yield self._finish(src, tgt, pieces)

    def _pieces(self, chunk: tuple[list[str], list[str]]) -> tuple[list[list[int]], list[list[int]]]:
        src, tgt = chunk
        if len(src) != len(tgt):
            raise ValueError(f"{len(src)} sources but {len(tgt)} targets")
        return (self.source.sp.encode(src, out_type=int, num_threads=self.threads),
                self.target.sp.encode(tgt, out_type=int, num_threads=self.threads))

    def _finish(self, src: list[str], tgt: list[str], pieces) -> tuple[Ragged, Ragged]:
        src_ids = self.source.to_model(src, pieces[0]).appended(self.eos_id)
        tgt_ids = self.target.to_model(tgt, pieces[1]).appended(self.eos_id)
        special = sorted(set(self._special_rows(src)) | set(self._special_rows(tgt)))
        if special:   # the tokenizer itself, for both sides of those pairs
            enc = self.tokenizer([src[i] for i in special], text_target=[tgt[i] for i in special])
            src_ids = src_ids.with_rows(dict(zip(special, enc["input_ids"])))
            tgt_ids = tgt_ids.with_rows(dict(zip(special, enc["labels"])))
        return src_ids, tgt_ids
