"""Checkpoint -> CTranslate2 bundle: a second backend and the speed baseline for the ONNX exports.

Layout: ``ct2/`` (CTranslate2's model.bin, config.json, vocabulary) next to the checkpoint's
tokenizer files and manifest.json (backend "ct2"), so the same manifest verification applies;
runtime/ct2_engine.py runs it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ekd_edge.defaults import MAX_BLEU_DROP, PARITY_THRESHOLD
from ekd_edge.errors import BundleError, CheckpointError
from ekd_edge.export.manifest import build_manifest
from ekd_edge.models.ct2_convert import convert_to_ct2
from ekd_edge.runtime.ct2_engine import Ct2Translator

CT2_QUANTIZATIONS = ("int8", "float32")


def export_ct2_bundle(checkpoint_dir: str | Path, out_dir: str | Path, *, quantization: str = "int8",
                      parity_texts: list[str] | None = None, parity_threshold: float = PARITY_THRESHOLD,
                      quality_data: tuple[list[str], list[str]] | None = None,
                      max_bleu_drop: float = MAX_BLEU_DROP, quality_reference: str | Path | None = None,
                      max_new_tokens: int = 128, force: bool = False, progress=None) -> dict:
    """Convert a Marian checkpoint to a CTranslate2 bundle in ``out_dir``; returns the manifest.

    Both gates of export/staging.py run: ``parity_texts`` (enforced for float32, recorded for int8)
    and ``quality_data`` (validation sources, references), whose greedy BLEU is compared with
    ``quality_reference``'s (default: the checkpoint); a failed gate refuses the bundle unless ``force``.
    """
    from ekd_edge.data.tokenizer import copy_tokenizer
    from ekd_edge.export.onnx_export import quiet_export
    from ekd_edge.export.staging import Gates, staged_export
    from ekd_edge.models.checkpoint import check_checkpoint

    report = progress or (lambda message: None)
    checkpoint_dir, out_dir = Path(checkpoint_dir), Path(out_dir)
    if quantization not in CT2_QUANTIZATIONS:
        raise BundleError(f"unknown ct2 quantization {quantization!r} (supported: {', '.join(CT2_QUANTIZATIONS)})")
    check_checkpoint(checkpoint_dir)
    if not (checkpoint_dir / "source.spm").is_file():
        raise CheckpointError(f"{checkpoint_dir}: no tokenizer files to bundle (missing source.spm)")
    variant = "int8" if quantization == "int8" else "fp32"

    def convert(stage: Path, work: Path) -> dict:
        report(f"converting to CTranslate2 ({quantization})")
        try:
            with quiet_export():
                convert_to_ct2(checkpoint_dir, stage / "ct2", quantization)
        except CheckpointError as err:
            raise BundleError(str(err)) from None
        copy_tokenizer(checkpoint_dir, stage)
        # The model config travels too: it holds the position limit and lets tools count parameters.
        shutil.copy(checkpoint_dir / "config.json", stage / "config.json")
        settings = {"quantization": quantization, "max_new_tokens": max_new_tokens}
        return build_manifest(stage, variant=variant, checkpoint_dir=checkpoint_dir, settings=settings,
                              parity={"status": "not run"}, backend="ct2")

    # CTranslate2's float32 decoder is exact enough for the token-for-token gate; int8 is measured.
    gates = Gates(parity_texts=parity_texts, parity_threshold=parity_threshold, exact=quantization == "float32",
                  quality_data=quality_data, max_bleu_drop=max_bleu_drop, quality_reference=quality_reference,
                  max_new_tokens=max_new_tokens)
    manifest = staged_export(checkpoint_dir, out_dir, convert=convert, load=Ct2Translator, gates=gates,
                             force=force, report=report)
    report(f"bundle written to {out_dir} ({manifest['total_size'] / 1e6:.1f} MB, ct2 {quantization})")
    return manifest
