"""Token-for-token agreement between two translators (e.g. PyTorch vs an exported ONNX bundle).

Greedy decoding is deterministic, so a faithful export must produce the very same token ids as the
model it came from; comparing ids (not BLEU) catches a broken graph even where the damage happens
to leave the detokenised text looking plausible.
"""

from __future__ import annotations

from ekd_edge.defaults import MAX_NEW_TOKENS, PARITY_THRESHOLD
from ekd_edge.errors import BundleError

_SHOWN_CHARS = 80


def token_agreement(reference, candidate, texts: list[str], max_new_tokens: int = MAX_NEW_TOKENS, batch_size: int = 32) -> dict:
    """Share of ``texts`` whose greedy token ids are identical under both translators.

    Both translators see the same batches, so padding cannot explain a difference. Returns
    ``rate`` (1.0 for no texts), ``n``, ``n_equal`` and ``first_mismatch`` (None, or the index,
    text, first differing token position and both id sequences).
    """
    texts = list(texts)
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    n_equal = 0
    first_mismatch = None
    for start in range(0, len(texts), batch_size):
        batch = texts[start:start + batch_size]
        ref_ids = reference.generate_ids(batch, max_new_tokens=max_new_tokens, num_beams=1)
        cand_ids = candidate.generate_ids(batch, max_new_tokens=max_new_tokens, num_beams=1)
        if len(ref_ids) != len(batch) or len(cand_ids) != len(batch):
            raise ValueError(f"a translator returned {len(ref_ids)}/{len(cand_ids)} results for {len(batch)} texts")
        for offset, (ref, cand) in enumerate(zip(ref_ids, cand_ids)):
            ref, cand = list(ref), list(cand)
            if ref == cand:
                n_equal += 1
            elif first_mismatch is None:
                first_mismatch = {
                    "index": start + offset,
                    "text": batch[offset],
                    "position": _first_difference(ref, cand),
                    "reference_ids": ref,
                    "candidate_ids": cand,
                }
    n = len(texts)
    return {"rate": n_equal / n if n else 1.0, "n": n, "n_equal": n_equal, "first_mismatch": first_mismatch}


def parity_failure(result: dict, threshold: float, label: str = "ONNX bundle") -> str | None:
    """The one-line reason ``result`` misses ``threshold``, or None when it passes."""
    if result["rate"] >= threshold:
        return None
    message = (f"{label}: parity gate failed, greedy tokens match PyTorch on {result['n_equal']}/{result['n']} "
               f"sentences ({result['rate']:.1%} < {threshold:.1%})")
    mismatch = result.get("first_mismatch")
    if mismatch:
        message += (f"; first mismatch: sentence {mismatch['index']} {_shown(mismatch['text'])} "
                    f"differs at token {mismatch['position']}")
    return message


def check_parity_gate(reference, candidate, texts: list[str], threshold: float = PARITY_THRESHOLD,
                      max_new_tokens: int = MAX_NEW_TOKENS, batch_size: int = 32, label: str = "ONNX bundle") -> dict:
    """``token_agreement``, raising BundleError when the rate is below ``threshold``."""
    result = token_agreement(reference, candidate, texts, max_new_tokens=max_new_tokens, batch_size=batch_size)
    failure = parity_failure(result, threshold, label)
    if failure:
        raise BundleError(failure)
    return result


def _first_difference(a: list[int], b: list[int]) -> int:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return min(len(a), len(b))


def _shown(text: str) -> str:
    # repr keeps the message on one line whatever the sentence holds.
    text = text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS - 1] + "…"
    return repr(text)
