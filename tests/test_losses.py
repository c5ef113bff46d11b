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


# --- every KD loss at T != 1 against its written-out formula, with torch ops on a wider vocabulary ---


@pytest.fixture
def wide_logits():
    g = torch.Generator().manual_seed(7)
    student = torch.randn(3, 4, 11, generator=g) * 1.5
    teacher = torch.randn(3, 4, 11, generator=g) * 2.5 + 0.3
    labels = torch.tensor([[2, 7, IGNORE, IGNORE], [0, 1, 2, 3], [10, IGNORE, IGNORE, IGNORE]])
    return student, teacher, labels


def _softened(student, teacher, labels, temperature):
    """p_S and p_T = softmax(z / T) at the non-padding positions only, as [tokens, vocab]."""
    keep = labels != IGNORE
    p_s = torch.softmax(student[keep].double() / temperature, dim=-1)
    p_t = torch.softmax(teacher[keep].double() / temperature, dim=-1)
    return p_s, p_t


def _kl_rows(p, q):
    return (p * (p.log() - q.log())).sum(-1)


def expected_kd(name, student, teacher, labels, temperature, beta):
    """The documented value: T² · mean over target tokens of the divergence (MSE: raw logits, no T)."""
    if name == "mse":
        keep = labels != IGNORE
        return ((student[keep].double() - teacher[keep].double()) ** 2).mean(-1).mean()
    p_s, p_t = _softened(student, teacher, labels, temperature)
    if name == "forward_kl":
        per_token = _kl_rows(p_t, p_s)
    elif name == "reverse_kl":
        per_token = _kl_rows(p_s, p_t)
    else:  # jsd with mixture m = β·p_T + (1 − β)·p_S, divided by β(1 − β)
        m = beta * p_t + (1 - beta) * p_s
        per_token = (beta * _kl_rows(p_t, m) + (1 - beta) * _kl_rows(p_s, m)) / (beta * (1 - beta))
    return temperature**2 * per_token.mean()


@pytest.mark.parametrize("temperature", [0.5, 2.0, 4.0])
@pytest.mark.parametrize("name", ["forward_kl", "reverse_kl", "jsd", "mse"])
def test_kd_losses_at_temperature_match_the_written_out_formula(wide_logits, name, temperature):
    student, teacher, labels = wide_logits
    beta = 0.3
    expected = expected_kd(name, student, teacher, labels, temperature, beta).float()
    got = kd_loss(name, student, teacher, labels, temperature=temperature, beta=beta)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    direct = {"forward_kl": lambda: forward_kl(student, teacher, labels, temperature),
              "reverse_kl": lambda: reverse_kl(student, teacher, labels, temperature),
              "jsd": lambda: jsd(student, teacher, labels, temperature, beta),
              "mse": lambda: logit_mse(student, teacher, labels, temperature)}[name]()
    torch.testing.assert_close(direct, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("beta", [0.1, 0.5, 0.8])
def test_jsd_beta_mixture_at_temperature(wide_logits, beta):
    student, teacher, labels = wide_logits
    expected = expected_kd("jsd", student, teacher, labels, 2.0, beta).float()
    torch.testing.assert_close(jsd(student, teacher, labels, 2.0, beta), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(kd_loss("jsd", student, teacher, labels, 2.0, beta), expected, rtol=1e-5, atol=1e-6)
    # the exact endpoints keep the temperature too
    fwd = expected_kd("forward_kl", student, teacher, labels, 2.0, beta).float()
    rev = expected_kd("reverse_kl", student, teacher, labels, 2.0, beta).float()
    torch.testing.assert_close(jsd(student, teacher, labels, 2.0, 0.0), fwd, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(jsd(student, teacher, labels, 2.0, 1.0), rev, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("temperature", [0.5, 1.0, 3.0])
def test_forward_kl_gradient_is_t_times_prob_difference(wide_logits, temperature):
    """The T² factor is there for the gradient: ∂/∂z_S [T²·KL(p_T ‖ p_S)] = T·(p_S − p_T) per token."""
    student, teacher, labels = wide_logits
    z = student.clone().requires_grad_(True)
    forward_kl(z, teacher, labels, temperature).backward()
    keep = labels != IGNORE
    p_s = torch.softmax(student / temperature, dim=-1)
    p_t = torch.softmax(teacher / temperature, dim=-1)
    expected = temperature * (p_s - p_t) * keep.unsqueeze(-1) / keep.sum()
    torch.testing.assert_close(z.grad, expected, rtol=1e-4, atol=1e-6)
