"""A CTranslate2 bundle (backend "ct2"): the speed baseline for the ONNX exports."""

from __future__ import annotations

import json
from pathlib import Path

from ekd_edge.data.tokenizer import load_tokenizer
from ekd_edge.defaults import MAX_NEW_TOKENS
from ekd_edge.errors import BundleError
from ekd_edge.runtime.base import Translator, strip_special
from ekd_edge.runtime.manifest import verify_bundle


class Ct2Translator(Translator):
    """A CTranslate2 bundle; outputs comparable token for token with PyTorch's."""

    engine = "ctranslate2"

    def __init__(self, bundle_dir: str | Path, threads: int | None = None):
        import ctranslate2

        self.path = Path(bundle_dir)
        self.manifest = verify_bundle(self.path)
        if self.manifest.get("backend") != "ct2":
            raise BundleError(f"{self.path}: not a CTranslate2 bundle (backend {self.manifest.get('backend')!r})")
        self.variant = self.manifest.get("variant", "int8")
        self.tokenizer = load_tokenizer(self.path)
        config = json.loads((self.path / "config.json").read_text()) if (self.path / "config.json").is_file() else {}
        self.max_positions = int(config.get("max_position_embeddings", 512))
        compute_type = "int8" if self.variant == "int8" else "float32"
        try:
            self.model = ctranslate2.Translator(str(self.path / "ct2"), device="cpu", compute_type=compute_type,
                                                intra_threads=int(threads or 0), inter_threads=1)
        except Exception as exc:
            detail = " ".join(str(exc).split())[:300]
            raise BundleError(f"{self.path}: CTranslate2 cannot load the bundle ({type(exc).__name__}: {detail})") from None

    def source_token_counts(self, texts: list[str]) -> tuple[list[int], int]:
        """Tokens of each text (with EOS) and how many the model reads."""
        return [len(ids) for ids in self.tokenizer(list(texts))["input_ids"]], self.max_positions

    def generate_ids(self, texts: list[str], max_new_tokens: int = MAX_NEW_TOKENS, num_beams: int = 1):
        """Token ids (without the decoder start token) for each text, batch as given."""
        tok = self.tokenizer
        encoded = tok(list(texts), truncation=True, max_length=self.max_positions)["input_ids"]
        sources = [tok.convert_ids_to_tokens(ids) for ids in encoded]
        # Our generation config forces EOS as the last of max_new_tokens: PyTorch and ONNX emit at most
        # max_new_tokens - 1 real tokens, so CTranslate2 gets the same budget.
        limit = max(1, min(max_new_tokens, self.max_positions - 1) - 1)
        results = self.model.translate_batch(sources, beam_size=num_beams, max_decoding_length=limit,
                                             return_scores=False)
        out = []
        for result in results:
            ids = tok.convert_tokens_to_ids(result.hypotheses[0])
            out.append(strip_special(ids, tok.pad_token_id, tok.eos_token_id))
        return out

    def decode(self, ids):
        return self.tokenizer.batch_decode(ids, skip_special_tokens=True)
