"""The offline teacher cache on a real nano teacher: exactness at k = vocab, tail, reuse, training."""

import numpy as np
import pytest
import torch

from ekd_edge.data.tokenizer import load_tokenizer
from ekd_edge.distill.batches import BatchStream, collate, tokenize_pairs
from ekd_edge.distill.losses import forward_kl, jsd, reverse_kl
from ekd_edge.distill.recipe import DistillSettings, TrainingSettings
from ekd_edge.distill.teacher_cache import (CachedTeacher, build_teacher_cache, cached_kd_loss,
                                            collapse_student)
from ekd_edge.distill.trainer import train
from ekd_edge.models import build_model, load_model


@pytest.fixture(scope="module")
def setup(tokenizer_dir, nano_checkpoint, lo_train):
    tokenizer = load_tokenizer(tokenizer_dir)
    pairs = tokenize_pairs(tokenizer, lo_train.src[:60], lo_train.tgt[:60], max_length=62)
    teacher = load_model(nano_checkpoint)
    student = build_model("nano", vocab_size=len(tokenizer), seed=5, max_positions=64).eval()
    return pairs, teacher, student


def _online_and_cached(setup, tmp_path, k, loss, temperature=1.0, beta=0.5):
    pairs, teacher, student = setup
    cache = build_teacher_cache(teacher, _dir(teacher), pairs, tmp_path, k, temperature)
    idx = list(range(4, 20))
    batch = collate(pairs, idx)
    labels = batch.pop("labels")
    with torch.no_grad():
        s_logits, t_logits = student(**batch).logits, teacher(**batch).logits
    values, indices, tail = cache.targets(idx, labels.shape[1])
    cached = cached_kd_loss(loss, s_logits, values, indices, tail, labels, temperature, beta)
    online = {"forward_kl": lambda: forward_kl(s_logits, t_logits, labels, temperature),
              "reverse_kl": lambda: reverse_kl(s_logits, t_logits, labels, temperature),
              "jsd": lambda: jsd(s_logits, t_logits, labels, temperature, beta)}[loss]()
    return cached, online, cache


def _dir(teacher):
    return teacher.name_or_path


@pytest.mark.parametrize("loss", ["forward_kl", "reverse_kl", "jsd"])
def test_full_vocab_cache_equals_online_loss(setup, tmp_path, loss):
    vocab = setup[1].config.vocab_size
    cached, online, _ = _online_and_cached(setup, tmp_path, vocab, loss, temperature=2.0)
    assert online.item() > 0.01
    assert cached.item() == pytest.approx(online.item(), rel=1e-4)


def test_top_k_cache_keeps_the_tail_as_one_bucket(setup, tmp_path):
    cached, online, cache = _online_and_cached(setup, tmp_path, 8, "forward_kl")
    # the stored k values plus the tail are one distribution per position
    total = np.exp(cache.values[:50]).sum(-1) + np.exp(cache.tail[:50])
    np.testing.assert_allclose(total, 1.0, atol=1e-4)
    assert np.all(np.diff(cache.values[:50], axis=-1) <= 0)          # sorted, most likely first
    # collapsing loses detail inside the tail, so the divergence can only shrink (data processing)
    assert 0 < cached.item() <= online.item() + 1e-6


def test_cache_is_reused_not_recomputed(setup, tmp_path):
    pairs, teacher, _ = setup
    first = build_teacher_cache(teacher, _dir(teacher), pairs, tmp_path, 4)
    second = build_teacher_cache(teacher, _dir(teacher), pairs, tmp_path, 4)
    assert first.built and not second.built and first.directory == second.directory
    assert isinstance(second.values, np.memmap)
    other_k = build_teacher_cache(teacher, _dir(teacher), pairs, tmp_path, 5)
    assert other_k.built and other_k.directory != first.directory
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([first.directory.name, other_k.directory.name])


def test_training_with_the_cache_moves_the_student_toward_the_teacher(setup, tmp_path):
    pairs, teacher, _ = setup
    cache = build_teacher_cache(teacher, _dir(teacher), pairs, tmp_path, 16)
    stream = BatchStream(pairs, batch_tokens=512, seed=0)
    student = build_model("nano", vocab_size=teacher.config.vocab_size, seed=7, max_positions=64)
    distill = DistillSettings(loss="forward_kl", alpha=1.0)
    term = CachedTeacher(cache, stream, "forward_kl", 1.0, 0.5)

    def kd_now():
        student.eval()
        batch = stream.batch(0)
        labels = batch.pop("labels")
        with torch.no_grad():
            return term(student, 0, batch, student(**batch).logits, labels).item()

    before = kd_now()
    train(student, stream, 15, TrainingSettings(lr=5e-3, warmup_steps=0, label_smoothing=0.0), distill=distill,
          kd_term=term)
    assert kd_now() < 0.8 * before


def test_collapsed_student_is_a_distribution(setup):
    _, _, student = setup
    logits = torch.randn(2, 3, student.config.vocab_size)
    indices = logits.topk(5, dim=-1).indices
    assert torch.allclose(collapse_student(logits, indices, 1.5).exp().sum(-1), torch.ones(2, 3), atol=1e-5)
