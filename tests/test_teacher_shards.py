"""The teacher cache built as training needs it, on a real nano teacher: the same rows as the eager
cache, teacher passes only over the pairs the stage trains on, and shards that survive a kill."""

import shutil

import numpy as np
import pytest

from ekd_edge.data.tokenizer import load_tokenizer
from ekd_edge.distill.batches import BatchStream, tokenize_pairs
from ekd_edge.distill.teacher_cache import TeacherCache, build_teacher_cache
from ekd_edge.distill.teacher_shards import ShardedTeacherCache, open_teacher_cache
from ekd_edge.models import load_model

pytestmark = pytest.mark.usefixtures("single_torch_thread")
K = 6


@pytest.fixture(scope="module")
def setup(tokenizer_dir, nano_checkpoint, lo_train):
    tokenizer = load_tokenizer(tokenizer_dir)
    pairs = tokenize_pairs(tokenizer, lo_train.src[:400], lo_train.tgt[:400], max_length=62)
    stream = BatchStream(pairs, batch_tokens=300, seed=3)    # about 20 pairs a batch, ~20 batches an epoch
    return pairs, stream, load_model(nano_checkpoint), nano_checkpoint


def trained_pairs(stream, steps) -> set[int]:
    return {p for s in steps for p in stream.indices(s)}


def test_rows_equal_the_eager_caches(setup, tmp_path):
    pairs, stream, teacher, directory = setup
    eager = build_teacher_cache(teacher, directory, pairs, tmp_path / "eager", K)
    shards = ShardedTeacherCache(teacher, directory, pairs, stream, tmp_path / "shards", K, stop_step=8, lookahead=3)
    for step in range(8):
        shards.prepare(step)
        idx = stream.indices(step)
        length = max(len(pairs.tgt[p]) for p in idx)
        (v1, i1, t1), (v2, i2, t2) = eager.targets(idx, length), shards.targets(idx, length)
        np.testing.assert_allclose(v2.numpy(), v1.numpy(), atol=1e-5)
        np.testing.assert_allclose(t2.numpy(), t1.numpy(), atol=1e-4)
        assert (i1 == i2).float().mean() > 0.999   # only a near-tie may swap two ids
    assert shards.record["shards"] == 3             # steps 0-2, 3-5, 6-7


def test_the_teacher_sees_only_the_pairs_the_stage_trains_on(setup, tmp_path):
    pairs, stream, teacher, directory = setup
    cache = ShardedTeacherCache(teacher, directory, pairs, stream, tmp_path, K, stop_step=5, lookahead=64)
    for step in range(5):
        cache.prepare(step)
    used = trained_pairs(stream, range(5))
    assert cache.passed == len(used) == cache.record["cached_pairs"] == cache.record["passed_now"]
    assert len(used) < len(pairs)                  # a stage shorter than an epoch: the rest never ran
    assert {p for p in range(len(pairs)) if cache._where[p] >= 0} == used
    with pytest.raises(KeyError):
        cache.rows(next(p for p in range(len(pairs)) if p not in used))


def test_a_killed_build_keeps_finished_shards_and_redoes_only_the_lost_one(setup, tmp_path):
    pairs, stream, teacher, directory = setup
    first = ShardedTeacherCache(teacher, directory, pairs, stream, tmp_path, K, stop_step=9, lookahead=3)
    for step in range(9):
        first.prepare(step)
    shard_dirs = sorted(first.directory.glob("shard-*"))
    assert len(shard_dirs) == 3
    # the kill: the last shard never made it out of its staging directory
    lost = set(np.load(shard_dirs[-1] / "pairs.npy").tolist())
    staging = first.directory / f".staging.{shard_dirs[-1].name}"
    shutil.move(shard_dirs[-1], staging)
    again = ShardedTeacherCache(teacher, directory, pairs, stream, tmp_path, K, stop_step=9, lookahead=3)
    assert again.record["cached_pairs"] == first.record["cached_pairs"] - len(lost)
    again.prepare(7)        # resumed from a checkpoint in the middle of the lost shard's window (steps 6-8)
    for step in range(9):
        again.prepare(step)
    assert again.passed == len(lost)               # nothing finished is redone, nothing lost is skipped
    # the same window, so the same teacher batches: the rows are bit for bit those of the lost shard
    for step in range(9):
        for p in stream.indices(step):
            assert all(np.array_equal(a, b) for a, b in zip(again.rows(p), first.rows(p)))


def test_auto_takes_the_eager_cache_only_when_the_stage_sees_every_pair(setup, tmp_path):
    pairs, stream, teacher, directory = setup
    epoch = stream.steps_in_epoch(0)
    short = open_teacher_cache(teacher, directory, stream, tmp_path, K, 1.0, 0, epoch - 1)
    whole = open_teacher_cache(teacher, directory, stream, tmp_path, K, 1.0, 0, epoch)
    assert isinstance(short, ShardedTeacherCache) and isinstance(whole, TeacherCache)
    # once a whole cache exists, a short stage reads it instead of passing the teacher again
    assert isinstance(open_teacher_cache(teacher, directory, stream, tmp_path, K, 1.0, 0, 2), TeacherCache)
    with pytest.raises(ValueError, match="layout"):
        open_teacher_cache(teacher, directory, stream, tmp_path, K, 1.0, 0, 5, layout="lazy")
