"""Token-budget batches of tokenised pairs, deterministic for a given seed and epoch.

Pairs are shuffled, then sorted by length inside pools of a few hundred so each batch holds
pairs of similar length (little padding), and the batches themselves are shuffled again.
Because the order is a pure function of (seed, epoch), a resumed run can find its place again
from the step count alone.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from ekd_edge.data.tokenizer import PAD_ID
from ekd_edge.distill.losses import IGNORE


@dataclass
class TokenizedPairs:
    src: list[list[int]]
    tgt: list[list[int]]
    dropped_long: int = 0

    def __len__(self) -> int:
        return len(self.src)

    def target_tokens(self) -> int:
        return sum(len(t) for t in self.tgt)


def tokenize_pairs(tokenizer, src: list[str], tgt: list[str], max_length: int, chunk: int = 4096) -> TokenizedPairs:
    """Token ids (EOS included) of both sides; pairs longer than ``max_length`` on either side are dropped."""
    out_src, out_tgt, dropped = [], [], 0
    for i in range(0, len(src), chunk):
        enc = tokenizer(src[i:i + chunk], text_target=tgt[i:i + chunk])
        for s, t in zip(enc["input_ids"], enc["labels"]):
            if len(s) > max_length or len(t) > max_length:
                dropped += 1
                continue
            out_src.append(s)
            out_tgt.append(t)
    return TokenizedPairs(out_src, out_tgt, dropped)


def epoch_batches(pairs: TokenizedPairs, batch_tokens: int, seed: int, epoch: int, pool_batches: int = 64) -> list[list[int]]:
    """Index lists, one per batch, for one pass over ``pairs``."""
    rng = random.Random(seed * 100_003 + epoch)
    order = list(range(len(pairs)))
    rng.shuffle(order)
    batches: list[list[int]] = []
    pool_size = max(1, pool_batches * batch_tokens // 40)
    for start in range(0, len(order), pool_size):
        pool = sorted(order[start:start + pool_size], key=lambda i: (len(pairs.tgt[i]), len(pairs.src[i])))
        batch, longest = [], 0
        for i in pool:
            longest_next = max(longest, len(pairs.src[i]) + len(pairs.tgt[i]))
            if batch and longest_next * (len(batch) + 1) > batch_tokens:
                batches.append(batch)
                batch, longest_next = [], len(pairs.src[i]) + len(pairs.tgt[i])
            batch.append(i)
            longest = longest_next
        if batch:
            batches.append(batch)
    rng.shuffle(batches)
    return batches


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
        self._plans: dict[int, list[list[int]]] = {}
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

    def indices(self, step: int) -> list[int]:
        """The pair indices of the batch at ``step`` (used to look teacher outputs up in a cache)."""
        epoch, index = self.locate(step)
        return self._plan(epoch)[index]

    def _length(self, epoch: int) -> int:
        if epoch not in self._lengths:
            self._lengths[epoch] = len(self._plan(epoch))
        return self._lengths[epoch]

    def _plan(self, epoch: int) -> list[list[int]]:
        if epoch not in self._plans:
            if len(self._plans) > 4:
                self._plans.pop(min(self._plans))
            self._plans[epoch] = epoch_batches(self.pairs, self.batch_tokens, self.seed, epoch)
        return self._plans[epoch]
