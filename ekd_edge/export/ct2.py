"""CTranslate2 bundles: a second backend and the speed baseline for the ONNX exports.

Layout: ``ct2/`` (CTranslate2's model.bin, config.json, vocabulary) next to the checkpoint's
tokenizer files and manifest.json (backend "ct2"), so the same manifest verification applies.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from pathlib import Path

from ekd_edge.errors import BundleError, CheckpointError
from ekd_edge.export.manifest import build_manifest, verify_bundle, write_manifest
from ekd_edge.export.quality_gate import DEFAULT_MAX_DROP, enforce_quality, measure_quality
from ekd_edge.translate import DEFAULT_MAX_NEW_TOKENS, _strip

CT2_QUANTIZATIONS = ("int8", "float32")


def export_ct2_bundle(checkpoint_dir: str | Path, out_dir: str | Path, *, quantization: str = "int8",
                      quality_data: tuple[list[str], list[str]] | None = None,
                      max_bleu_drop: float = DEFAULT_MAX_DROP, quality_reference: str | Path | None = None,
                      max_new_tokens: int = 128, force: bool = False, progress=None) -> dict:
    """Convert a Marian checkpoint to a CTranslate2 bundle in ``out_dir``; returns the manifest.

    With ``quality_data`` (validation sources, references) the bundle's greedy BLEU is compared with
    ``quality_reference``'s (default: the checkpoint) and a drop above ``max_bleu_drop`` refuses it
    unless ``force``.
    """
    from ctranslate2.converters import TransformersConverter

    from ekd_edge.data.tokenizer import copy_tokenizer
    from ekd_edge.export.onnx_export import _check_destination, _quiet_export, _replace_dir
    from ekd_edge.models.checkpoint import check_checkpoint

    report = progress or (lambda message: None)
    checkpoint_dir, out_dir = Path(checkpoint_dir), Path(out_dir)
    if quantization not in CT2_QUANTIZATIONS:
        raise BundleError(f"unknown ct2 quantization {quantization!r} (supported: {', '.join(CT2_QUANTIZATIONS)})")
    check_checkpoint(checkpoint_dir)
    if not (checkpoint_dir / "source.spm").is_file():
        raise CheckpointError(f"{checkpoint_dir}: no tokenizer files to bundle (missing source.spm)")
    _check_destination(out_dir)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        stage = work / "bundle"
        stage.mkdir()
        report(f"converting to CTranslate2 ({quantization})")
        try:
            with _quiet_export(), _keep_pad_at_zero():
                TransformersConverter(str(checkpoint_dir)).convert(str(stage / "ct2"), quantization=quantization)
        except Exception as exc:
            detail = " ".join(str(exc).split())[:300]
            raise BundleError(f"{checkpoint_dir}: CTranslate2 conversion failed ({type(exc).__name__}: {detail})") from None
        copy_tokenizer(checkpoint_dir, stage)
        # The model config travels too: it holds the position limit and lets tools count parameters.
        shutil.copy(checkpoint_dir / "config.json", stage / "config.json")
        settings = {"quantization": quantization, "max_new_tokens": max_new_tokens}
        variant = "int8" if quantization == "int8" else "fp32"
        manifest = build_manifest(stage, variant=variant, checkpoint_dir=checkpoint_dir, settings=settings,
                                  parity={"status": "not run"}, backend="ct2")
        write_manifest(stage, manifest)
        candidate = Ct2Translator(stage)
        if quality_data:
            from ekd_edge.translate import TorchTranslator

            report(f"quality gate on {len(quality_data[0])} validation sentences")
            quality = measure_quality(TorchTranslator(quality_reference or checkpoint_dir), candidate, *quality_data,
                                      max_drop=max_bleu_drop, max_new_tokens=max_new_tokens)
            quality["reference"] = str(quality_reference or checkpoint_dir)
            manifest["quality_gate"] = enforce_quality(quality, str(out_dir), force)
            write_manifest(stage, manifest)
        del candidate
        _check_destination(out_dir)
        _replace_dir(stage, out_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(f"bundle written to {out_dir} ({manifest['total_size'] / 1e6:.1f} MB, ct2 {quantization})")
    return manifest


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


class Ct2Translator:
    """A CTranslate2 bundle, with TorchTranslator's interface (generate_ids / translate)."""

    engine = "ctranslate2"

    def __init__(self, bundle_dir: str | Path, threads: int | None = None):
        import ctranslate2

        from ekd_edge.data.tokenizer import load_tokenizer

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

    def generate_ids(self, texts: list[str], max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, num_beams: int = 1):
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
            out.append(_strip(ids, tok.pad_token_id, tok.eos_token_id))
        return out

    def translate(self, texts: list[str], batch_size: int = 32, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
                  num_beams: int = 1) -> list[str]:
        out = []
        for i in range(0, len(texts), batch_size):
            ids = self.generate_ids(texts[i:i + batch_size], max_new_tokens, num_beams)
            out.extend(self.tokenizer.batch_decode(ids, skip_special_tokens=True))
        return out
