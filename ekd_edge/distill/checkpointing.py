"""Progress checkpoints: what a killed training run needs to continue exactly where it stopped.

A finished model is a checkpoint directory with metrics.json (see ladder.py) and is never trained
again. While a model trains, a *progress file* next to its directory (``stage-1.progress.pt``)
holds everything the next step depends on:

    weights · optimizer moments · steps done · torch RNG state of every rank (dropout)
    · data position (the global batch index) · what is being trained (role, name, stage)

The learning rate is a pure function of the step (trainer.lr_at) and the batch order a pure
function of (seed, epoch) (batches.BatchStream), so nothing else is needed. The file is written
to a temporary name, fsynced, then renamed over the old one, so a crash at any instant leaves
either the previous progress or the new one. It is read with ``torch.load(weights_only=True)``:
tensors and plain containers only, never pickled code.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ekd_edge.errors import CheckpointError
from ekd_edge.files import atomic_file

FORMAT_VERSION = 1


@dataclass
class ProgressFile:
    """The progress checkpoint of one model being trained, and what it must belong to."""

    path: Path
    role: str                  # "teacher" or "student"
    name: str                  # teacher name or "stage-<k>"
    total_steps: int

    @classmethod
    def for_model(cls, model_dir: str | Path, role: str, total_steps: int) -> "ProgressFile":
        model_dir = Path(model_dir)
        return cls(model_dir.with_name(f"{model_dir.name}.progress.pt"), role, model_dir.name, total_steps)

    def exists(self) -> bool:
        return self.path.is_file()

    def save(self, state: dict) -> None:
        """Write ``state`` (plus the identity fields) atomically: temp file, fsync, rename, fsync dir."""
        payload = {"format_version": FORMAT_VERSION, "role": self.role, "name": self.name,
                   "total_steps": self.total_steps, **state}
        with atomic_file(self.path) as fh:   # a full disk keeps the previous progress and names this file
            torch.save(payload, fh)
        _fsync_directory(self.path.parent)

    def load(self) -> dict | None:
        """The saved state, or None when there is none; a damaged or foreign file is an error."""
        if not self.exists():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as exc:  # truncated zip, bad pickle opcode, wrong magic: all the same to the user
            raise CheckpointError(f"{self.path}: corrupt progress checkpoint ({type(exc).__name__}); "
                                  "delete it to restart this model from its beginning") from None
        if not isinstance(state, dict) or state.get("format_version") != FORMAT_VERSION:
            raise CheckpointError(f"{self.path}: not an ekd-edge progress checkpoint (format_version "
                                  f"{state.get('format_version') if isinstance(state, dict) else None!r})")
        for key, expected in (("role", self.role), ("name", self.name), ("total_steps", self.total_steps)):
            if state.get(key) != expected:
                raise CheckpointError(f"{self.path}: belongs to {key} {state.get(key)!r}, not {expected!r}; "
                                      "delete it to restart this model")
        step = state.get("step")
        if not isinstance(step, int) or not 0 < step <= self.total_steps:
            raise CheckpointError(f"{self.path}: step {step!r} is outside 1..{self.total_steps}")
        return state

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def is_done(model_dir: Path) -> bool:
    """A model is finished once its directory holds weights and metrics.json (written last, atomically)."""
    return (model_dir / "metrics.json").is_file() and (model_dir / "model.safetensors").is_file()
