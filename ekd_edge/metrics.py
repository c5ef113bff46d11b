"""Translation quality: sacrebleu corpus BLEU and chrF, each with the signature that makes it comparable."""

from __future__ import annotations


def score(hypotheses: list[str], references: list[str]) -> dict:
    """Corpus BLEU and chrF of ``hypotheses`` against one reference per line.

    Returns ``bleu``, ``chrf`` (0-100), ``bleu_signature``, ``chrf_signature`` (sacrebleu's own
    strings: a BLEU without its tokenizer and smoothing settings cannot be compared) and ``n``.
    """
    # sacrebleu is imported here so that importing this module (e.g. by the memory probe) stays light
    from sacrebleu.metrics import BLEU, CHRF

    hypotheses, references = list(hypotheses), list(references)
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    if not hypotheses:
        raise ValueError("nothing to score: no hypotheses")
    bleu, chrf = BLEU(), CHRF()
    bleu_score = bleu.corpus_score(hypotheses, [references])
    chrf_score = chrf.corpus_score(hypotheses, [references])
    return {
        "bleu": float(bleu_score.score),
        "chrf": float(chrf_score.score),
        "bleu_signature": str(bleu.get_signature()),
        "chrf_signature": str(chrf.get_signature()),
        "n": len(hypotheses),
    }
