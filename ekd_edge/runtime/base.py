"""What every engine offers: translate texts, generate token ids, count source tokens, close.

``Translator`` holds the logic every engine shares (batching, blank inputs, stripping special
tokens); an engine implements ``generate_ids`` and ``source_token_counts`` only. Engines driven by
transformers' ``generate`` (PyTorch, optimum's onnxruntime) share ``GenerateTranslator``, so their
outputs are comparable token for token.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

from ekd_edge.defaults import MAX_NEW_TOKENS, TRANSLATE_BATCH


def strip_special(ids: list[int], pad_id: int, eos_id: int) -> list[int]:
    """Drop the decoder start token, padding and everything from the first EOS on."""
    if ids and ids[0] == pad_id:
        ids = ids[1:]
    if eos_id in ids:
        ids = ids[: ids.index(eos_id)]
    return [i for i in ids if i != pad_id]


class Translator(ABC):
    """A loaded model of any engine. ``engine`` names it; ``path`` is what was loaded."""

    engine: str = ""
    path: Path

    @abstractmethod
    def generate_ids(self, texts: list[str], max_new_tokens: int = MAX_NEW_TOKENS,
                     num_beams: int = 1) -> list[list[int]]:
        """Output token ids (no decoder start, padding or EOS) for each text, batch as given."""

    @abstractmethod
    def decode(self, ids: list[list[int]]) -> list[str]:
        """Token ids back to text."""

    @abstractmethod
    def source_token_counts(self, texts: list[str]) -> tuple[list[int], int]:
        """Tokens of each text (with EOS) and how many the model reads."""

    def translate(self, texts: list[str], batch_size: int = TRANSLATE_BATCH, max_new_tokens: int = MAX_NEW_TOKENS,
                  num_beams: int = 1) -> list[str]:
        """Translations in input order; a blank text translates to an empty line without running the model.

        Texts are batched by length (little padding), so every engine, and training-time
        evaluation, translates a list the same way.
        """
        texts = list(texts)
        filled = sorted((i for i, text in enumerate(texts) if text.strip()), key=lambda i: len(texts[i]))
        out = [""] * len(texts)
        for start in range(0, len(filled), batch_size):
            part = filled[start:start + batch_size]
            for i, text in zip(part, self.translate_batch([texts[i] for i in part], max_new_tokens, num_beams)):
                out[i] = text
        return out

    def translate_batch(self, texts: list[str], max_new_tokens: int, num_beams: int) -> list[str]:
        """One engine call; engines that produce text directly override this."""
        return self.decode(self.generate_ids(texts, max_new_tokens, num_beams))

    def translate_with_ids(self, texts: list[str], max_new_tokens: int = MAX_NEW_TOKENS,
                           num_beams: int = 1) -> tuple[list[str], list[list[int]]]:
        """Text and token ids of one batch, as an app gets them (one engine call where the engine allows)."""
        ids = self.generate_ids(texts, max_new_tokens, num_beams)
        return self.decode(ids), ids

    def close(self) -> None:
        """Release the engine's resources (sessions, threads); the translator is unusable afterwards."""


def over_long_inputs(translator: Translator, texts: list[str]) -> list[tuple[int, int, int]]:
    """(index, tokens, limit) of each text longer than the model reads: its end would be cut."""
    if not texts:
        return []
    counts, limit = translator.source_token_counts(texts)
    return [(i, n, limit) for i, n in enumerate(counts) if n > limit]


class GenerateTranslator(Translator):
    """An engine driven through transformers' ``generate``: subclasses set ``tokenizer`` and ``model``."""

    def generate_ids(self, texts, max_new_tokens=MAX_NEW_TOKENS, num_beams=1):
        import torch

        enc = self.tokenizer(list(texts), return_tensors="pt", padding=True, truncation=True,
                             max_length=self.model.config.max_position_embeddings)
        device = getattr(self.model, "device", None)
        if isinstance(device, torch.device) and device.type != "cpu":   # a model being trained on a GPU
            enc = {k: v.to(device) for k, v in enc.items()}
        # Positions past max_position_embeddings do not exist: cap instead of crashing mid-batch.
        max_new_tokens = min(max_new_tokens, self.model.config.max_position_embeddings - 1)
        # early stopping (end once num_beams hypotheses are finished) is the rule the one-file
        # model's BeamSearch op applies too, so beam outputs are comparable across engines
        with torch.inference_mode():
            out = self.model.generate(**enc, max_new_tokens=max_new_tokens, num_beams=num_beams, do_sample=False,
                                      early_stopping=num_beams > 1)
        return [strip_special(row.tolist(), self.tokenizer.pad_token_id, self.tokenizer.eos_token_id) for row in out.cpu()]

    def decode(self, ids):
        return self.tokenizer.batch_decode(ids, skip_special_tokens=True)

    def source_token_counts(self, texts):
        counts = [len(ids) for ids in self.tokenizer(list(texts))["input_ids"]]
        return counts, int(self.model.config.max_position_embeddings)
