"""Token-budget batching: deterministic, within budget, every pair once per epoch, correct shifting."""

import torch

from ekd_edge.data.tokenizer import load_tokenizer
from ekd_edge.distill.batches import BatchStream, collate, epoch_batches, tokenize_pairs
from ekd_edge.distill.losses import IGNORE


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
