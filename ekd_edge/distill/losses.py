"""Training losses, each normalised per non-padding target token.

Shapes: ``logits`` [batch, length, vocab]; ``labels`` [batch, length] with ``-100`` at padding.
Word-level KD losses compare the teacher's and the student's next-token distributions at every
target position, softened by a temperature T and scaled by T² so their gradients keep the same
size as the cross-entropy's when T changes (Hinton et al. 2015).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE = -100
KD_LOSSES = ("forward_kl", "reverse_kl", "jsd", "mse")


def _mask(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mask = labels != IGNORE
    return mask, mask.sum().clamp(min=1)


def label_smoothed_ce(logits: torch.Tensor, labels: torch.Tensor, smoothing: float = 0.1) -> torch.Tensor:
    """Cross-entropy against (1-ε)·one-hot + ε·uniform, averaged over target tokens."""
    mask, count = _mask(labels)
    logp = F.log_softmax(logits.float(), dim=-1)
    target = labels.clamp(min=0).unsqueeze(-1)
    nll = -logp.gather(-1, target).squeeze(-1)
    uniform = -logp.mean(dim=-1)
    loss = (1.0 - smoothing) * nll + smoothing * uniform
    return (loss * mask).sum() / count


def forward_kl(student_logits, teacher_logits, labels, temperature: float = 1.0) -> torch.Tensor:
    """KL(teacher ‖ student): the student covers every mode of the teacher (classic word-level KD)."""
    mask, count = _mask(labels)
    t = temperature
    log_s = F.log_softmax(student_logits.float() / t, dim=-1)
    log_t = F.log_softmax(teacher_logits.float() / t, dim=-1)
    kl = (log_t.exp() * (log_t - log_s)).sum(-1)
    return (kl * mask).sum() / count * t * t


def reverse_kl(student_logits, teacher_logits, labels, temperature: float = 1.0) -> torch.Tensor:
    """KL(student ‖ teacher): mode-seeking, the student may drop low-probability teacher modes."""
    return forward_kl(teacher_logits, student_logits, labels, temperature)


def jsd(student_logits, teacher_logits, labels, temperature: float = 1.0, beta: float = 0.5) -> torch.Tensor:
    """Generalised Jensen-Shannon divergence with mixture m = β·p_T + (1-β)·p_S.

    JSD(β) = β·KL(p_T ‖ m) + (1-β)·KL(p_S ‖ m), divided by β(1-β) in the limits' spirit so that
    β → 0 tends to forward KL and β → 1 to reverse KL (Agarwal et al. 2024); the endpoints
    are returned exactly.
    """
    if beta <= 0.0:
        return forward_kl(student_logits, teacher_logits, labels, temperature)
    if beta >= 1.0:
        return reverse_kl(student_logits, teacher_logits, labels, temperature)
    mask, count = _mask(labels)
    t = temperature
    log_s = F.log_softmax(student_logits.float() / t, dim=-1)
    log_t = F.log_softmax(teacher_logits.float() / t, dim=-1)
    log_m = torch.logsumexp(torch.stack([log_t + torch.log(torch.tensor(beta)),
                                         log_s + torch.log(torch.tensor(1.0 - beta))]), dim=0)
    kl_t = (log_t.exp() * (log_t - log_m)).sum(-1)
    kl_s = (log_s.exp() * (log_s - log_m)).sum(-1)
    value = (beta * kl_t + (1.0 - beta) * kl_s) / (beta * (1.0 - beta))
    return (value * mask).sum() / count * t * t


def logit_mse(student_logits, teacher_logits, labels, temperature: float = 1.0) -> torch.Tensor:
    """Mean squared error between raw logits, averaged over vocabulary and target tokens."""
    mask, count = _mask(labels)
    err = (student_logits.float() - teacher_logits.float()).pow(2).mean(-1)
    return (err * mask).sum() / count


def kd_loss(name: str, student_logits, teacher_logits, labels, temperature: float = 1.0, beta: float = 0.5):
    if name == "forward_kl":
        return forward_kl(student_logits, teacher_logits, labels, temperature)
    if name == "reverse_kl":
        return reverse_kl(student_logits, teacher_logits, labels, temperature)
    if name == "jsd":
        return jsd(student_logits, teacher_logits, labels, temperature, beta)
    if name == "mse":
        return logit_mse(student_logits, teacher_logits, labels, temperature)
    raise ValueError(f"unknown KD loss {name!r}; choose one of {', '.join(KD_LOSSES)}")
