"""Sequence-level KD (Kim & Rush 2016): train the student on the teacher's own translations.

The teacher beam-decodes every training source once. With ``nbest > 1`` it keeps the n best
hypotheses and picks, per sentence, the one closest to the reference by sentence chrF
("seq-inter": the teacher's output space, steered toward the truth). The student is then trained
on the distilled targets alone (``mix = "distilled"``) or on references and distilled targets
together (``mix = "both"``).

Decoding is cached and resumable: sources are decoded in chunks, each chunk written atomically
as soon as it is done, under run_dir/cache/seqkd-<key>/ where the key hashes the teacher's
weights, the sources, the references and the decoding settings. A restart skips finished chunks,
and a finished run re-reads ``targets.txt`` without running the teacher at all.

A stage shorter than one pass over the corpus decodes only a sample of it (``stage_sources``): as
many sources as the stage's batches hold on the training stream, drawn by the stage's seed, so a
50-step stage on 10⁷ pairs decodes a few thousand sentences, not 10⁷. A stage of an epoch or more
decodes every source, as before.

Under torchrun the ranks split each chunk: every rank decodes whole batches of the chunk's
length-sorted order (the very batches one process decodes), rank 0 gathers the chunk and writes
it, and the other ranks read ``targets.txt`` once rank 0 has written it.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ekd_edge.console import progress_bar
from ekd_edge.distill import distributed
from ekd_edge.distill.batches import TokenizedPairs, tokenize_pairs, tokenize_to_disk, truncate_pairs
from ekd_edge.files import write_text_atomic
from ekd_edge.models.teacher import Teacher, weights_digest

MIXES = ("distilled", "both")


@dataclass
class SeqKDSettings:
    beams: int = 4
    nbest: int = 1                # > 1: keep the hypothesis closest to the reference by chrF
    max_new_tokens: int = 64
    mix: str = "distilled"        # "distilled" or "both" (references + distilled targets)
    chunk: int = 256              # sentences per resumable chunk
    batch_size: int = 32
    engine: str = "pytorch"       # pytorch or ctranslate2 (teacher_engine.py; "auto" is settled before)


@dataclass
class DistilledData:
    targets: list[str]
    directory: Path
    decoded_now: int              # sentences the teacher decoded in this call (0 on a full cache hit)


def seqkd_key(teacher_dir: str | Path, src: list[str], refs: list[str], settings: SeqKDSettings,
              prompt: str = "", engine: str = "pytorch") -> str:
    """Hash of the teacher's weights, its prompt (language tokens, prefix), the data, the settings
    and the engine that decodes (another engine's numerics give other targets)."""
    digest = hashlib.sha256(weights_digest(teacher_dir).encode())
    if prompt:
        digest.update(prompt.encode())
    if engine != "pytorch":   # PyTorch's keys stay as they were, so earlier caches are reused
        digest.update(f"engine={engine}".encode())
    for line in itertools.chain(src, ["\x00"], refs):   # sequences of any kind (a text store too)
        digest.update(line.encode() + b"\n")
    digest.update(f"{settings.beams}:{settings.nbest}:{settings.max_new_tokens}".encode())
    return digest.hexdigest()[:20]


def stage_sources(stream, first_step: int, steps: int, corpus_pairs: int, seed: int) -> np.ndarray | None:
    """The training sources a seq-KD stage of ``steps`` steps decodes, or None for all of them.

    The stage trains on the teacher's translations, whose lengths are unknown before decoding, so
    its batches cannot be planned ahead; what is known is how many pairs ``steps`` batches of the
    training stream hold. That many sources are drawn uniformly (by ``seed``, the same after a
    restart and on every rank), sorted so a text store reads them in file order. None when the
    stage would pass over the whole corpus anyway.
    """
    needed = 0
    for step in range(first_step, first_step + steps):
        needed += len(stream.indices(step))
        if needed >= corpus_pairs:   # no need to plan further epochs to know that
            return None
    chosen = np.random.default_rng(seed).choice(corpus_pairs, size=needed, replace=False)
    return np.sort(chosen)


def closest_by_chrf(hypotheses: list[str], reference: str) -> str:
    """The hypothesis with the highest sentence chrF against the reference (first one on ties)."""
    from sacrebleu.metrics import CHRF

    chrf = CHRF()
    scores = [chrf.sentence_score(h, [reference]).score for h in hypotheses]
    return hypotheses[max(range(len(hypotheses)), key=lambda i: scores[i])]


def as_teacher(teacher, tokenizer=None, directory: str | Path = "") -> Teacher:
    """A Teacher as it is, or a bare Marian model of the run's vocabulary wrapped with ``tokenizer``."""
    if isinstance(teacher, Teacher):
        return teacher
    return Teacher(name="", directory=Path(directory), model=teacher, tokenizer=tokenizer, kind="native",
                   family=teacher.config.model_type)


@torch.inference_mode()
def beam_decode(teacher, tokenizer, src: list[str], refs: list[str], settings: SeqKDSettings,
                decoder=None) -> list[str]:
    """The teacher's beam output for ``src``; with nbest > 1 the n-best entry closest to ``refs``.

    ``teacher`` is a Teacher (its own tokenizer and prompt) or a bare model speaking ``tokenizer``;
    ``decoder`` (teacher_engine.Ct2TeacherDecoder) decodes instead of the teacher's PyTorch model.
    """
    teacher = as_teacher(teacher, tokenizer)
    if decoder is not None:
        nbest = max(1, settings.nbest)
        lists = decoder.decode(src, settings.max_new_tokens, settings.beams, nbest, settings.batch_size)
        return [c[0] if nbest == 1 else closest_by_chrf(c, ref) for c, ref in zip(lists, refs)]
    model, own = teacher.model, teacher.tokenizer
    nbest = max(1, settings.nbest)
    beams = max(settings.beams, nbest)
    out: list[str] = [""] * len(src)
    for idx in decode_batches(src, settings.batch_size):
        enc = teacher.encode_sources([src[i] for i in idx], teacher.max_source_tokens)
        enc = {k: v.to(model.device) for k, v in enc.items()}
        generated = model.generate(**enc, num_beams=beams, num_return_sequences=nbest, do_sample=False,
                                   max_new_tokens=settings.max_new_tokens, early_stopping=True,
                                   **teacher.generate_kwargs())
        texts = own.batch_decode(generated.cpu(), skip_special_tokens=True)
        for j, i in enumerate(idx):
            candidates = texts[j * nbest:(j + 1) * nbest]
            out[i] = candidates[0] if nbest == 1 else closest_by_chrf(candidates, refs[i])
    return out


def decode_batches(src: list[str], batch_size: int) -> list[list[int]]:
    """Index batches of ``src`` in length order (little padding)."""
    order = sorted(range(len(src)), key=lambda i: len(src[i]))
    return [order[start:start + batch_size] for start in range(0, len(order), batch_size)]


def _decode_share(teacher, tokenizer, src: list[str], refs: list[str], settings: SeqKDSettings,
                  decoder=None) -> list[str]:
    """The whole chunk's decoding, this rank deciding its share of the batches; every rank gets all of it.

    A rank's share is a run of whole batches of the length-sorted order, so beam_decode, sorting
    its share again, forms the very batches one process forms: the ranks together decode exactly
    what one process decodes.
    """
    batches = decode_batches(src, settings.batch_size)
    share = distributed.shard_range(len(batches))
    mine = [i for batch in batches[share.start:share.stop] for i in batch]
    texts = beam_decode(teacher, tokenizer, [src[i] for i in mine], [refs[i] for i in mine], settings,
                        decoder) if mine else []
    out: list[str] = [""] * len(src)
    for i, text in distributed.gather_lists(list(zip(mine, texts))):
        out[i] = text
    return out


def distill_targets(teacher, teacher_dir: str | Path, tokenizer, src: list[str], refs: list[str],
                    cache_root: str | Path, settings: SeqKDSettings, description: str = "seq-KD decoding") -> DistilledData:
    """Distilled targets for every source, decoded once and cached chunk by chunk.

    Under torchrun every rank calls this: the ranks split each chunk, rank 0 alone writes.
    """
    if len(src) != len(refs):
        raise ValueError(f"{len(src)} sources but {len(refs)} references")
    teacher = as_teacher(teacher, tokenizer, teacher_dir)
    prompt = f"{teacher.prefix}|{teacher.forced_bos_token_id}" if teacher.kind != "native" else ""
    ctx = distributed.context()
    engine = "pytorch"
    if settings.engine == "ctranslate2":
        from ekd_edge.distill.teacher_engine import ct2_quantization

        engine = f"ctranslate2-{ct2_quantization(ctx.device)}"
    directory = Path(cache_root) / f"seqkd-{seqkd_key(teacher_dir, src, refs, settings, prompt, engine)}"
    final = directory / "targets.txt"
    if distributed.main_value(final.is_file()):   # rank 0 decides, so every rank takes the same path
        return DistilledData(final.read_text().split("\n")[: len(src)], directory, 0)
    if ctx.is_main:
        directory.mkdir(parents=True, exist_ok=True)
    decoder = None
    if settings.engine == "ctranslate2":
        from ekd_edge.distill.teacher_engine import Ct2TeacherDecoder

        decoder = Ct2TeacherDecoder(teacher, cache_root, ctx.device, threads=torch.get_num_threads())
    else:
        distributed.place_teacher(teacher.model, ctx.device)
    chunks = range(0, len(src), settings.chunk)
    todo = set(distributed.main_value([s for s in chunks if not (directory / f"chunk-{s:08d}.json").is_file()]))
    decoded = 0
    with progress_bar(disable=not ctx.is_main) as bar:
        task = bar.add_task(description, total=len(src),
                            status=f"beam {settings.beams}, n-best {settings.nbest}, {engine}")
        for start in chunks:
            end = min(len(src), start + settings.chunk)
            if start in todo:
                texts = _decode_share(teacher, tokenizer, src[start:end], refs[start:end], settings, decoder)
                if ctx.is_main:
                    write_text_atomic(directory / f"chunk-{start:08d}.json", json.dumps(texts, ensure_ascii=False))
                decoded += end - start
            bar.update(task, completed=end)
    targets: list[str] = []
    with distributed.waiting_for_main():   # rank 0 assembles targets.txt
        if ctx.is_main:
            for start in chunks:
                targets += json.loads((directory / f"chunk-{start:08d}.json").read_text())
            # one line per target; decoded text never holds a newline (the tokenizer maps it to a space)
            write_text_atomic(final, "\n".join(t.replace("\n", " ") for t in targets))
            write_text_atomic(directory / "meta.json", json.dumps({"teacher": str(teacher_dir), "sentences": len(src),
                                                               "beams": settings.beams, "nbest": settings.nbest,
                                                               "engine": engine}, indent=2))
            for start in chunks:
                (directory / f"chunk-{start:08d}.json").unlink(missing_ok=True)
    if not ctx.is_main:
        targets = final.read_text().split("\n")[: len(src)]
    return DistilledData(targets, directory, decoded)


def distilled_pairs(tokenizer, src: list[str], refs: list[str], distilled: list[str], mix: str,
                    max_length: int, cache_root: str | Path | None = None, truncate: bool = False) -> TokenizedPairs:
    """Training pairs on distilled targets, or on references and distilled targets together.

    Pairs longer than ``max_length`` are dropped, or cut to it with ``truncate`` (the recipe's
    long_pairs). With ``cache_root`` they are kept on disk and read memory-mapped
    (batches.tokenize_to_disk).
    """
    if mix not in MIXES:
        raise ValueError(f"seqkd mix must be one of {', '.join(MIXES)}, got {mix!r}")
    keep = [i for i, t in enumerate(distilled) if t.strip()]   # an empty hypothesis teaches nothing
    d_src, d_tgt = [src[i] for i in keep], [distilled[i] for i in keep]
    if mix == "both":
        d_src, d_tgt = list(src) + d_src, list(refs) + d_tgt
    if cache_root is not None:
        return tokenize_to_disk(tokenizer, d_src, d_tgt, 1 << 30 if truncate else max_length, cache_root,
                                truncate_to=max_length if truncate else None, description="tokenizing seq-KD pairs")
    if truncate:
        return truncate_pairs(tokenize_pairs(tokenizer, d_src, d_tgt, 1 << 30), max_length)
    return tokenize_pairs(tokenizer, d_src, d_tgt, max_length)
