"""A Marian checkpoint converted to a CTranslate2 model directory: one conversion for the ct2
export (export/ct2.py, which adds gates and a manifest around it) and for teacher decoding in
sequence-level KD (distill/teacher_engine.py, which needs only the model)."""

from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path

from ekd_edge.errors import CheckpointError

CONVERTER_QUANTIZATIONS = ("int8", "float32", "float16", "bfloat16", "int8_float16")


def convert_to_ct2(checkpoint_dir: str | Path, out_dir: str | Path, quantization: str = "int8") -> Path:
    """Write CTranslate2's model.bin, config.json and vocabulary for ``checkpoint_dir`` to ``out_dir``
    (which must not exist yet); a conversion failure is a CheckpointError naming the checkpoint."""
    from ctranslate2.converters import TransformersConverter

    checkpoint_dir, out_dir = Path(checkpoint_dir), Path(out_dir)
    if quantization not in CONVERTER_QUANTIZATIONS:
        raise CheckpointError(f"unknown CTranslate2 quantization {quantization!r} "
                              f"(supported: {', '.join(CONVERTER_QUANTIZATIONS)})")
    try:
        with _quiet(), _keep_pad_at_zero():
            TransformersConverter(str(checkpoint_dir)).convert(str(out_dir), quantization=quantization)
    except Exception as exc:
        detail = " ".join(str(exc).split())[:300]
        raise CheckpointError(f"{checkpoint_dir}: CTranslate2 conversion failed ({type(exc).__name__}: {detail})") from None
    return out_dir


@contextlib.contextmanager
def _quiet():
    """The converter logs and prints per layer; a conversion inside a training run stays silent."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logging.disable(previous)


@contextlib.contextmanager
def _keep_pad_at_zero():
    """Convert with the full vocabulary and PyTorch's decoder start: CTranslate2's Marian loader
    assumes Opus-MT's layout (<pad> last, dropped with its row, decoder started from a zero vector),
    while our tokenizer puts <pad> at id 0 and the decoder starts from that (trained) <pad> row."""
    from ctranslate2.converters import transformers as ct2_transformers

    class FullVocabMarianLoader(ct2_transformers.MarianMTLoader):
        def get_model_spec(self, model):
            model.config.normalize_before = False
            model.config.normalize_embedding = False
            return ct2_transformers.BartLoader.get_model_spec(self, model)

        def set_config(self, config, model, tokenizer):
            config.eos_token = tokenizer.eos_token
            config.unk_token = tokenizer.unk_token
            config.decoder_start_token = tokenizer.pad_token

        def set_decoder(self, spec, decoder):
            ct2_transformers.BartLoader.set_decoder(self, spec, decoder)

        def get_vocabulary(self, model, tokenizer):
            return ct2_transformers.BartLoader.get_vocabulary(self, model, tokenizer)

    registry = ct2_transformers._MODEL_LOADERS
    original = registry["MarianConfig"]
    registry["MarianConfig"] = FullVocabMarianLoader()
    try:
        yield
    finally:
        registry["MarianConfig"] = original
