"""Word-level KD across vocabularies: a teacher whose ids are not the student's, through an id map.

When the student adopted a teacher's tokenizer (data/adopt.py) its vocabulary is the teacher's
pieces, re-numbered and possibly trimmed. Each training step then

1. rewrites the student's batch in teacher ids (``teacher_ids[student_id]``), puts back what the
   teacher's format wants around it (NLLB/mBART's source language token, a T5 task prefix; the
   forced target language token after the decoder's start), and runs the teacher;
2. maps the teacher's next-token distribution onto the student's vocabulary: each kept piece
   keeps its probability, and the mass on pieces the student does not have (the "tail") is added
   to the student's <unk> — the token its trimmed tokenizer emits for any dropped piece — so the
   target stays a proper distribution over the student's ids and no teacher mass is dropped;
3. compares it with the student's distribution with the recipe's KD loss.

Where the teacher puts no mass outside the kept set, this is exactly the full-vocabulary loss of a
student whose logits outside the kept set are −∞ (tested); the <unk> term is the only difference
otherwise. ``logit_mse`` compares raw logits of the kept pieces (it has no distribution to map).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ekd_edge.distill.losses import kd_loss

TAIL_FLOOR = -80.0   # log of an (almost) empty tail: finite, so no 0·log 0 NaN


def mapped_log_probs(teacher_logits: torch.Tensor, teacher_ids: torch.Tensor, unk_id: int,
                     temperature: float = 1.0) -> torch.Tensor:
    """log p_T at ``temperature`` over the student's ids, with the tail mass added to <unk>."""
    log_p = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    kept = log_p.index_select(-1, teacher_ids)
    # the tail summed over the dropped ids themselves (not 1 − Σ kept: that rounds to ~1e-7 in float32)
    dropped = torch.ones(log_p.shape[-1], dtype=torch.bool, device=log_p.device)
    dropped[teacher_ids] = False
    tail = torch.logsumexp(log_p.masked_fill(~dropped, float("-inf")), dim=-1).clamp(min=TAIL_FLOOR)
    unk = torch.logaddexp(kept[..., unk_id], tail)
    return torch.cat([kept[..., :unk_id], unk.unsqueeze(-1), kept[..., unk_id + 1:]], dim=-1)


def bridged_kd_loss(name: str, student_logits, teacher_logits, teacher_ids, unk_id: int, labels,
                    temperature: float = 1.0, beta: float = 0.5) -> torch.Tensor:
    if name == "mse":
        return kd_loss(name, student_logits, teacher_logits.index_select(-1, teacher_ids), labels, temperature, beta)
    target = mapped_log_probs(teacher_logits, teacher_ids, unk_id, temperature)
    # kd_loss takes logits and divides them by T: T · log p is a logit vector whose softmax at T is p.
    return kd_loss(name, student_logits, target * temperature, labels, temperature, beta)


class BridgedTeacher:
    """A kd_term (see trainer.train) for a teacher reached through an id map."""

    def __init__(self, teacher, teacher_ids: list[int], unk_id: int, loss: str, temperature: float, beta: float):
        self.teacher, self.unk_id = teacher, unk_id
        self.ids = torch.tensor(teacher_ids, dtype=torch.long)
        self.loss, self.temperature, self.beta = loss, temperature, beta
        config = teacher.model.config
        self.decoder_start = config.decoder_start_token_id
        self.source_prefix = torch.tensor(teacher.source_prefix_ids, dtype=torch.long)
        self.target_prefix = torch.tensor(teacher.target_prefix_ids, dtype=torch.long)

    def teacher_batch(self, batch: dict) -> dict:
        """The student's batch in the teacher's ids and format."""
        ids = self.ids.to(batch["input_ids"].device)
        rows = batch["input_ids"].shape[0]
        src = ids[batch["input_ids"]]
        mask = batch["attention_mask"]
        if len(self.source_prefix):
            prefix = self.source_prefix.to(src.device).expand(rows, -1)
            src = torch.cat([prefix, src], dim=1)
            mask = torch.cat([torch.ones_like(prefix), mask], dim=1)
        start = torch.full((rows, 1), self.decoder_start, dtype=torch.long, device=src.device)
        parts = [start, self.target_prefix.to(src.device).expand(rows, -1), ids[batch["decoder_input_ids"][:, 1:]]]
        return {"input_ids": src, "attention_mask": mask, "decoder_input_ids": torch.cat(parts, dim=1)}

    @torch.no_grad()
    def teacher_logits(self, batch: dict) -> torch.Tensor:
        from ekd_edge.distill import distributed

        model = self.teacher.model
        device = batch["input_ids"].device
        if next(model.parameters()).device != device:
            distributed.place_teacher(model, device)
        with distributed.autocast(device):
            logits = model(**self.teacher_batch(batch)).logits
        return logits[:, len(self.target_prefix):]

    def __call__(self, model, step: int, batch: dict, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        teacher_logits = self.teacher_logits(batch)
        return bridged_kd_loss(self.loss, logits, teacher_logits, self.ids.to(logits.device), self.unk_id, labels,
                               self.temperature, self.beta)
