"""Token-budget batches of tokenised pairs, deterministic for a given seed and epoch.

Pairs are shuffled, then sorted by length inside pools of a few hundred so each batch holds
pairs of similar length (little padding), and the batches themselves are shuffled again.
Because the order is a pure function of (seed, epoch), a resumed run can find its place again
from the step count alone.

A training corpus lives on disk, not in Python lists: ``tokenize_to_disk`` writes every pair's
token ids once into a flat int32 array plus int64 offsets (run_dir/cache/pairs-<key>/), and
``MappedPairs`` reads them from disk on demand (pread), one pair at a time, with the same ``src[i]`` /
``tgt[i]`` / ``len()`` interface as the in-memory ``TokenizedPairs``.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import os
import random
import shutil
import time
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ekd_edge.data.flat import FileArray, OffsetsWriter, PairSide, Ragged, npy_from_raw, side_lengths
from ekd_edge.data.pair_encoder import PairEncoder
from ekd_edge.data.tokenizer import PAD_ID, TOKENIZER_FILES
from ekd_edge.distill.losses import IGNORE
from ekd_edge.errors import EkdError
from ekd_edge.files import publish_dir, staging_dir, writing
from ekd_edge.hashing import file_sha256


@dataclass
class TokenizedPairs:
    src: list[list[int]]
    tgt: list[list[int]]
    dropped_long: int = 0

    def __len__(self) -> int:
        return len(self.src)

    def target_tokens(self) -> int:
        return sum(len(t) for t in self.tgt)

    def lengths(self) -> tuple[np.ndarray, np.ndarray]:
        """Token counts of every source and every target (int64 arrays)."""
        return (np.fromiter(map(len, self.src), dtype=np.int64, count=len(self.src)),
                np.fromiter(map(len, self.tgt), dtype=np.int64, count=len(self.tgt)))


def tokenize_pairs(tokenizer, src: list[str], tgt: list[str], max_length: int, chunk: int = 4096,
                   encoder: PairEncoder | None = None) -> TokenizedPairs:
    """Token ids (EOS included) of both sides; pairs longer than ``max_length`` on either side are dropped.

    A Marian tokenizer is run through SentencePiece's batch encoder on every core (``encoder``, made
    here when not given; data/pair_encoder.py), with the ids the tokenizer itself would give."""
    out = TokenizedPairs([], [])
    for src_ids, tgt_ids in _encoded_chunks(tokenizer, src, tgt, chunk, encoder):
        src_ids, tgt_ids, dropped = _short_pairs(src_ids, tgt_ids, max_length)
        out.src += src_ids.tolist()
        out.tgt += tgt_ids.tolist()
        out.dropped_long += dropped
    return out


def _short_pairs(src_ids: Ragged, tgt_ids: Ragged, max_length: int) -> tuple[Ragged, Ragged, int]:
    """The pairs with neither side over ``max_length``, and how many were dropped."""
    keep = (src_ids.lengths <= max_length) & (tgt_ids.lengths <= max_length)
    return src_ids.take(keep), tgt_ids.take(keep), int(len(keep) - keep.sum())


def _encoded_chunks(tokenizer, src, tgt, chunk: int, encoder: PairEncoder | None) -> Iterator[tuple[Ragged, Ragged]]:
    """Token ids (EOS included) of both sides, a chunk of pairs at a time, as Ragged int32 arrays; a
    Marian tokenizer's next chunk goes through SentencePiece while this one is used."""
    encoder = encoder or PairEncoder.for_tokenizer(tokenizer)
    chunks = ((src[i:i + chunk], tgt[i:i + chunk]) for i in range(0, len(src), chunk))
    if encoder is not None:
        yield from encoder.encode_ahead(chunks)
        return
    for s, t in chunks:
        enc = tokenizer(s, text_target=t)
        yield Ragged.from_lists(enc["input_ids"]), Ragged.from_lists(enc["labels"])


def truncate_pairs(pairs: TokenizedPairs, max_length: int) -> TokenizedPairs:
    """Cut sides longer than ``max_length`` to it, keeping the final EOS; count the pairs cut."""
    cut, src, tgt = 0, [], []
    for s, t in zip(pairs.src, pairs.tgt):
        if len(s) > max_length or len(t) > max_length:
            cut += 1
            s = s[:max_length - 1] + s[-1:] if len(s) > max_length else s
            t = t[:max_length - 1] + t[-1:] if len(t) > max_length else t
        src.append(s)
        tgt.append(t)
    return TokenizedPairs(src, tgt, pairs.dropped_long + cut)


def fingerprint_pairs(src, tgt) -> str:
    """A hash of the exact token ids of every pair, in order (the teacher cache's data key)."""
    digest = hashlib.sha256()
    for s, t in zip(src, tgt):
        _update_fingerprint(digest, s, t)
    return digest.hexdigest()


def _fingerprint_bytes(sides: Ragged) -> bytes:
    """What _update_fingerprint feeds the digest for a run of pairs (their sides in pair order,
    int32), in one piece: each side's bytes, then "|" after a source and "#" after a target."""
    data = sides.ids.astype(np.int32, copy=False).view(np.uint8)
    marks = np.resize(np.frombuffer(b"|#", dtype=np.uint8), len(sides))
    return np.insert(data, 4 * np.cumsum(sides.lengths), marks).tobytes()


def _update_fingerprint(digest, s, t) -> None:
    digest.update(np.asarray(s, dtype=np.int32).tobytes())
    digest.update(b"|")
    digest.update(np.asarray(t, dtype=np.int32).tobytes())
    digest.update(b"#")


def _ids(values: np.ndarray) -> list[int]:
    return values.tolist()


class MappedPairs:
    """Tokenised pairs read lazily from a ``tokenize_to_disk`` directory.

    Layout: tokens.npy int32 [all tokens]; offsets.npy int64 [2·pairs + 1]: pair i's source is
    tokens[offsets[2i] : offsets[2i+1]] and its target tokens[offsets[2i+1] : offsets[2i+2]].
    """

    def __init__(self, directory: Path, tokens: np.ndarray, offsets: np.ndarray, meta: dict):
        self.directory, self.meta = directory, meta
        self.src, self.tgt = PairSide(tokens, offsets, 0, _ids), PairSide(tokens, offsets, 1, _ids)
        self.dropped_long = int(meta["dropped_long"])
        self.fingerprint = meta["fingerprint"]   # of the token ids, exactly as fingerprint_pairs computes it
        self._sides = side_lengths(offsets)   # int32 (a side is at most max_length tokens): 8 bytes a pair

    def __len__(self) -> int:
        return len(self.src)

    def target_tokens(self) -> int:
        return int(self._sides[1::2].sum())

    def lengths(self) -> tuple[np.ndarray, np.ndarray]:
        return self._sides[0::2], self._sides[1::2]

    @classmethod
    def open(cls, directory: str | Path) -> "MappedPairs":
        """Open and check a finished directory; a damaged one raises EkdError saying what is wrong."""
        directory = Path(directory)

        def bad(why: str) -> EkdError:
            return EkdError(f"{directory}: damaged tokenized-corpus cache ({why}); delete the directory to rebuild it")

        try:
            meta = json.loads((directory / "meta.json").read_text())
            # read with pread, not mapped: random batches over a large store would stay resident
            tokens, offsets = FileArray(directory / "tokens.npy"), FileArray(directory / "offsets.npy")
        except (OSError, ValueError) as err:   # a truncated .npy fails its header or size check
            raise bad(f"{type(err).__name__}: {err}") from None
        for name in ("tokens.npy", "offsets.npy"):   # catches flipped bytes that keep the size
            if file_sha256(directory / name) != meta.get("sha256", {}).get(name):
                raise bad(f"{name} does not match its checksum")
        n = int(meta.get("pairs", -1))
        if (tokens.dtype != np.int32 or offsets.dtype != np.int64 or offsets.shape != (2 * n + 1,)
                or int(offsets[0]) != 0 or int(offsets[-1]) != tokens.size):
            raise bad("offsets do not describe the token array")
        return cls(directory, tokens, offsets, meta)


def tokenizer_fingerprint(tokenizer) -> str:
    """sha256 of the tokenizer's files (its SentencePiece models and vocabulary)."""
    digest = hashlib.sha256()
    directory = Path(getattr(tokenizer, "name_or_path", "") or ".")
    found = [name for name in TOKENIZER_FILES if (directory / name).is_file()]
    for name in found:
        digest.update(name.encode() + b"\0" + (directory / name).read_bytes())
    if not found:   # built in memory: its vocabulary is what there is to hash
        digest.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    return digest.hexdigest()


def corpus_key(tokenizer, src: list[str], tgt: list[str], max_length: int, truncate_to: int | None) -> str:
    """Hash of the tokenizer's files, the texts and the length limits (a text store's sides by the
    store's fingerprint: reading the whole corpus again only to name it would cost a pass)."""
    digest = hashlib.sha256(f"{tokenizer_fingerprint(tokenizer)}:{max_length}:{truncate_to}:{len(src)}".encode())
    stored = getattr(src, "fingerprint", None), getattr(tgt, "fingerprint", None)
    if all(isinstance(f, str) for f in stored):
        digest.update(f"text store {stored[0]} {stored[1]}".encode())
        return digest.hexdigest()[:20]
    for line in src:
        digest.update(line.encode() + b"\n")
    digest.update(b"\0")
    for line in tgt:
        digest.update(line.encode() + b"\n")
    return digest.hexdigest()[:20]


def tokenize_to_disk(tokenizer, src: list[str], tgt: list[str], max_length: int, cache_root: str | Path,
                     truncate_to: int | None = None, chunk: int = 4096,
                     description: str = "tokenizing") -> MappedPairs:
    """``tokenize_pairs`` (then ``truncate_pairs`` to ``truncate_to`` when given), kept on disk.

    Written once under ``cache_root/pairs-<key>``, so a restart reuses it; a damaged directory is
    rebuilt. Under torchrun rank 0 writes and the other ranks open the finished directory.
    """
    from ekd_edge.distill import distributed

    if len(src) != len(tgt):
        raise ValueError(f"{len(src)} sources but {len(tgt)} targets")
    final = Path(cache_root) / f"pairs-{corpus_key(tokenizer, src, tgt, max_length, truncate_to)}"
    with distributed.waiting_for_main():
        if distributed.context().is_main:
            pairs = _open_or_build(final, tokenizer, src, tgt, max_length, truncate_to, chunk, description)
    return pairs if distributed.context().is_main else MappedPairs.open(final)


def _open_or_build(final: Path, tokenizer, src, tgt, max_length, truncate_to, chunk, description) -> MappedPairs:
    from ekd_edge.console import console

    if final.is_dir():
        try:
            return MappedPairs.open(final)
        except EkdError as err:
            console.log(f"{err}: rebuilding it")
            shutil.rmtree(final)
    with writing(final):
        tmp = staging_dir(final)   # a killed build's leftover (tokens.raw) is removed here by the next one
        try:
            began = time.perf_counter()
            meta = _write_tokens(tmp, tokenizer, src, tgt, max_length, truncate_to, chunk, description)
            meta["key"] = final.name.removeprefix("pairs-")
            meta["seconds"] = round(time.perf_counter() - began, 2)   # tokenising and writing, this build
            _write_synced(tmp / "meta.json", json.dumps(meta, indent=2).encode())
            publish_dir(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return MappedPairs.open(final)


def _write_tokens(tmp: Path, tokenizer, src, tgt, max_length, truncate_to, chunk, description) -> dict:
    """Tokenise chunk by chunk into tmp/tokens.npy and tmp/offsets.npy; return the meta record."""
    from ekd_edge.console import progress_bar

    digest, dropped, pairs = hashlib.sha256(), 0, 0
    encoder = PairEncoder.for_tokenizer(tokenizer)
    offsets = OffsetsWriter(tmp / "offsets.npy")
    raw = tmp / "tokens.raw"
    with open(raw, "wb") as out, progress_bar() as bar, _collector_paused():
        task = bar.add_task(description, total=len(src), status="")
        for src_ids, tgt_ids in _encoded_chunks(tokenizer, src, tgt, chunk, encoder):
            read = len(src_ids)
            src_ids, tgt_ids, too_long = _short_pairs(src_ids, tgt_ids, max_length)
            dropped += too_long
            if truncate_to is not None:   # as truncate_pairs: a cut pair counts with the dropped ones
                dropped += int(((src_ids.lengths > truncate_to) | (tgt_ids.lengths > truncate_to)).sum())
                src_ids, tgt_ids = src_ids.truncated(truncate_to), tgt_ids.truncated(truncate_to)
            # the chunk at once: its ids in pair order (source, target, source, …) and their lengths
            sides = src_ids.interleaved(tgt_ids)
            out.write(sides.ids.astype(np.int32, copy=False).tobytes())
            offsets.extend(sides.lengths.tolist())
            digest.update(_fingerprint_bytes(sides))
            pairs += len(src_ids)
            bar.update(task, advance=read)
    # The .npy header needs the final size, known only now: the header, then the raw ids behind it.
    npy_from_raw(raw, tmp / "tokens.npy", np.int32)
    raw.unlink()
    offsets.close()
    return {"pairs": pairs, "tokens": offsets.position, "dropped_long": dropped, "max_length": max_length,
            "truncate_to": truncate_to, "fingerprint": digest.hexdigest(),
            "sha256": {name: file_sha256(tmp / name) for name in ("tokens.npy", "offsets.npy")}}


@contextlib.contextmanager
def _collector_paused():
    """Python's cycle collector off while chunks of short id lists come and go: they form no cycles,
    and with a large heap alive (torch, transformers) the collector's passes doubled tokenising time."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())


class EpochPlan:
    """One pass over the pairs as batches, flat: the pair indices of every batch in batch order
    (8 bytes a pair) and where each batch starts; ``plan[b]`` is batch b's list of indices."""

    def __init__(self, order: np.ndarray, bounds: np.ndarray):
        self.order, self.bounds = order, bounds

    def __len__(self) -> int:
        return len(self.bounds) - 1

    def __getitem__(self, b: int) -> list[int]:
        if not -len(self) <= b < len(self):
            raise IndexError(f"batch {b} out of range (0..{len(self) - 1})")
        b %= len(self)
        return self.order[self.bounds[b]:self.bounds[b + 1]].tolist()


def plan_epoch(pairs: TokenizedPairs, batch_tokens: int, seed: int, epoch: int, pool_batches: int = 64) -> EpochPlan:
    """The batches of one pass over ``pairs``: shuffled, sorted by length inside pools of a few
    hundred pairs, cut at ``batch_tokens`` (padded), and the batches shuffled again.

    Arrays instead of Python lists (a list of ints takes 36 bytes an entry), but the very order
    Python's lists gave: the same ``random.Random`` draws shuffle an ``array`` of indices, and a
    stable sort on (target, source) length orders each pool as ``sorted`` did."""
    rng = random.Random(seed * 100_003 + epoch)
    shuffled = array("q", range(len(pairs)))
    rng.shuffle(shuffled)   # the permutation depends only on the length and the draws
    order = np.frombuffer(shuffled, dtype=np.int64)
    s_len, t_len = pairs.lengths()   # lengths only: no pair is read from disk to plan an epoch
    s_len, t_len = np.asarray(s_len), np.asarray(t_len)
    pooled = np.empty_like(order)
    starts = array("q")
    pool_size = max(1, pool_batches * batch_tokens // 40)
    for start in range(0, len(order), pool_size):
        pool = order[start:start + pool_size]
        pool = pool[np.lexsort((s_len[pool], t_len[pool]))]   # stable: ties keep the shuffled order
        pooled[start:start + len(pool)] = pool
        longest, size = 0, 0
        for at, total in enumerate((s_len[pool] + t_len[pool]).tolist()):
            longest_next = max(longest, total)
            if size == 0 or longest_next * (size + 1) > batch_tokens:   # a new batch starts here
                starts.append(start + at)
                size, longest_next = 0, total
            size += 1
            longest = longest_next
    starts_np = np.frombuffer(starts, dtype=np.int64)
    ends = np.append(starts_np[1:], len(order))
    batch_order = list(range(len(starts_np)))
    rng.shuffle(batch_order)
    lengths = (ends - starts_np)[batch_order]
    bounds = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    out = np.concatenate([pooled[starts_np[b]:ends[b]] for b in batch_order]) if batch_order else order[:0]
    return EpochPlan(out, bounds)


def epoch_batches(pairs: TokenizedPairs, batch_tokens: int, seed: int, epoch: int, pool_batches: int = 64) -> list[list[int]]:
    """Index lists, one per batch, for one pass over ``pairs`` (plan_epoch's batches as lists)."""
    plan = plan_epoch(pairs, batch_tokens, seed, epoch, pool_batches)
    return [plan[b] for b in range(len(plan))]


def collate(pairs: TokenizedPairs, indices: list[int]) -> dict[str, torch.Tensor]:
    """Padded tensors for Marian: decoder inputs are the labels shifted right behind the start token (pad)."""
    src = [pairs.src[i] for i in indices]
    tgt = [pairs.tgt[i] for i in indices]
    s_len, t_len = max(map(len, src)), max(map(len, tgt))
    input_ids = torch.full((len(src), s_len), PAD_ID, dtype=torch.long)
    labels = torch.full((len(tgt), t_len), IGNORE, dtype=torch.long)
    for row, (s, t) in enumerate(zip(src, tgt)):
        input_ids[row, : len(s)] = torch.tensor(s)
        labels[row, : len(t)] = torch.tensor(t)
    decoder_input_ids = torch.full_like(labels, PAD_ID)
    decoder_input_ids[:, 1:] = labels[:, :-1].clamp(min=0)
    decoder_input_ids[:, 1:][labels[:, :-1] == IGNORE] = PAD_ID
    return {
        "input_ids": input_ids,
        "attention_mask": (input_ids != PAD_ID).long(),
        "decoder_input_ids": decoder_input_ids,
        "labels": labels,
    }


class BatchStream:
    """An endless stream of batches across epochs, addressed by the global step.

    Epochs can hold slightly different numbers of batches (length pools differ), so the stream
    walks the epochs' lengths to find where ``step`` falls; plans are cheap to rebuild.
    """

    def __init__(self, pairs: TokenizedPairs, batch_tokens: int, seed: int):
        if not len(pairs):
            raise ValueError("no training pairs left to batch (all were empty or too long?)")
        self.pairs, self.batch_tokens, self.seed = pairs, batch_tokens, seed
        self._plans: dict[int, EpochPlan] = {}
        self._lengths: dict[int, int] = {}

    def locate(self, step: int) -> tuple[int, int]:
        """(epoch, index within the epoch) of a global step."""
        epoch = 0
        while step >= self._length(epoch):
            step -= self._length(epoch)
            epoch += 1
        return epoch, step

    def batch(self, step: int) -> dict[str, torch.Tensor]:
        return collate(self.pairs, self.indices(step))

    def steps_in_epoch(self, epoch: int = 0) -> int:
        """How many batches one pass over every pair takes (epochs differ by a batch or two)."""
        return self._length(epoch)

    def indices(self, step: int) -> list[int]:
        """The pair indices of the batch at ``step`` (used to look teacher outputs up in a cache)."""
        epoch, index = self.locate(step)
        return self._plan(epoch)[index]

    def _length(self, epoch: int) -> int:
        if epoch not in self._lengths:
            self._lengths[epoch] = len(self._plan(epoch))
        return self._lengths[epoch]

    def _plan(self, epoch: int) -> EpochPlan:
        if epoch not in self._plans:
            if len(self._plans) > 1:   # the epoch being trained and the next: 8 bytes a pair each
                self._plans.pop(min(self._plans))
            self._plans[epoch] = plan_epoch(self.pairs, self.batch_tokens, self.seed, epoch)
        return self._plans[epoch]
