"""Offline teacher: run the teacher once, keep its top-k log-probabilities on disk, reuse them.

A cache holds, for every target position of every training pair, the teacher's k most likely
tokens and their log-probabilities at the distillation temperature, plus the log of the mass left
outside them (the "tail"). Files are numpy arrays read memory-mapped:

    run_dir/cache/teacher-<key>/
        values.npy   float32 [positions, k]   log p_T of the top-k tokens (temperature T)
        indices.npy  int32   [positions, k]   their token ids
        tail.npy     float32 [positions]      log(1 − Σ top-k p_T), clamped at TAIL_FLOOR
        offsets.npy  int64   [pairs + 1]      pair p owns positions offsets[p] : offsets[p+1]
        meta.json    the key's ingredients

The key is sha256(teacher model.safetensors) + the tokenized data's fingerprint + k + T, so a
restart, or any other run with the same teacher and data, finds the cache instead of recomputing
it. It is written to a temporary directory and renamed into place: a crash leaves no half cache.

Under torchrun the ranks share the work: each round of the length-sorted order holds one batch per
rank, each rank runs the teacher on its batch (the very batch one process would run), rank 0
gathers the round's rows and writes them, and the others open the finished cache.

Tail handling: the loss compares the teacher and the student on k + 1 outcomes — the k cached
tokens and one aggregated "other" bucket holding the rest of each distribution. Both sides stay
proper distributions, no teacher mass is silently dropped, and with k = vocab the bucket is empty
and the cached loss equals the online loss exactly (tested).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ekd_edge.console import progress_bar
from ekd_edge.distill import distributed
from ekd_edge.files import publish_dir, staging_dir, writing
from ekd_edge.distill.batches import TokenizedPairs, collate, fingerprint_pairs
from ekd_edge.models.teacher import weights_digest
from ekd_edge.distill.losses import IGNORE, forward_kl, jsd, reverse_kl

TAIL_FLOOR = -80.0   # log of an (almost) empty tail: finite, so 0·(log 0 − log 0) never becomes NaN
CACHED_LOSSES = ("forward_kl", "reverse_kl", "jsd")   # logit MSE needs every raw logit: not cacheable


def pairs_fingerprint(pairs: TokenizedPairs) -> str:
    """A hash of the exact token ids of every pair, in order (stored with pairs kept on disk)."""
    stored = getattr(pairs, "fingerprint", None)
    return stored if stored else fingerprint_pairs(pairs.src, pairs.tgt)


def cache_key(teacher_dir: str | Path, pairs: TokenizedPairs, k: int, temperature: float) -> str:
    parts = f"{weights_digest(teacher_dir)}:{pairs_fingerprint(pairs)}:{k}:{temperature!r}"
    return hashlib.sha256(parts.encode()).hexdigest()[:20]


@dataclass
class TeacherCache:
    directory: Path
    values: np.ndarray
    indices: np.ndarray
    tail: np.ndarray
    offsets: np.ndarray
    k: int
    temperature: float
    built: bool = False      # True when this call computed it, False when it was found on disk

    @classmethod
    def open(cls, directory: str | Path, built: bool = False) -> "TeacherCache":
        directory = Path(directory)
        meta = json.loads((directory / "meta.json").read_text())
        load = lambda name: np.load(directory / f"{name}.npy", mmap_mode="r")  # noqa: E731
        return cls(directory, load("values"), load("indices"), load("tail"), load("offsets"),
                   meta["k"], meta["temperature"], built)

    def prepare(self, step: int) -> None:
        """Nothing to do: every pair was passed through the teacher when the cache was built."""

    @property
    def record(self) -> dict:
        return {"k": self.k, "built_now": self.built, "path": str(self.directory), "layout": "whole"}

    def rows(self, p: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        lo, hi = int(self.offsets[p]), int(self.offsets[p + 1])
        return self.values[lo:hi], self.indices[lo:hi], self.tail[lo:hi]

    def targets(self, pair_indices: list[int], length: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return padded_targets(self, pair_indices, length, self.k)


def padded_targets(cache, pair_indices: list[int], length: int, k: int):
    """Padded (values [B, L, k], indices [B, L, k], tail [B, L]) for a batch of pairs, each pair's
    rows taken from ``cache.rows(p)``.

    Padding positions hold a uniform, finite distribution: they are masked by the loss anyway.
    """
    b = len(pair_indices)
    values = np.full((b, length, k), -np.log(k), dtype=np.float32)
    indices = np.zeros((b, length, k), dtype=np.int64)
    tail = np.full((b, length), TAIL_FLOOR, dtype=np.float32)
    for row, p in enumerate(pair_indices):
        v, i, t = cache.rows(p)
        values[row, : len(v)] = v
        indices[row, : len(v)] = i
        tail[row, : len(v)] = t
    return torch.from_numpy(values), torch.from_numpy(indices), torch.from_numpy(tail)


def rank_rows(pair_indices: list[int]) -> list[int]:
    """The pairs of a batch this rank trains on under torchrun (its rows; all of them in one process)."""
    rows = distributed.shard_range(len(pair_indices))
    return pair_indices[rows.start:rows.stop] or pair_indices[:1]


def top_k_with_tail(teacher_logits: torch.Tensor, k: int, temperature: float):
    """The top-k log-probabilities, their ids and the log tail mass of each position."""
    logp = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    values, indices = logp.topk(k, dim=-1)
    rest = logp.scatter(-1, indices, float("-inf"))
    tail = torch.logsumexp(rest, dim=-1).clamp(min=TAIL_FLOOR)
    return values, indices, tail


@torch.inference_mode()
def build_teacher_cache(teacher, teacher_dir: str | Path, pairs: TokenizedPairs, cache_root: str | Path,
                        k: int, temperature: float = 1.0, batch_pairs: int = 64,
                        description: str = "teacher cache") -> TeacherCache:
    """The cache for (teacher, pairs, k, T): opened from disk when it exists, else computed once.

    Under torchrun every rank calls this: the ranks split the teacher's work, rank 0 alone writes.
    """
    vocab = teacher.config.vocab_size
    if not 1 <= k <= vocab:
        raise ValueError(f"teacher_cache_k must be in 1..{vocab} (the vocabulary), got {k}")
    key = cache_key(teacher_dir, pairs, k, temperature)
    final = Path(cache_root) / f"teacher-{key}"
    if distributed.main_value((final / "meta.json").is_file()):   # rank 0 decides: all ranks build, or none
        return TeacherCache.open(final)
    main = distributed.context().is_main
    # the other ranks open the cache once rank 0 has renamed it into place
    with distributed.waiting_for_main(), writing(final):
        if main:
            tmp = staging_dir(final)   # a killed build's leftover is removed by the next one
        try:
            found = _compute(teacher, pairs, k, temperature, batch_pairs, description, tmp if main else None, key,
                             teacher_dir, final)
        finally:
            if main:
                shutil.rmtree(tmp, ignore_errors=True)
    return TeacherCache.open(final, built=not found)


def _compute(teacher, pairs, k, temperature, batch_pairs, description, tmp, key, teacher_dir, final) -> bool:
    """Run the teacher over every pair (this rank's share) and, on rank 0, write the cache into ``tmp``
    and rename it to ``final``. True when another process had finished the same cache first."""
    ctx = distributed.context()
    src_lengths, tgt_lengths = pairs.lengths()
    offsets = np.concatenate([[0], np.cumsum(np.asarray(tgt_lengths, dtype=np.int64))]).astype(np.int64)
    total = int(offsets[-1])
    if tmp is not None:
        values = np.lib.format.open_memmap(tmp / "values.npy", mode="w+", dtype=np.float32, shape=(total, k))
        indices = np.lib.format.open_memmap(tmp / "indices.npy", mode="w+", dtype=np.int32, shape=(total, k))
        tail = np.lib.format.open_memmap(tmp / "tail.npy", mode="w+", dtype=np.float32, shape=(total,))
        np.save(tmp / "offsets.npy", offsets)
    distributed.place_teacher(teacher, ctx.device)
    # little padding: by target then source length, ties in pair order (a stable sort)
    order = np.lexsort((src_lengths, tgt_lengths)).tolist()
    # One batch per rank per round, exactly the batches one process runs; gathering round by round
    # keeps rank 0's memory to one round of rows, whatever the corpus size.
    round_pairs = batch_pairs * ctx.world_size
    with progress_bar(disable=not ctx.is_main) as bar:
        task = bar.add_task(description, total=len(order), status=f"k={k}")
        for start in range(0, len(order), round_pairs):
            mine = order[start + ctx.rank * batch_pairs:start + (ctx.rank + 1) * batch_pairs]
            rows = distributed.gather_lists(top_k_rows(teacher, pairs, mine, offsets, k, temperature))
            if tmp is not None:
                for p, v, i, t in rows:
                    lo, hi = int(offsets[p]), int(offsets[p + 1])
                    values[lo:hi], indices[lo:hi], tail[lo:hi] = v, i, t
            bar.update(task, advance=len(order[start:start + round_pairs]))
    if tmp is None:
        return False
    for array in (values, indices, tail):
        array.flush()
    del values, indices, tail
    meta = {"k": k, "temperature": temperature, "teacher": str(teacher_dir), "pairs": len(pairs),
            "positions": total, "key": key, "tail": "aggregated 'other' bucket"}
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
    return publish_dir(tmp, final)   # another process finishing the same cache first is fine


def top_k_rows(teacher, pairs, chunk: list[int], offsets, k: int, temperature: float) -> list[tuple]:
    """(pair, values, indices, tail) of every target position of the pairs in ``chunk``, as numpy."""
    if not chunk:   # the last round can leave a rank without a batch
        return []
    batch = collate(pairs, chunk)
    batch.pop("labels")
    batch = {key: value.to(teacher.device) for key, value in batch.items()}
    v, i, t = (x.cpu() for x in top_k_with_tail(teacher(**batch).logits, k, temperature))
    rows = []
    for row, p in enumerate(chunk):
        n = int(offsets[p + 1] - offsets[p])
        rows.append((p, v[row, :n].numpy(), i[row, :n].numpy(), t[row, :n].numpy()))
    return rows


def collapse_student(student_logits: torch.Tensor, indices: torch.Tensor, temperature: float) -> torch.Tensor:
    """Student log-probabilities on the k cached tokens plus the "other" bucket: [B, L, k + 1]."""
    # One pass over the vocabulary (the normaliser) instead of a full log-softmax plus a masked
    # copy: this keeps a cached KD step close to a CE-only step (benchmarks/kd_throughput.py).
    scaled = student_logits.float() / temperature
    log_z = torch.logsumexp(scaled, dim=-1, keepdim=True)
    top = scaled.gather(-1, indices) - log_z
    top_mass = torch.logsumexp(top, dim=-1).clamp(max=-1e-30)   # log Σ top-k p_S, strictly below 0
    tail = _log1mexp(top_mass).clamp(min=TAIL_FLOOR)
    return torch.cat([top, tail.unsqueeze(-1)], dim=-1)


def _log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 − eˣ) for x < 0, accurate at both ends (Mächler 2012)."""
    return torch.where(x > -0.6931471805599453, torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def cached_kd_loss(name: str, student_logits, values, indices, tail, labels, temperature: float = 1.0,
                   beta: float = 0.5) -> torch.Tensor:
    """Word-level KD against cached top-k teacher outputs, on the k + 1 collapsed outcomes.

    The collapsed log-probabilities are already normalised and tempered, so the divergences run at
    T = 1 on them and the usual T² factor is applied here.
    """
    student = collapse_student(student_logits, indices, temperature)
    teacher = torch.cat([values, tail.unsqueeze(-1)], dim=-1)
    if name == "forward_kl":
        value = forward_kl(student, teacher, labels, 1.0)
    elif name == "reverse_kl":
        value = reverse_kl(student, teacher, labels, 1.0)
    elif name == "jsd":
        value = jsd(student, teacher, labels, 1.0, beta)
    else:
        raise ValueError(f"loss {name!r} cannot use a top-k cache; choose one of {', '.join(CACHED_LOSSES)}")
    return value * temperature * temperature


class CachedTeacher:
    """A KD term for train(): looks the batch's pairs up in the cache instead of running a teacher."""

    def __init__(self, cache: TeacherCache, stream, loss: str, temperature: float, beta: float):
        self.cache, self.stream, self.loss = cache, stream, loss
        self.temperature, self.beta = temperature, beta

    def __call__(self, model, step: int, batch: dict, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        self.cache.prepare(step)   # a cache built as training goes passes the teacher over this batch now
        pair_indices = self.stream.indices(step)
        if len(pair_indices) != labels.shape[0]:   # under torchrun: this rank's rows only
            pair_indices = rank_rows(pair_indices)
        values, indices, tail = (t.to(labels.device) for t in self.cache.targets(pair_indices, labels.shape[1]))
        return cached_kd_loss(self.loss, logits, values, indices, tail, labels, self.temperature, self.beta)


class OnlineTeacher:
    """The same KD term with the teacher run on every batch (the reference the cache must match)."""

    def __init__(self, teacher, loss: str, temperature: float, beta: float):
        self.teacher, self.loss, self.temperature, self.beta = teacher.eval(), loss, temperature, beta

    def __call__(self, model, step: int, batch: dict, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        from ekd_edge.distill.losses import kd_loss

        with torch.no_grad():
            teacher_logits = self.teacher(**batch).logits
        return kd_loss(self.loss, logits, teacher_logits, labels, self.temperature, self.beta)


__all__ = ["IGNORE", "TeacherCache", "build_teacher_cache", "cached_kd_loss", "CachedTeacher", "OnlineTeacher",
           "cache_key", "top_k_with_tail", "CACHED_LOSSES"]
