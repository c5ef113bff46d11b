"""Greedy (or beam) translation with a PyTorch checkpoint or an exported ONNX bundle, one interface.

``load_translator(path)`` looks at what the directory holds: a bundle has ``manifest.json``,
a checkpoint has ``model.safetensors``.
"""

from __future__ import annotations

from pathlib import Path

from ekd_edge.errors import CheckpointError

DEFAULT_MAX_NEW_TOKENS = 128


class GenerateTranslator:
    """Shared by every engine driven through transformers' ``generate`` (PyTorch, optimum's ORT):
    subclasses set ``self.tokenizer`` and ``self.model``; decoding and stripping are the same, so
    the engines' outputs are comparable token for token."""

    def generate_ids(self, texts: list[str], max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, num_beams: int = 1):
        """Token ids (without the decoder start token) for each text, batch as given."""
        import torch

        enc = self.tokenizer(list(texts), return_tensors="pt", padding=True, truncation=True,
                             max_length=self.model.config.max_position_embeddings)
        # Positions past max_position_embeddings do not exist: cap instead of crashing mid-batch.
        max_new_tokens = min(max_new_tokens, self.model.config.max_position_embeddings - 1)
        # early stopping (end once num_beams hypotheses are finished) is the rule the one-file
        # model's BeamSearch op applies too, so beam outputs are comparable across engines
        with torch.inference_mode():
            out = self.model.generate(**enc, max_new_tokens=max_new_tokens, num_beams=num_beams, do_sample=False,
                                      early_stopping=num_beams > 1)
        return [_strip(row.tolist(), self.tokenizer.pad_token_id, self.tokenizer.eos_token_id) for row in out]

    def translate(self, texts: list[str], batch_size: int = 32, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
                  num_beams: int = 1) -> list[str]:
        out = []
        for i in range(0, len(texts), batch_size):
            ids = self.generate_ids(texts[i:i + batch_size], max_new_tokens, num_beams)
            out.extend(self.tokenizer.batch_decode(ids, skip_special_tokens=True))
        return out


class TorchTranslator(GenerateTranslator):
    """A Marian checkpoint run with PyTorch eager ``generate``."""

    engine = "pytorch"

    def __init__(self, checkpoint_dir: str | Path, threads: int | None = None):
        import torch

        from ekd_edge.data.tokenizer import load_tokenizer
        from ekd_edge.models import load_model

        if threads:
            torch.set_num_threads(threads)
        self.path = Path(checkpoint_dir)
        self.tokenizer = load_tokenizer(self.path)
        self.model = load_model(self.path).eval()


def _strip(ids: list[int], pad_id: int, eos_id: int) -> list[int]:
    """Drop the decoder start token, padding and everything from the first EOS on."""
    if ids and ids[0] == pad_id:
        ids = ids[1:]
    if eos_id in ids:
        ids = ids[: ids.index(eos_id)]
    return [i for i in ids if i != pad_id]


def load_translator(path: str | Path, threads: int | None = None):
    """A translator for a checkpoint directory or an exported bundle directory."""
    path = Path(path)
    if (path / "manifest.json").is_file():
        from ekd_edge.export.bundle import OnnxTranslator
        from ekd_edge.export.manifest import read_manifest

        backend = read_manifest(path).get("backend")
        if backend == "ct2":
            from ekd_edge.export.ct2 import Ct2Translator

            return Ct2Translator(path, threads=threads)
        if backend == "onefile":
            from ekd_edge.export.onefile import OneFileTranslator

            return OneFileTranslator(path, threads=threads)

        return OnnxTranslator(path, threads=threads)
    if (path / "config.json").is_file():
        return TorchTranslator(path, threads=threads)
    raise CheckpointError(f"{path}: neither an exported bundle (manifest.json) nor a checkpoint (config.json)")
