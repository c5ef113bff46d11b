"""The quality gate: an export must translate (almost) as well as the checkpoint it came from.

Both the checkpoint (PyTorch) and the exported candidate translate the same validation sentences
greedily; sacrebleu BLEU of each is compared, and a drop larger than ``max_drop`` BLEU points
refuses the export unless it is forced (which is recorded in the manifest).
"""

from __future__ import annotations

from ekd_edge.defaults import MAX_BLEU_DROP, MAX_NEW_TOKENS
from ekd_edge.errors import BundleError


def measure_quality(reference, candidate, src: list[str], refs: list[str], max_drop: float = MAX_BLEU_DROP,
                    max_new_tokens: int = MAX_NEW_TOKENS) -> dict:
    """BLEU of ``reference`` and ``candidate`` translators on ``src``; status passed/failed against ``max_drop``."""
    from ekd_edge.metrics import score

    if max_drop < 0:
        raise BundleError(f"quality gate: max BLEU drop must be >= 0 (got {max_drop})")
    if not src or len(src) != len(refs):
        raise BundleError(f"quality gate: needs aligned sources and references (got {len(src)} and {len(refs)})")
    ref_score = score(reference.translate(list(src), max_new_tokens=max_new_tokens), refs)
    cand_score = score(candidate.translate(list(src), max_new_tokens=max_new_tokens), refs)
    drop = ref_score["bleu"] - cand_score["bleu"]
    return {
        "status": "passed" if drop <= max_drop else "failed",
        "sentences": len(src),
        "checkpoint_bleu": round(ref_score["bleu"], 2),
        "bundle_bleu": round(cand_score["bleu"], 2),
        "bleu_drop": round(drop, 2),
        "max_drop": max_drop,
        "checkpoint_chrf": round(ref_score["chrf"], 2),
        "bundle_chrf": round(cand_score["chrf"], 2),
        "bleu_signature": cand_score["bleu_signature"],
    }


def enforce_quality(result: dict, label: str, force: bool) -> dict:
    """Raise BundleError for a failed gate unless ``force`` (then mark the result as forced)."""
    if result["status"] != "failed":
        return result
    message = (f"{label}: quality gate failed: BLEU {result['bundle_bleu']:.2f} vs checkpoint "
               f"{result['checkpoint_bleu']:.2f} on {result['sentences']} validation sentences, a drop of "
               f"{result['bleu_drop']:.2f} > allowed {result['max_drop']:.2f}")
    if not force:
        raise BundleError(message + " (nothing written; --force writes it anyway)")
    return {**result, "forced": True}
