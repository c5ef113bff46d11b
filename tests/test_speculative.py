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


# --- the drafted tokens are the student's own samples ---


def _student_samples(student, tokenizer, sources, settings, max_new_tokens, seed):
    """Ancestral sampling from the student alone, written out without the module's helpers.

    Each source is encoded and decoded on its own (no padding anywhere); the draws from the shared
    generator follow the documented schedule: every block, one draw per step for every source whose
    sequence was not finished when the block began, tokens after EOS or the length limit discarded.
    """
    start, eos = student.config.decoder_start_token_id, student.config.eos_token_id
    generator = torch.Generator().manual_seed(seed)
    encoded = [tokenizer([src], return_tensors="pt") for src in sources]
    sequences = [[] for _ in sources]
    finished = lambda seq: bool(seq) and (seq[-1] == eos or len(seq) >= max_new_tokens)  # noqa: E731
    done = [False] * len(sources)
    with torch.no_grad():
        while not all(done):
            active = [r for r in range(len(sources)) if not done[r]]
            drafted = dict.fromkeys(active, 0)
            for _ in range(settings.block):
                probs = []
                for r in active:
                    prefix = torch.tensor([[start] + sequences[r]])
                    logits = student(**encoded[r], decoder_input_ids=prefix).logits[0, -1]
                    probs.append(torch.softmax(logits / settings.student_temperature, dim=-1))
                tokens = torch.multinomial(torch.stack(probs), 1, generator=generator)[:, 0].tolist()
                for r, token in zip(active, tokens):
                    if not finished(sequences[r]) and len(sequences[r]) < max_new_tokens:
                        sequences[r].append(token)
                        drafted[r] += 1
            for r in active:
                done[r] = finished(sequences[r]) or drafted[r] == 0
    return sequences


@pytest.fixture(scope="module")
def trained_student_untrained_teacher(tokenizer_dir, nano_checkpoint, lo_valid):
    """Roles swapped on purpose: the student is the trained nano model (it ends sentences with EOS
    at different lengths, so the batch has ragged prefixes) and the teacher is a fresh random model
    whose samples look nothing like the student's."""
    tokenizer = load_tokenizer(tokenizer_dir)
    student = load_model(nano_checkpoint)
    teacher = build_model("nano", vocab_size=len(tokenizer), seed=5, max_positions=64).eval()
    return tokenizer, student, teacher, lo_valid.src[:6]


@pytest.mark.parametrize("seed,block,student_temperature", [(0, 5, 0.7), (4, 3, 1.0), (9, 1, 0.5)])
def test_top_vocab_sequences_are_the_students_own_samples(trained_student_untrained_teacher, seed, block,
                                                          student_temperature):
    tokenizer, student, teacher, sources = trained_student_untrained_teacher
    settings = SpeculativeSettings(top_k=teacher.config.vocab_size, block=block,
                                   student_temperature=student_temperature, teacher_temperature=3.0)
    student.train()  # drafting must switch dropout off, and give the mode back afterwards
    enc = tokenizer(sources, return_tensors="pt", padding=True)
    seqs, stats = interleaved_targets(student, teacher, enc["input_ids"], enc["attention_mask"], settings, 16,
                                      torch.Generator().manual_seed(seed))
    assert student.training
    student.eval()
    expected = _student_samples(student, tokenizer, sources, settings, 16, seed)
    assert seqs == expected
    assert stats["accepted"] == stats["proposed"] == sum(len(s) for s in seqs)
    assert len({len(s) for s in seqs}) > 1  # some rows stopped at EOS, others ran to the limit


def test_teacher_samples_would_not_pass_for_the_students(trained_student_untrained_teacher):
    """The reference above tells the two models apart: drafting from the teacher would change the sequences."""
    tokenizer, student, teacher, sources = trained_student_untrained_teacher
    settings = SpeculativeSettings(top_k=teacher.config.vocab_size, block=5, student_temperature=0.7)
    assert (_student_samples(student, tokenizer, sources, settings, 16, 0)
            != _student_samples(teacher, tokenizer, sources, settings, 16, 0))


# --- the whole rule (draft, verify in the top-K, replace the first rejected token) on ragged prefixes ---


def _speculative_reference(student, teacher, tokenizer, sources, settings, max_new_tokens, seed):
    """Steps 1-4 of the module docstring, written out one unpadded source at a time.

    Generator schedule: every block, one batched student draw per step over the sources unfinished
    at the block's start; then, source by source, one teacher draw for the first rejected token.
    """
    start, eos = student.config.decoder_start_token_id, student.config.eos_token_id
    generator = torch.Generator().manual_seed(seed)
    encoded = [tokenizer([src], return_tensors="pt") for src in sources]
    sequences = [[] for _ in sources]
    finished = lambda seq: bool(seq) and (seq[-1] == eos or len(seq) >= max_new_tokens)  # noqa: E731
    done = [False] * len(sources)
    proposed = accepted = 0
    with torch.no_grad():
        while not all(done):
            active = [r for r in range(len(sources)) if not done[r]]
            drafts = {r: list(sequences[r]) for r in active}
            for _ in range(settings.block):
                probs = []
                for r in active:
                    logits = student(**encoded[r], decoder_input_ids=torch.tensor([[start] + drafts[r]])).logits[0, -1]
                    probs.append(torch.softmax(logits / settings.student_temperature, dim=-1))
                tokens = torch.multinomial(torch.stack(probs), 1, generator=generator)[:, 0].tolist()
                for r, token in zip(active, tokens):
                    if not finished(drafts[r]):
                        drafts[r].append(token)
            for r in active:
                before = len(sequences[r])
                # teacher logits at column j predict the token at sequence index j
                t_logits = teacher(**encoded[r], decoder_input_ids=torch.tensor([[start] + drafts[r]])).logits[0]
                for j in range(before, len(drafts[r])):
                    proposed += 1
                    if drafts[r][j] in set(t_logits[j].topk(settings.top_k).indices.tolist()):
                        sequences[r].append(drafts[r][j])
                        accepted += 1
                    else:
                        p_t = torch.softmax(t_logits[j] / settings.teacher_temperature, dim=-1)
                        sequences[r].append(int(torch.multinomial(p_t[None], 1, generator=generator)))
                        break
                done[r] = finished(sequences[r]) or len(drafts[r]) == before
    return sequences, {"proposed": proposed, "accepted": accepted}


@pytest.fixture(scope="module")
def related_pair(tokenizer_dir, nano_checkpoint, lo_valid):
    """Teacher: the trained nano model; student: the same model with its weights perturbed, so that
    some drafted tokens fall inside the teacher's top-K and some do not."""
    tokenizer = load_tokenizer(tokenizer_dir)
    teacher = load_model(nano_checkpoint).eval()
    student = load_model(nano_checkpoint).eval()
    g = torch.Generator().manual_seed(123)
    with torch.no_grad():
        for param in student.parameters():
            if param.numel() > 1:
                param.add_(0.2 * param.std() * torch.randn(param.shape, generator=g))
    return tokenizer, student, teacher, lo_valid.src[:6]


@pytest.mark.parametrize("seed,top_k,block", [(0, 5, 4), (2, 3, 5)])
def test_interleaved_sequences_follow_the_documented_rule(related_pair, seed, top_k, block):
    tokenizer, student, teacher, sources = related_pair
    settings = SpeculativeSettings(top_k=top_k, block=block, student_temperature=0.8, teacher_temperature=1.5)
    enc = tokenizer(sources, return_tensors="pt", padding=True)
    seqs, stats = interleaved_targets(student, teacher, enc["input_ids"], enc["attention_mask"], settings, 16,
                                      torch.Generator().manual_seed(seed))
    expected, expected_stats = _speculative_reference(student, teacher, tokenizer, sources, settings, 16, seed)
    assert seqs == expected
    assert stats == expected_stats
    # rejections happened, so the batch held prefixes of different lengths while drafting
    assert 0 < stats["accepted"] < stats["proposed"]
