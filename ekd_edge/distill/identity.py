"""A run's identity: the exact data, tokenizer and given teachers it was started on.

The recipe text alone does not identify a run: a corpus file edited between a kill and a resume
(same name, same line count) would silently continue old progress, with the old tokenizer, on
misaligned data. So the run directory keeps ``identity.json`` — the sha256 of every corpus file
the run reads, of each teacher checkpoint it was given, and the tokenizer's fingerprint — and a
resume that finds any of them changed stops with one line naming the file.
"""

from __future__ import annotations

import json
from pathlib import Path

from ekd_edge.errors import EkdError
from ekd_edge.files import write_json_atomic
from ekd_edge.hashing import file_sha256

IDENTITY_NAME = "identity.json"
SPLITS_READ = ("train", "valid")   # what distill reads; test is never touched while training


def data_identity(corpus) -> dict:
    """{"train.src": {"path", "sha256"}, …} for every corpus file a run reads."""
    out = {}
    for split in SPLITS_READ:
        if split in corpus.files:
            for side, path in zip(("src", "tgt"), corpus.files[split]):
                out[f"{split}.{side}"] = {"path": str(path), "sha256": file_sha256(path)}
    return out


def teacher_identity(teachers) -> dict:
    """sha256 of each given teacher checkpoint's weights (trained teachers are the run's own)."""
    from ekd_edge.models.teacher import weights_digest

    return {t.name: weights_digest(t.checkpoint) for t in teachers if t.checkpoint}


def check_run_identity(run_dir: Path, current: dict, write: bool) -> dict:
    """Compare ``current`` with the identity stored in ``run_dir``; store it when there is none yet.

    Returns the stored identity (which may hold the tokenizer fingerprint recorded earlier).
    """
    path = Path(run_dir) / IDENTITY_NAME
    if not path.is_file():
        if write:
            write_json_atomic(path, current)
        return current
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise EkdError(f"{path}: unreadable ({exc}); the run cannot prove which data it was started on") from None
    for key, entry in current.get("data", {}).items():
        before = stored.get("data", {}).get(key)
        if before is None or before["sha256"] != entry["sha256"]:
            raise EkdError(f"{entry['path']}: changed since this run started in {run_dir} (corpus file {key}); "
                           "the run's tokenizer and progress belong to the old data: restore the file or "
                           "start a new --run-dir")
    for name, digest in current.get("teachers", {}).items():
        if stored.get("teachers", {}).get(name) not in (None, digest):
            raise EkdError(f"teacher {name!r}: its checkpoint's weights changed since this run started "
                           f"in {run_dir}; restore it or start a new --run-dir")
    return stored


def check_tokenizer(run_dir: Path, identity: dict, fingerprint: str, write: bool) -> None:
    """The run's tokenizer must be the one it trained first; record it the first time."""
    recorded = identity.get("tokenizer")
    if recorded is None:
        if write:
            write_json_atomic(Path(run_dir) / IDENTITY_NAME, {**identity, "tokenizer": fingerprint})
        return
    if recorded != fingerprint:
        raise EkdError(f"{Path(run_dir) / 'tokenizer' / 'vocab.json'}: differs from the tokenizer this run "
                       "started with; restore it or start a new --run-dir")
