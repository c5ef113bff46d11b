"""Each loss against a direct formula written out element by element."""

import math

import pytest
import torch

from ekd_edge.distill.losses import IGNORE, forward_kl, jsd, kd_loss, label_smoothed_ce, logit_mse, reverse_kl


@pytest.fixture
def logits():
    g = torch.Generator().manual_seed(0)
    student = torch.randn(2, 3, 5, generator=g)
    teacher = torch.randn(2, 3, 5, generator=g) * 2
    labels = torch.tensor([[1, 4, IGNORE], [0, 2, 3]])
    return student, teacher, labels


def positions(labels):
    return [(b, t) for b in range(labels.shape[0]) for t in range(labels.shape[1]) if labels[b, t] != IGNORE]


def softmax(row, temperature=1.0):
    z = [math.exp(x / temperature) for x in row]
    return [x / sum(z) for x in z]


def kl(p, q):
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))


def test_label_smoothed_ce(logits):
    student, _, labels = logits
    eps, total = 0.1, 0.0
    for b, t in positions(labels):
        p = softmax(student[b, t].tolist())
        logp = [math.log(x) for x in p]
        total += (1 - eps) * -logp[labels[b, t]] + eps * -sum(logp) / len(logp)
    expected = total / len(positions(labels))
    assert label_smoothed_ce(student, labels, eps).item() == pytest.approx(expected, rel=1e-5)
    plain = torch.nn.functional.cross_entropy(student.reshape(-1, 5), labels.reshape(-1), ignore_index=IGNORE)
    assert label_smoothed_ce(student, labels, 0.0).item() == pytest.approx(plain.item(), rel=1e-5)


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_forward_and_reverse_kl(logits, temperature):
    student, teacher, labels = logits
    fwd = rev = 0.0
    for b, t in positions(labels):
        ps, pt = softmax(student[b, t].tolist(), temperature), softmax(teacher[b, t].tolist(), temperature)
        fwd += kl(pt, ps)
        rev += kl(ps, pt)
    n, scale = len(positions(labels)), temperature**2
    assert forward_kl(student, teacher, labels, temperature).item() == pytest.approx(fwd / n * scale, rel=1e-5)
    assert reverse_kl(student, teacher, labels, temperature).item() == pytest.approx(rev / n * scale, rel=1e-5)


def test_jsd_formula_and_limits(logits):
    student, teacher, labels = logits
    beta, total = 0.3, 0.0
    for b, t in positions(labels):
        ps, pt = softmax(student[b, t].tolist()), softmax(teacher[b, t].tolist())
        m = [beta * a + (1 - beta) * c for a, c in zip(pt, ps)]
        total += (beta * kl(pt, m) + (1 - beta) * kl(ps, m)) / (beta * (1 - beta))
    assert jsd(student, teacher, labels, beta=beta).item() == pytest.approx(total / len(positions(labels)), rel=1e-5)
    fwd, rev = forward_kl(student, teacher, labels).item(), reverse_kl(student, teacher, labels).item()
    assert jsd(student, teacher, labels, beta=0.0).item() == pytest.approx(fwd)
    assert jsd(student, teacher, labels, beta=1.0).item() == pytest.approx(rev)
    assert jsd(student, teacher, labels, beta=1e-4).item() == pytest.approx(fwd, rel=1e-2)
    assert jsd(student, teacher, labels, beta=1 - 1e-4).item() == pytest.approx(rev, rel=1e-2)


def test_logit_mse(logits):
    student, teacher, labels = logits
    expected = sum(((student[b, t] - teacher[b, t]) ** 2).mean().item() for b, t in positions(labels))
    assert logit_mse(student, teacher, labels).item() == pytest.approx(expected / len(positions(labels)), rel=1e-5)


def test_padding_never_counts(logits):
    student, teacher, labels = logits
    changed = student.clone()
    changed[0, 2] += 100.0  # the padded position
    for name in ("forward_kl", "reverse_kl", "jsd", "mse"):
        assert kd_loss(name, changed, teacher, labels).item() == pytest.approx(kd_loss(name, student, teacher, labels).item())
    assert label_smoothed_ce(changed, labels).item() == pytest.approx(label_smoothed_ce(student, labels).item())


def test_kd_is_zero_when_student_equals_teacher(logits):
    _, teacher, labels = logits
    for name in ("forward_kl", "reverse_kl", "jsd", "mse"):
        assert kd_loss(name, teacher, teacher, labels).item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="unknown KD loss"):
        kd_loss("kl", teacher, teacher, labels)
