"""Speculative KD for encoder-decoder models: the student proposes, the teacher verifies.

For each source, the target side is built block by block (Xu et al. 2024, "Speculative Knowledge
Distillation"):

    1. the student samples ``block`` tokens after the current prefix (temperature τ_S);
    2. the teacher scores prefix + block in one forward pass;
    3. proposed tokens inside the teacher's top-K at their position are kept; the first one that
       is not is replaced by a token sampled from the teacher (temperature τ_T) and the rest of
       the block is dropped;
    4. repeat until EOS or the length limit.

The KD loss is then taken on this interleaved sequence: on-policy enough to train the student
on its own mistakes, but never so far from the teacher that its targets stop making sense. The
step's full loss is (1 − α)·CE on the reference + α·KD on the interleaved sequence.

Batching: prefixes of different lengths are right-padded; causal attention means a position never
sees the padding after it, so each row reads its logits at its own last position.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ekd_edge.data.tokenizer import PAD_ID
from ekd_edge.distill import distributed
from ekd_edge.distill.losses import IGNORE, kd_loss


@dataclass
class SpeculativeSettings:
    top_k: int = 25               # seed paper default
    block: int = 5                # seed paper default
    student_temperature: float = 1.0
    teacher_temperature: float = 1.0


def _decoder_inputs(sequences: list[list[int]], start: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded [start] + sequence rows and each row's last real position (on ``device``)."""
    length = 1 + max(len(s) for s in sequences)
    ids = torch.full((len(sequences), length), PAD_ID, dtype=torch.long)
    ids[:, 0] = start
    for row, seq in enumerate(sequences):
        if seq:
            ids[row, 1: 1 + len(seq)] = torch.tensor(seq)
    last = torch.tensor([len(s) for s in sequences])
    return ids.to(device), last.to(device)


def _sample(logits: torch.Tensor, temperature: float, generator: torch.Generator | None) -> torch.Tensor:
    # Drawn on the CPU with the CPU generator: the same draws whatever device the logits are on.
    probs = torch.softmax(logits.float().cpu() / temperature, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@torch.no_grad()
def interleaved_targets(student, teacher, input_ids, attention_mask, settings: SpeculativeSettings,
                        max_new_tokens: int, generator: torch.Generator | None = None) -> tuple[list[list[int]], dict]:
    """The interleaved target sequence of every source row, plus acceptance statistics."""
    config = student.config
    start, eos = config.decoder_start_token_id, config.eos_token_id
    was_training = student.training
    student.eval()
    device = input_ids.device
    s_enc = student.get_encoder()(input_ids=input_ids, attention_mask=attention_mask)
    t_enc = teacher.get_encoder()(input_ids=input_ids, attention_mask=attention_mask)
    rows = input_ids.shape[0]
    sequences: list[list[int]] = [[] for _ in range(rows)]
    done = [False] * rows
    proposed = accepted = 0
    while not all(done):
        active = [r for r in range(rows) if not done[r]]
        take = lambda enc: type(enc)(last_hidden_state=enc.last_hidden_state[active])  # noqa: E731
        mask = attention_mask[active]
        # 1. the student drafts a block, one token at a time
        drafts = [list(sequences[r]) for r in active]
        draft_len = [0] * len(active)
        s_active = take(s_enc)
        for _ in range(settings.block):
            ids, last = _decoder_inputs(drafts, start, device)
            logits = student(encoder_outputs=s_active, attention_mask=mask, decoder_input_ids=ids).logits
            nxt = _sample(logits[torch.arange(len(active), device=device), last], settings.student_temperature,
                          generator)
            for i, token in enumerate(nxt.tolist()):
                seq = drafts[i]
                if (seq and seq[-1] == eos) or len(seq) >= max_new_tokens:
                    continue
                seq.append(token)
                draft_len[i] += 1
        # 2. the teacher scores every drafted token in one pass
        ids, _ = _decoder_inputs(drafts, start, device)
        t_logits = teacher(encoder_outputs=take(t_enc), attention_mask=mask, decoder_input_ids=ids).logits.float().cpu()
        # 3. keep the drafted tokens inside the teacher's top-K; replace the first rejected one
        for i, r in enumerate(active):
            base = len(sequences[r])
            for j in range(draft_len[i]):
                position = base + j                      # token index in the sequence
                dist = t_logits[i, position]             # the teacher's prediction for that token
                token = drafts[i][position]
                proposed += 1
                if token in dist.topk(settings.top_k).indices.tolist():
                    sequences[r].append(token)
                    accepted += 1
                else:
                    sequences[r].append(int(_sample(dist.unsqueeze(0), settings.teacher_temperature, generator)))
                    break
            seq = sequences[r]
            if (seq and seq[-1] == eos) or len(seq) >= max_new_tokens or draft_len[i] == 0:
                done[r] = True
    student.train(was_training)
    return sequences, {"proposed": proposed, "accepted": accepted}


def sequences_to_batch(sequences: list[list[int]], start: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(decoder_input_ids, labels) for teacher-forcing the interleaved sequences."""
    length = max(1, max(len(s) for s in sequences))
    labels = torch.full((len(sequences), length), IGNORE, dtype=torch.long)
    for row, seq in enumerate(sequences):
        if seq:
            labels[row, : len(seq)] = torch.tensor(seq)
    decoder_input_ids = torch.full_like(labels, PAD_ID)
    decoder_input_ids[:, 0] = start
    decoder_input_ids[:, 1:] = labels[:, :-1].clamp(min=0)
    decoder_input_ids[:, 1:][labels[:, :-1] == IGNORE] = PAD_ID
    return decoder_input_ids, labels


class SpeculativeTeacher:
    """A KD term for train(): KD on the student-proposed, teacher-verified sequence of each source."""

    def __init__(self, teacher, settings: SpeculativeSettings, loss: str, temperature: float, beta: float,
                 seed: int = 0, max_new_tokens: int | None = None):
        self.teacher, self.settings = teacher.eval(), settings
        self.loss, self.temperature, self.beta = loss, temperature, beta
        self.max_new_tokens = max_new_tokens
        self.generator = torch.Generator().manual_seed(seed)
        self.stats = {"proposed": 0, "accepted": 0}

    def acceptance(self) -> float:
        return self.stats["accepted"] / max(1, self.stats["proposed"])

    def __call__(self, model, step: int, batch: dict, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        limit = self.max_new_tokens or labels.shape[1]
        device = batch["input_ids"].device
        if next(self.teacher.parameters()).device != device:
            distributed.place_teacher(self.teacher, device)
        sequences, stats = interleaved_targets(model, self.teacher, batch["input_ids"], batch["attention_mask"],
                                               self.settings, limit, self.generator)
        for key in stats:
            self.stats[key] += stats[key]
        decoder_input_ids, spec_labels = sequences_to_batch(sequences, model.config.decoder_start_token_id)
        decoder_input_ids, spec_labels = decoder_input_ids.to(device), spec_labels.to(device)
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"],
                  "decoder_input_ids": decoder_input_ids}
        student_logits = model(**inputs).logits
        with torch.no_grad():
            teacher_logits = self.teacher(**inputs).logits
        return kd_loss(self.loss, student_logits, teacher_logits, spec_labels, self.temperature, self.beta)
