"""Token-budget batching: deterministic, within budget, every pair once per epoch, correct shifting;
the tokenised corpus kept on disk (memory-mapped), reused, and rebuilt when damaged."""

import os

import numpy as np
import pytest
import torch

from ekd_edge.data.tokenizer import load_tokenizer
from ekd_edge.distill import batches
from ekd_edge.distill.batches import (BatchStream, MappedPairs, collate, epoch_batches, fingerprint_pairs,
                                      tokenize_pairs, tokenize_to_disk, truncate_pairs)
from ekd_edge.distill.losses import IGNORE
from ekd_edge.distill.teacher_cache import pairs_fingerprint
from ekd_edge.errors import EkdError


def test_batches_cover_each_pair_once_and_respect_the_budget(tokenizer_dir, lo_train):
    pairs = tokenize_pairs(load_tokenizer(tokenizer_dir), lo_train.src, lo_train.tgt, max_length=40)
    assert pairs.dropped_long > 0 and len(pairs) + pairs.dropped_long == len(lo_train)
    assert max(map(len, pairs.src)) <= 40 and max(map(len, pairs.tgt)) <= 40
    plan = epoch_batches(pairs, batch_tokens=600, seed=3, epoch=0)
    flat = sorted(i for batch in plan for i in batch)
    assert flat == list(range(len(pairs)))
    for batch in plan:
        longest = max(len(pairs.src[i]) + len(pairs.tgt[i]) for i in batch)
        assert len(batch) == 1 or longest * len(batch) <= 600
    assert plan == epoch_batches(pairs, 600, seed=3, epoch=0)
    assert plan != epoch_batches(pairs, 600, seed=3, epoch=1)


def test_stream_addresses_steps_across_epochs(tokenizer_dir, lo_train):
    pairs = tokenize_pairs(load_tokenizer(tokenizer_dir), lo_train.src[:200], lo_train.tgt[:200], max_length=40)
    stream = BatchStream(pairs, batch_tokens=800, seed=1)
    per_epoch = len(epoch_batches(pairs, 800, 1, 0))
    assert stream.locate(per_epoch + 2) == (1, 2)
    again = BatchStream(pairs, batch_tokens=800, seed=1)
    assert torch.equal(stream.batch(per_epoch + 2)["labels"], again.batch(per_epoch + 2)["labels"])


def test_collate_shifts_labels_behind_the_start_token(tokenizer_dir, lo_train):
    pairs = tokenize_pairs(load_tokenizer(tokenizer_dir), lo_train.src[:4], lo_train.tgt[:4], max_length=200)
    batch = collate(pairs, [0, 1])
    labels, dec = batch["labels"], batch["decoder_input_ids"]
    for row, i in enumerate([0, 1]):
        target = pairs.tgt[i]
        assert labels[row, : len(target)].tolist() == target
        assert (labels[row, len(target):] == IGNORE).all()
        assert dec[row, 0] == 0 and dec[row, 1 : len(target)].tolist() == target[:-1]
    assert (batch["attention_mask"].sum(1) == torch.tensor([len(pairs.src[0]), len(pairs.src[1])])).all()


def _same_pairs(a, b):
    assert len(a) == len(b) and a.dropped_long == b.dropped_long
    assert [a.src[i] for i in range(len(a))] == [b.src[i] for i in range(len(b))]
    assert [a.tgt[i] for i in range(len(a))] == [b.tgt[i] for i in range(len(b))]


def test_pairs_on_disk_equal_the_in_memory_tokenisation(tokenizer_dir, lo_train, tmp_path):
    tokenizer = load_tokenizer(tokenizer_dir)
    src, tgt = lo_train.src[:300], lo_train.tgt[:300]
    memory = tokenize_pairs(tokenizer, src, tgt, max_length=40)
    disk = tokenize_to_disk(tokenizer, src, tgt, 40, tmp_path, chunk=64)   # several chunks
    assert isinstance(disk, MappedPairs) and isinstance(disk.src[0], list)
    assert memory.dropped_long > 0
    _same_pairs(disk, memory)
    assert disk.target_tokens() == memory.target_tokens()
    assert all(np.array_equal(a, b) for a, b in zip(disk.lengths(), memory.lengths()))
    assert disk.src[-1] == memory.src[-1] and disk.tgt[2:4] == memory.tgt[2:4]
    assert pairs_fingerprint(disk) == fingerprint_pairs(memory.src, memory.tgt)   # teacher caches still found
    assert epoch_batches(disk, 600, seed=3, epoch=0) == epoch_batches(memory, 600, seed=3, epoch=0)
    assert torch.equal(collate(disk, [5, 1, 9])["labels"], collate(memory, [5, 1, 9])["labels"])
    # the "truncate" long-pair policy is applied before writing
    cut = tokenize_to_disk(tokenizer, src, tgt, 1 << 30, tmp_path, truncate_to=12)
    _same_pairs(cut, truncate_pairs(tokenize_pairs(tokenizer, src, tgt, 1 << 30), 12))
    assert len(list(tmp_path.glob("pairs-*"))) == 2


def test_pairs_on_disk_are_reused_not_retokenised(tokenizer_dir, lo_train, tmp_path, monkeypatch):
    tokenizer = load_tokenizer(tokenizer_dir)
    src, tgt = lo_train.src[:50], lo_train.tgt[:50]
    first = tokenize_to_disk(tokenizer, src, tgt, 40, tmp_path)
    stamps = {p.name: p.stat().st_mtime_ns for p in first.directory.iterdir()}

    def no_tokenizing(*args, **kwargs):
        raise AssertionError("tokenised again")

    monkeypatch.setattr(batches, "tokenize_pairs", no_tokenizing)
    again = tokenize_to_disk(tokenizer, src, tgt, 40, tmp_path)
    assert again.directory == first.directory
    assert {p.name: p.stat().st_mtime_ns for p in again.directory.iterdir()} == stamps
    _same_pairs(again, first)
    # other texts or another length limit make another key
    monkeypatch.undo()
    assert tokenize_to_disk(tokenizer, src, tgt, 30, tmp_path).directory != first.directory
    assert tokenize_to_disk(tokenizer, src[:49], tgt[:49], 40, tmp_path).directory != first.directory


@pytest.mark.parametrize("damage", ["truncate_tokens", "flip_byte", "truncate_offsets", "no_meta"])
def test_damaged_pairs_cache_is_rejected_then_rebuilt(tokenizer_dir, lo_train, tmp_path, damage):
    tokenizer = load_tokenizer(tokenizer_dir)
    src, tgt = lo_train.src[:50], lo_train.tgt[:50]
    good = tokenize_to_disk(tokenizer, src, tgt, 40, tmp_path)
    reference = [good.tgt[i] for i in range(len(good))]
    directory = good.directory
    del good
    tokens, offsets = directory / "tokens.npy", directory / "offsets.npy"
    if damage == "truncate_tokens":
        os.truncate(tokens, tokens.stat().st_size - 8)
    elif damage == "flip_byte":   # same size, one id changed: only the checksum can tell
        data = bytearray(tokens.read_bytes())
        data[-3] ^= 0x01
        tokens.write_bytes(bytes(data))
    elif damage == "truncate_offsets":
        os.truncate(offsets, 100)
    else:
        (directory / "meta.json").unlink()
    with pytest.raises(EkdError, match="damaged tokenized-corpus cache"):
        MappedPairs.open(directory)
    rebuilt = tokenize_to_disk(tokenizer, src, tgt, 40, tmp_path)
    assert rebuilt.directory == directory and [rebuilt.tgt[i] for i in range(len(rebuilt))] == reference
    MappedPairs.open(directory)   # sound again


def lists_plan(pairs, batch_tokens: int, seed: int, epoch: int, pool_batches: int = 64) -> list[list[int]]:
    """The epoch plan as it was computed with Python lists, kept as the specification the array
    version must reproduce exactly: every run trained before (the demo's students among them)
    walked its data in this order."""
    import random

    rng = random.Random(seed * 100_003 + epoch)
    order = list(range(len(pairs)))
    rng.shuffle(order)
    s_len, t_len = [len(s) for s in pairs.src], [len(t) for t in pairs.tgt]
    batches: list[list[int]] = []
    pool_size = max(1, pool_batches * batch_tokens // 40)
    for start in range(0, len(order), pool_size):
        pool = sorted(order[start:start + pool_size], key=lambda i: (t_len[i], s_len[i]))
        batch, longest = [], 0
        for i in pool:
            longest_next = max(longest, s_len[i] + t_len[i])
            if batch and longest_next * (len(batch) + 1) > batch_tokens:
                batches.append(batch)
                batch, longest_next = [], s_len[i] + t_len[i]
            batch.append(i)
            longest = longest_next
        if batch:
            batches.append(batch)
    rng.shuffle(batches)
    return batches


@pytest.mark.parametrize("batch_tokens, seed, epoch, pool_batches", [(600, 3, 0, 64), (2048, 1, 2, 64), (300, 7, 1, 2),
                                                                    (5, 2, 0, 1)])
def test_the_array_plan_is_the_list_plan(tokenizer_dir, lo_train, batch_tokens, seed, epoch, pool_batches):
    """Many equal lengths (ties the sort must break by the shuffled order), several pools, a budget
    smaller than any pair (one pair a batch)."""
    pairs = tokenize_pairs(load_tokenizer(tokenizer_dir), lo_train.src[:3000], lo_train.tgt[:3000], max_length=60)
    assert epoch_batches(pairs, batch_tokens, seed, epoch, pool_batches) == \
        lists_plan(pairs, batch_tokens, seed, epoch, pool_batches)
