"""The one export skeleton every format follows (optimum-layout ONNX, one-file ONNX, CTranslate2).

    check destination ─► stage in a hidden sibling ─► convert (format's own code) ─► manifest
        ─► load with the runtime ─► parity gate ─► quality gate ─► check destination ─► rename

A format supplies only ``convert(stage, scratch) -> manifest`` (writing the bundle's files and its
manifest into ``stage``) and ``load(stage) -> translator``. Both gates run for every format: an
fp32 bundle whose greedy tokens differ from PyTorch's, or any bundle whose BLEU drops more than
allowed, is refused and nothing is written unless ``force`` (which the manifest records).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ekd_edge.defaults import MAX_BLEU_DROP, MAX_NEW_TOKENS, PARITY_THRESHOLD
from ekd_edge.errors import BundleError
from ekd_edge.export.destination import check_destination
from ekd_edge.export.manifest import verified_record, write_manifest
from ekd_edge.export.parity import parity_failure, token_agreement
from ekd_edge.export.quality_gate import enforce_quality, measure_quality
from ekd_edge.files import replace_dir, staged


@dataclass
class Gates:
    """What an export is checked against before it is written."""

    parity_texts: list[str] | None = None        # sources whose greedy ids must equal PyTorch's
    parity_threshold: float = PARITY_THRESHOLD  # share of equal sentences an exact (fp32) export needs
    exact: bool = True                           # False (int8): agreement is recorded, not enforced
    quality_data: tuple[list[str], list[str]] | None = None   # (sources, references) for the BLEU gate
    max_bleu_drop: float = MAX_BLEU_DROP
    quality_reference: str | Path | None = None  # checkpoint to compare BLEU with (default: the exported one)
    max_new_tokens: int = MAX_NEW_TOKENS

    def check(self) -> None:
        if not 0.0 <= self.parity_threshold <= 1.0:
            raise BundleError(f"parity threshold {self.parity_threshold} is outside [0, 1]")
        if self.max_new_tokens < 1:
            raise BundleError(f"max_new_tokens must be at least 1 (got {self.max_new_tokens})")
        if self.max_bleu_drop < 0:
            raise BundleError(f"max BLEU drop must be >= 0 (got {self.max_bleu_drop})")


def run_parity(checkpoint_dir: str | Path, candidate, gates: Gates) -> dict:
    """Greedy token agreement of ``candidate`` with the PyTorch checkpoint, with the gate's verdict."""
    from ekd_edge.runtime.torch_engine import TorchTranslator

    result = token_agreement(TorchTranslator(checkpoint_dir), candidate, list(gates.parity_texts or []),
                             max_new_tokens=gates.max_new_tokens)
    status = ("passed" if result["rate"] >= gates.parity_threshold else "failed") if gates.exact else "measured"
    return {"status": status, "gated": gates.exact, "threshold": gates.parity_threshold if gates.exact else None,
            "max_new_tokens": gates.max_new_tokens, **result}


def staged_export(checkpoint_dir: str | Path, out_dir: str | Path, *,
                  convert: Callable[[Path, Path], dict], load: Callable[[Path], object],
                  gates: Gates, force: bool = False, report=None) -> dict:
    """Build a bundle with ``convert``, gate it, and move it to ``out_dir``; returns its manifest."""
    report = report or (lambda message: None)
    checkpoint_dir, out_dir = Path(checkpoint_dir), Path(out_dir)
    gates.check()
    check_destination(out_dir)
    with staged(out_dir) as work:
        stage = work / "bundle"
        stage.mkdir()
        manifest = convert(stage, work)
        write_manifest(stage, manifest)

        report("loading the bundle with its runtime")
        candidate = load(stage)
        if gates.parity_texts:
            report(f"parity gate: greedy tokens against PyTorch on {len(gates.parity_texts)} sentences")
            parity = run_parity(checkpoint_dir, candidate, gates)
            if parity["status"] == "failed":
                message = parity_failure(parity, gates.parity_threshold, label=str(out_dir))
                if not force:
                    raise BundleError(message + " (nothing written; --force writes it anyway)")
                parity["forced"] = True
            manifest["parity"] = parity
        if gates.quality_data:
            from ekd_edge.runtime.torch_engine import TorchTranslator

            src, refs = gates.quality_data
            reference = gates.quality_reference or checkpoint_dir
            report(f"quality gate: BLEU of the bundle against the checkpoint on {len(src)} sentences")
            quality = measure_quality(TorchTranslator(reference), candidate, src, refs, gates.max_bleu_drop,
                                      gates.max_new_tokens)
            quality["reference"] = str(reference)
            manifest["quality_gate"] = enforce_quality(quality, str(out_dir), force)
        manifest["verified"] = verified_record(stage, manifest)   # ties each graph to the gates it passed
        write_manifest(stage, manifest)
        close = getattr(candidate, "close", None)
        if close:
            close()
        del candidate

        report(f"writing {out_dir}")
        check_destination(out_dir)  # nothing may have appeared there while we worked
        replace_dir(stage, out_dir)
    return manifest
