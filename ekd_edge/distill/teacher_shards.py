"""A teacher cache built as training needs it, in shards: a stage of S steps passes the teacher
over the pairs of its S batches, not over the whole corpus.

The eager cache (teacher_cache.py) runs the teacher over every training pair before the first
step: at 10⁶ pairs and a 10⁸-parameter teacher that is hours, whatever the stage's length. This one
holds the same rows (the teacher's top-k log-probabilities and tail per target position, keyed the
same way) but computes them when a batch first needs them: at step s it runs the teacher over the
pairs of the window of batches holding s (``lookahead`` steps, counted from the stage's first
step, never past its last) that no shard holds yet, length-sorted into teacher batches, and writes
them as one shard:

    cache_root/teacher-<key>-shards/
        meta.json
        shard-<rank>-<window's first step>-<pid>/   pairs.npy int64 [n] · offsets.npy int64 [n + 1]
                                            values.npy · indices.npy · tail.npy (as the eager cache)

A shard is written to a staging directory and renamed into place, so a killed run loses at most the
shard it was writing; the next run (any process, any world size) reads every finished shard and
passes the teacher only over pairs no shard holds. Under torchrun each rank builds the shards of
its own rows of each batch (the rows it trains on), so no rank waits for another.

The rows equal the eager cache's up to float rounding: the teacher sees each pair padded inside
another batch (a test holds them to 1e-5).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from ekd_edge.console import console
from ekd_edge.distill import distributed
from ekd_edge.distill.teacher_cache import cache_key, padded_targets, rank_rows, top_k_rows
from ekd_edge.files import publish_dir, staging_dir, write_json_atomic, writing

LOOKAHEAD_STEPS = 64   # steps of batches each shard covers: teacher batches stay full, shards few


class ShardedTeacherCache:
    """Top-k teacher rows for the pairs of ``stream``, computed shard by shard as steps need them.

    The stage runs the stream's steps ``start_step`` … ``stop_step`` − 1: shards cover windows of
    ``lookahead`` steps counted from its start (the same windows after a resume, so the teacher sees
    the same batches and a resumed run equals an uninterrupted one) and none reaches past its end.
    ``passed`` counts the pairs this process ran the teacher over.
    """

    def __init__(self, teacher, teacher_dir: str | Path, pairs, stream, cache_root: str | Path, k: int,
                 temperature: float = 1.0, start_step: int = 0, stop_step: int | None = None,
                 lookahead: int = LOOKAHEAD_STEPS,
                 batch_pairs: int = 64, description: str = "teacher cache"):
        vocab = teacher.config.vocab_size
        if not 1 <= k <= vocab:
            raise ValueError(f"teacher_cache_k must be in 1..{vocab} (the vocabulary), got {k}")
        self.teacher, self.pairs, self.stream = teacher, pairs, stream
        self.k, self.temperature, self.start_step, self.stop_step = k, temperature, start_step, stop_step
        self.lookahead, self.batch_pairs, self.description = max(1, lookahead), batch_pairs, description
        self.directory = Path(cache_root) / f"teacher-{cache_key(teacher_dir, pairs, k, temperature)}-shards"
        self.built, self.passed = False, 0
        # live: a stage's record holds this very dict, so the counts are saved when the stage ends
        self.record = {"k": k, "built_now": False, "path": str(self.directory), "layout": "shards",
                       "pairs": len(pairs), "cached_pairs": 0, "shards": 0, "passed_now": 0,
                       "teacher_s": 0.0}
        # target positions of every pair, to slice a shard's rows (8 bytes a pair, whatever the text)
        self._offsets = np.concatenate([[0], np.cumsum(np.asarray(pairs.lengths()[1], dtype=np.int64))])
        self._where = np.full(len(pairs), -1, dtype=np.int64)   # pair -> shard number << 32 | row
        self._shards: list[dict] = []
        with distributed.waiting_for_main(), writing(self.directory):
            if distributed.context().is_main and not (self.directory / "meta.json").is_file():
                self.directory.mkdir(parents=True, exist_ok=True)
                write_json_atomic(self.directory / "meta.json", {
                    "k": k, "temperature": temperature, "teacher": str(teacher_dir), "pairs": len(pairs),
                    "tail": "aggregated 'other' bucket", "layout": "shards built as training needs them"})
        self.refresh()
        distributed.place_teacher(teacher, distributed.context().device)

    def refresh(self) -> None:
        """Take in every finished shard on disk that is not open yet (any process's)."""
        known = {s["path"].name for s in self._shards}
        for path in sorted(self.directory.glob("shard-*")):
            if path.name in known or not (path / "tail.npy").is_file():
                continue
            self._open_shard(path)

    def _open_shard(self, path: Path) -> None:
        load = lambda name: np.load(path / f"{name}.npy", mmap_mode="r")  # noqa: E731
        shard = {"path": path, "pairs": load("pairs"), "offsets": load("offsets"), "values": load("values"),
                 "indices": load("indices"), "tail": load("tail")}
        number = len(self._shards)
        self._shards.append(shard)
        fresh = self._where[shard["pairs"]] < 0   # a pair two ranks both built: the first shard read wins
        self._where[shard["pairs"][fresh]] = (number << 32) | np.arange(len(shard["pairs"]))[fresh]
        self.record.update(cached_pairs=self.record["cached_pairs"] + int(fresh.sum()), shards=len(self._shards))

    def cached_pairs(self) -> int:
        return int((self._where >= 0).sum())

    def _mine(self, step: int) -> list[int]:
        indices = self.stream.indices(step)
        return rank_rows(indices) if distributed.context().world_size > 1 else indices

    def prepare(self, step: int) -> None:
        """Make sure the pairs of ``step`` are cached, building ahead for the next steps of the stage."""
        if all(self._where[p] >= 0 for p in self._mine(step)):
            return
        self.refresh()   # another process (a resumed run, another rank) may have built them meanwhile
        first = step - (step - self.start_step) % self.lookahead if step >= self.start_step else step
        stop = first + self.lookahead if self.stop_step is None else min(self.stop_step, first + self.lookahead)
        wanted: list[int] = []
        seen: set[int] = set()
        for s in range(first, max(stop, step + 1)):
            for p in self._mine(s):
                if self._where[p] < 0 and p not in seen:
                    seen.add(p)
                    wanted.append(p)
        if wanted:
            self._build(wanted, first)

    @torch.inference_mode()
    def _build(self, wanted: list[int], first: int) -> None:
        ctx = distributed.context()
        began = time.perf_counter()
        final = self.directory / f"shard-{ctx.rank:02d}-{first:09d}-{os.getpid()}"
        lengths = [len(self.pairs.tgt[p]) for p in wanted]
        order = sorted(range(len(wanted)), key=lambda i: lengths[i])   # little padding per teacher batch
        wanted = [wanted[i] for i in order]
        local = np.concatenate([[0], np.cumsum(np.asarray([len(self.pairs.tgt[p]) for p in wanted], dtype=np.int64))])
        total = int(local[-1])
        with writing(final):
            tmp = staging_dir(final)
            try:
                values = np.lib.format.open_memmap(tmp / "values.npy", mode="w+", dtype=np.float32,
                                                   shape=(total, self.k))
                indices = np.lib.format.open_memmap(tmp / "indices.npy", mode="w+", dtype=np.int32,
                                                    shape=(total, self.k))
                tail = np.lib.format.open_memmap(tmp / "tail.npy", mode="w+", dtype=np.float32, shape=(total,))
                row_of = {p: r for r, p in enumerate(wanted)}
                for start in range(0, len(wanted), self.batch_pairs):
                    chunk = wanted[start:start + self.batch_pairs]
                    for p, v, i, t in top_k_rows(self.teacher, self.pairs, chunk, self._offsets, self.k,
                                                 self.temperature):
                        lo, hi = int(local[row_of[p]]), int(local[row_of[p] + 1])
                        values[lo:hi], indices[lo:hi], tail[lo:hi] = v, i, t
                for array in (values, indices, tail):
                    array.flush()
                del values, indices, tail
                np.save(tmp / "pairs.npy", np.asarray(wanted, dtype=np.int64))
                np.save(tmp / "offsets.npy", local)
                publish_dir(tmp, final)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        self._open_shard(final)
        self.built = True
        self.passed += len(wanted)
        self.record.update(passed_now=self.passed, built_now=True,
                           teacher_s=round(self.record["teacher_s"] + time.perf_counter() - began, 2))
        if ctx.is_main:
            line = (f"{self.description}: teacher over {len(wanted):,} pairs for steps {first} on "
                    f"({self.record['cached_pairs']:,} of {len(self.pairs):,} cached)")
            console.to_log_file(line) if console.is_terminal else console.log(line)

    def rows(self, p: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        where = int(self._where[p])
        if where < 0:
            raise KeyError(f"pair {p} is not in the teacher cache {self.directory}: prepare its step first")
        shard, row = self._shards[where >> 32], where & 0xFFFFFFFF
        lo, hi = int(shard["offsets"][row]), int(shard["offsets"][row + 1])
        return shard["values"][lo:hi], shard["indices"][lo:hi], shard["tail"][lo:hi]

    def targets(self, pair_indices: list[int], length: int):
        return padded_targets(self, pair_indices, length, self.k)



CACHE_LAYOUTS = ("auto", "eager", "shards")


def open_teacher_cache(teacher, teacher_dir: str | Path, stream, cache_root: str | Path, k: int, temperature: float,
                       first_step: int, steps: int, layout: str = "auto", description: str = "teacher cache"):
    """The top-k cache a stage of ``steps`` steps from ``first_step`` reads.

    "eager" passes the teacher over every pair first (teacher_cache.py); "shards" only over the
    pairs of the stage's batches, as they come. "auto" takes the eager cache when the stage sees the
    whole corpus anyway (its globally length-sorted teacher batches pad least, and later stages and
    runs reuse it whole) and shards when it trains on a part of the corpus.
    """
    from ekd_edge.distill.teacher_cache import build_teacher_cache

    if layout not in CACHE_LAYOUTS:
        raise ValueError(f"cache layout must be one of {', '.join(CACHE_LAYOUTS)}, got {layout!r}")
    if layout == "auto":
        whole = Path(cache_root) / f"teacher-{cache_key(teacher_dir, stream.pairs, k, temperature)}" / "meta.json"
        # a finished eager cache costs nothing more to read, whatever part of the corpus the stage sees
        layout = "eager" if whole.is_file() or steps >= stream.steps_in_epoch(0) else "shards"
    if layout == "eager":
        return build_teacher_cache(teacher, teacher_dir, stream.pairs, cache_root, k, temperature,
                                   description=description)
    return ShardedTeacherCache(teacher, teacher_dir, stream.pairs, stream, cache_root, k, temperature,
                               start_step=first_step, stop_step=first_step + steps, description=description)
