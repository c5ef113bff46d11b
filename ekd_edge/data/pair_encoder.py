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

import itertools
import json
import os
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np


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

    def to_model_ids(self, texts: list[str], ids: list[list[int]]) -> list[list[int]]:
        """SentencePiece's ids of ``texts`` as the model's vocabulary numbers them."""
        # every row through the id table at once, then cut back into rows
        lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
        flat = np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int64, count=int(lengths.sum()))
        mapped = self.table[flat].tolist()
        ends = np.cumsum(lengths).tolist()
        out = [mapped[end - n:end] for end, n in zip(ends, lengths.tolist())]
        rows_with_unknown = np.unique(np.repeat(np.arange(len(ids)), lengths)[flat == self.sp_unk]).tolist()
        for r in rows_with_unknown:   # an unknown piece: its surface string may still be in the vocabulary
            out[r] = [self.vocab.get(piece, self.unk_id) for piece in self.sp.encode(texts[r], out_type=str)]
        return out


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

    def _plain(self, text: str) -> bool:
        return not text.startswith(">>") and not any(special in text for special in self._specials)

    def encode(self, src: list[str], tgt: list[str]) -> tuple[list[list[int]], list[list[int]]]:
        return self._finish(src, tgt, self._pieces((src, tgt)))

    def encode_ahead(self, chunks: Iterable[tuple[list[str], list[str]]]) \
            -> Iterator[tuple[list[list[int]], list[list[int]]]]:
        """``encode`` of each (sources, targets) chunk in turn, with the next chunk read and run
        through SentencePiece in a thread while the caller works on this one: SentencePiece's batch
        encoder releases the GIL, so the Python around it no longer waits for it (and the reverse)."""
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

    def _finish(self, src: list[str], tgt: list[str], pieces) -> tuple[list[list[int]], list[list[int]]]:
        src_ids, tgt_ids = self.source.to_model_ids(src, pieces[0]), self.target.to_model_ids(tgt, pieces[1])
        for i, (s, t) in enumerate(zip(src, tgt)):
            if self._plain(s) and self._plain(t):
                src_ids[i].append(self.eos_id)
                tgt_ids[i].append(self.eos_id)
            else:
                enc = self.tokenizer([s], text_target=[t])
                src_ids[i], tgt_ids[i] = enc["input_ids"][0], enc["labels"][0]
        return src_ids, tgt_ids
