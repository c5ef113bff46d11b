"""Translating with an exported bundle through onnxruntime, with TorchTranslator's interface."""

from __future__ import annotations

import warnings
from pathlib import Path

from ekd_edge.errors import BundleError
from ekd_edge.export.manifest import verify_bundle
from ekd_edge.translate import DEFAULT_MAX_NEW_TOKENS, _strip


class OnnxTranslator:
    """An exported bundle run by onnxruntime (CPU) through optimum's ORTModelForSeq2SeqLM.

    The manifest is verified before any graph is loaded, so a tampered or incomplete bundle is
    refused up front rather than producing silently wrong translations.
    """

    engine = "onnxruntime"

    def __init__(self, bundle_dir: str | Path, threads: int | None = None):
        import onnxruntime as ort

        from ekd_edge.data.tokenizer import load_tokenizer

        self.path = Path(bundle_dir)
        self.manifest = verify_bundle(self.path)
        self.variant = self.manifest.get("variant", "fp32")
        self.tokenizer = load_tokenizer(self.path)

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
            options.inter_op_num_threads = 1
        try:
            from optimum.onnxruntime import ORTModelForSeq2SeqLM

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.model = ORTModelForSeq2SeqLM.from_pretrained(
                    str(self.path), provider="CPUExecutionProvider", session_options=options,
                    local_files_only=True, use_cache=True,
                )
        except BundleError:
            raise
        except Exception as exc:
            detail = " ".join(str(exc).split())[:300]
            raise BundleError(f"{self.path}: onnxruntime cannot load the bundle ({type(exc).__name__}: {detail})") from None

    def generate_ids(self, texts: list[str], max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, num_beams: int = 1):
        """Token ids (without the decoder start token) for each text, batch as given."""
        import torch

        enc = self.tokenizer(list(texts), return_tensors="pt", padding=True, truncation=True,
                             max_length=self.model.config.max_position_embeddings)
        # Same cap as TorchTranslator: positions past the table do not exist in either engine.
        max_new_tokens = min(max_new_tokens, self.model.config.max_position_embeddings - 1)
        with torch.inference_mode():
            out = self.model.generate(**enc, max_new_tokens=max_new_tokens, num_beams=num_beams, do_sample=False)
        return [_strip(row.tolist(), self.tokenizer.pad_token_id, self.tokenizer.eos_token_id) for row in out]

    def translate(self, texts: list[str], batch_size: int = 32, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
                  num_beams: int = 1) -> list[str]:
        out = []
        for i in range(0, len(texts), batch_size):
            ids = self.generate_ids(texts[i:i + batch_size], max_new_tokens, num_beams)
            out.extend(self.tokenizer.batch_decode(ids, skip_special_tokens=True))
        return out
