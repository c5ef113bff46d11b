"""The training loop: one model, a number of steps, cross-entropy and optionally a teacher.

Read it top to bottom: learning-rate schedule, one step (student forward, optional teacher
forward, loss, backward, clip, update), then evaluation by greedy decoding on validation text
(through ekd_edge.runtime, the very code `bench` and `translate` use).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from ekd_edge.console import PLAIN_PROGRESS_EVERY_S, console, progress_bar
from ekd_edge.distill import distributed
from ekd_edge.distill.batches import BatchStream
from ekd_edge.distill.checkpointing import ProgressFile
from ekd_edge.distill.losses import kd_loss, label_smoothed_ce
from ekd_edge.distill.recipe import DistillSettings, TrainingSettings


@dataclass
class TrainResult:
    steps: int
    target_tokens: int
    wall_s: float
    final_loss: float
    first_step_at: float | None = None   # time.time() when this call's first step ended (None: none ran)
    pairs: int = 0                       # sentence pairs (batch rows) trained on, resumed steps included

    @property
    def tokens_per_s(self) -> float:
        return self.target_tokens / self.wall_s if self.wall_s else 0.0


def lr_at(step: int, total: int, settings: TrainingSettings) -> float:
    """Linear warm-up, then cosine decay down to lr × min_lr_ratio."""
    if step < settings.warmup_steps:
        return settings.lr * (step + 1) / settings.warmup_steps
    span = max(1, total - settings.warmup_steps)
    progress = min(1.0, (step - settings.warmup_steps) / span)
    floor = settings.lr * settings.min_lr_ratio
    return floor + (settings.lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def make_optimizer(model, settings: TrainingSettings) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=settings.lr, betas=(0.9, 0.98), eps=1e-8,
                             weight_decay=settings.weight_decay)


def train(
    model,
    stream: BatchStream,
    steps: int,
    settings: TrainingSettings,
    teacher=None,
    distill: DistillSettings | None = None,
    description: str = "train",
    first_batch: int = 0,
    kd_term=None,
    seed: int | None = None,
    progress: ProgressFile | None = None,
    checkpoint_every: int = 0,
) -> TrainResult:
    """Train ``model`` for ``steps`` steps on batches ``first_batch …`` of ``stream``.

    With a ``teacher``, the loss is (1 − α)·label-smoothed CE + α·KD(teacher, student).
    ``kd_term(model, step, batch, logits, labels)`` replaces the online teacher by any other KD
    signal (a top-k cache, speculative KD; see teacher_cache.py and speculative.py).
    ``seed`` seeds dropout, so a model's training does not depend on what ran before it in the
    process. With ``progress``, the state is saved every ``checkpoint_every`` steps and after the
    last one, and a saved state is picked up first: a killed run continues at its last checkpoint.
    Under torchrun each rank trains on its rows of every batch (see distributed.py); ``kd_term``
    then sees this rank's rows only.
    """
    if (teacher is not None or kd_term is not None) and distill is None:
        raise ValueError("a teacher needs distill settings")
    ctx = distributed.context()
    if seed is not None:
        torch.manual_seed(seed + ctx.rank)
    optimizer = make_optimizer(model, settings)
    start_step, tokens, pairs, loss_ema, wall_before = 0, 0, 0, None, 0.0
    state = progress.load() if progress is not None else None
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        rng = state["rng"]
        torch.set_rng_state(rng[ctx.rank] if len(rng) == ctx.world_size else rng[0])
        start_step, tokens, loss_ema = state["step"], state["tokens"], state["loss_ema"]
        pairs = state.get("pairs", 0)   # absent from checkpoints of earlier versions
        wall_before = state.get("wall_s", 0.0)   # training time of earlier invocations
        if ctx.is_main:
            console.log(f"{description}: resuming at step {start_step}/{steps} from {progress.path}")
    net = distributed.wrap_model(model)
    net.train()
    if teacher is not None:
        distributed.place_teacher(teacher, ctx.device)
    start, first_step_at = time.perf_counter(), None
    # Without a terminal (a cluster job, CI, nohup) rich draws nothing until the end: plain lines
    # instead. With one, the same lines still go to the run's log file.
    last_plain = start
    with progress_bar(disable=not ctx.is_main, log_every=None) as bar:   # its own lines, below
        task = bar.add_task(description, total=steps, completed=start_step, status="")
        for step in range(start_step, steps):
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, steps, settings)
            full = stream.batch(first_batch + step)
            full_labels = full.pop("labels")
            batch, labels, share = distributed.local_batch(full, full_labels)
            if ctx.device.type != "cpu":
                batch, labels = {k: v.to(ctx.device) for k, v in batch.items()}, labels.to(ctx.device)
            with distributed.autocast(ctx.device):   # bf16 on CUDA ([training] precision); losses cast to fp32
                logits = net(**batch).logits
            loss = label_smoothed_ce(logits, labels, settings.label_smoothing)
            if kd_term is not None:
                kd = kd_term(model, first_batch + step, batch, logits, labels)
                loss = (1.0 - distill.alpha) * loss + distill.alpha * kd
            elif teacher is not None:
                with torch.no_grad(), distributed.autocast(ctx.device):
                    teacher_logits = teacher(**batch).logits
                kd = kd_loss(distill.loss, logits, teacher_logits, labels, distill.temperature, distill.jsd_beta)
                loss = (1.0 - distill.alpha) * loss + distill.alpha * kd
            # Under DDP, ``share`` turns this rank's token mean into its part of the global token mean.
            (loss * share if share != 1.0 else loss).backward()
            if settings.clip_norm:
                torch.nn.utils.clip_grad_norm_(model.parameters(), settings.clip_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            tokens += int((full_labels != -100).sum())
            pairs += int(full_labels.shape[0])
            loss_ema = loss.item() if loss_ema is None else 0.95 * loss_ema + 0.05 * loss.item()
            done = step + 1
            if first_step_at is None:
                first_step_at = time.time()
            if progress is not None and (done == steps or (checkpoint_every and done % checkpoint_every == 0)):
                rng_states = distributed.gather_rng_states()  # a collective: every rank takes part
                if ctx.is_main:
                    progress.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                   "rng": rng_states, "step": done, "batch": first_batch + done,
                                   "tokens": tokens, "pairs": pairs, "loss_ema": loss_ema, "world_size": ctx.world_size,
                                   "wall_s": wall_before + time.perf_counter() - start})
            if step % 5 == 0 or done == steps:
                rate = tokens / max(1e-9, wall_before + time.perf_counter() - start)
                bar.update(task, completed=done, status=f"loss {loss_ema:.3f} · {rate:,.0f} tok/s")
            now = time.perf_counter()
            if ctx.is_main and (now - last_plain >= PLAIN_PROGRESS_EVERY_S or done == steps):
                last_plain = now
                rate = tokens / max(1e-9, wall_before + now - start)
                line = (f"{description}: step {done}/{steps} · loss {loss_ema:.3f} · {rate:,.0f} tok/s"
                        f" · {wall_before + now - start:,.0f} s")
                console.to_log_file(line) if console.is_terminal else console.log(line)
    model.eval()
    return TrainResult(steps, tokens, wall_before + time.perf_counter() - start, float(loss_ema or 0.0),
                       first_step_at, pairs)


def evaluate(model, tokenizer, src: list[str], refs: list[str], max_new_tokens: int) -> dict:
    """Validation BLEU and chrF (sacrebleu, with signatures) of greedy translations."""
    from ekd_edge.metrics import score
    from ekd_edge.runtime.torch_engine import TorchTranslator

    start = time.perf_counter()
    hyps = TorchTranslator.from_model(model, tokenizer).translate(src, max_new_tokens=max_new_tokens)
    result = score(hyps, refs)
    result["decode_s"] = round(time.perf_counter() - start, 2)
    result["examples"] = [{"src": s, "ref": r, "hyp": h} for s, r, h in list(zip(src, refs, hyps))[:3]]
    return result
