"""Speculative KD on real nano models: the verification rule, its limits, and a training step."""

import pytest
import torch

from ekd_edge.data.tokenizer import load_tokenizer
from ekd_edge.distill.speculative import (SpeculativeSettings, SpeculativeTeacher, interleaved_targets,
                                          sequences_to_batch)
from ekd_edge.models import build_model, load_model


@pytest.fixture(scope="module")
def models(tokenizer_dir, nano_checkpoint, lo_valid):
    tokenizer = load_tokenizer(tokenizer_dir)
    teacher = load_model(nano_checkpoint).eval()
    student = build_model("nano", vocab_size=len(tokenizer), seed=11, max_positions=64).eval()
    enc = tokenizer(lo_valid.src[:6], return_tensors="pt", padding=True)
    return tokenizer, teacher, student, enc


def test_top_1_with_a_cold_teacher_reproduces_teacher_greedy(models):
    tokenizer, teacher, student, enc = models
    settings = SpeculativeSettings(top_k=1, block=3, student_temperature=1.0, teacher_temperature=1e-4)
    seqs, stats = interleaved_targets(student, teacher, enc["input_ids"], enc["attention_mask"], settings, 12,
                                      torch.Generator().manual_seed(0))
    greedy = teacher.generate(**enc, max_new_tokens=24, num_beams=1, do_sample=False)
    for row, seq in enumerate(seqs):
        expected = greedy[row, 1:].tolist()
        expected = expected[: expected.index(teacher.config.eos_token_id) + 1] if teacher.config.eos_token_id in expected else expected
        assert seq == expected[: len(seq)] and len(seq) == min(len(expected), 12)
    assert stats["proposed"] > stats["accepted"]


def test_top_vocab_accepts_every_student_token(models):
    tokenizer, teacher, student, enc = models
    settings = SpeculativeSettings(top_k=teacher.config.vocab_size, block=5)
    seqs, stats = interleaved_targets(student, teacher, enc["input_ids"], enc["attention_mask"], settings, 10,
                                      torch.Generator().manual_seed(1))
    assert stats["accepted"] == stats["proposed"] == sum(len(s) for s in seqs)
    assert all(1 <= len(s) <= 10 for s in seqs)


def test_sequences_to_batch_teacher_forces_with_start_token():
    dec, labels = sequences_to_batch([[5, 6, 1], [7]], start=58)
    assert labels.tolist() == [[5, 6, 1], [7, -100, -100]]
    assert dec.tolist() == [[58, 5, 6], [58, 7, 0]]   # start token, shifted labels, padding (id 0)


def test_speculative_term_has_gradient_and_counts_acceptance(models):
    tokenizer, teacher, _, enc = models
    student = build_model("nano", vocab_size=len(tokenizer), seed=12, max_positions=64).train()
    term = SpeculativeTeacher(teacher, SpeculativeSettings(top_k=25, block=5), "forward_kl", 1.0, 0.5, seed=3)
    labels = torch.zeros(enc["input_ids"].shape[0], 8, dtype=torch.long)
    kd = term(student, 0, dict(enc), None, labels)
    kd.backward()
    assert kd.item() > 0 and student.lm_head.weight.grad is not None
    assert 0.0 < term.acceptance() <= 1.0
