"""A Marian checkpoint run with PyTorch eager ``generate``: the reference every export is held to."""

from __future__ import annotations

from pathlib import Path

from ekd_edge.data.tokenizer import load_tokenizer
from ekd_edge.models import load_model
from ekd_edge.runtime.base import GenerateTranslator


class TorchTranslator(GenerateTranslator):
    engine = "pytorch"

    def __init__(self, checkpoint_dir: str | Path, threads: int | None = None):
        import torch

        if threads:
            torch.set_num_threads(threads)
        self.path = Path(checkpoint_dir)
        self.tokenizer = load_tokenizer(self.path)
        self.model = load_model(self.path).eval()

    @classmethod
    def from_model(cls, model, tokenizer, path: str | Path = "<in memory>") -> "TorchTranslator":
        """A model being trained, translated exactly as its saved checkpoint will be."""
        translator = cls.__new__(cls)
        translator.path, translator.tokenizer, translator.model = Path(path), tokenizer, model.eval()
        return translator
