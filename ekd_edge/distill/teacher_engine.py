"""Which engine decodes a teacher's translations of a whole corpus (sequence-level KD targets).

PyTorch's ``generate`` runs the teacher as trained; CTranslate2 runs the same weights converted
once (int8 on the CPU, float16 on a GPU) several times faster, with slightly different numerics,
so a few sentences may decode differently. The choice is the recipe's ``[distill]
teacher_engine``:

    pytorch       always PyTorch
    ctranslate2   CTranslate2, or a one-line error saying why it cannot run this teacher
    auto          CTranslate2 where it can, else PyTorch with one line saying why

CTranslate2 runs a Marian teacher without a prompt (no language token, no forced first token, no
prefix) here; other teachers decode through PyTorch. The converted model is kept under
``cache_root/ct2-teacher-<weights>-<quantization>/`` and reused by later runs and stages.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ekd_edge.errors import RecipeError

TEACHER_ENGINES = ("auto", "pytorch", "ctranslate2")


def ct2_unsupported(family: str, prompted: bool) -> str | None:
    """Why CTranslate2 cannot decode a teacher of ``family`` (``prompted``: it takes a language
    token, forced first token or prefix) here, or None when it can."""
    try:
        import ctranslate2  # noqa: F401
    except ImportError:
        return "the ctranslate2 package is not installed (pip install 'ekd-edge[ct2]')"
    if family != "marian":
        return f"its family is {family}, and only Marian teachers are converted for CTranslate2 here"
    if prompted:
        return "it is prompted (language token, forced first token or prefix), which the CTranslate2 path does not pass"
    return None


def choose_engine(requested: str, family: str, prompted: bool, where: str) -> tuple[str, str | None]:
    """(engine to use, why "auto" fell back to PyTorch or None); "ctranslate2" that cannot run is
    a RecipeError naming ``where``, raised before any work starts."""
    if requested not in TEACHER_ENGINES:
        raise RecipeError(f"{where}: teacher_engine {requested!r} is not one of {', '.join(TEACHER_ENGINES)}")
    if requested == "pytorch":
        return "pytorch", None
    why = ct2_unsupported(family, prompted)
    if why is None:
        return "ctranslate2", None
    if requested == "ctranslate2":
        raise RecipeError(f"{where}: [distill] teacher_engine = \"ctranslate2\" cannot decode this teacher: {why}")
    return "pytorch", why


def is_prompted(teacher) -> bool:
    return bool(teacher.prefix or teacher.forced_bos_token_id is not None or teacher.source_prefix_ids)


def ct2_quantization(device: str) -> str:
    return "float16" if str(device).startswith("cuda") else "int8"


class Ct2TeacherDecoder:
    """A teacher's weights in CTranslate2, decoding text to text with the teacher's own tokenizer."""

    def __init__(self, teacher, cache_root: str | Path, device="cpu", threads: int = 0,
                 quantization: str | None = None):
        import ctranslate2
        import torch

        from ekd_edge.files import publish_dir, staging_dir
        from ekd_edge.models.ct2_convert import convert_to_ct2
        from ekd_edge.models.teacher import weights_digest

        self.teacher, self.tokenizer = teacher, teacher.tokenizer
        self.quantization = quantization or ct2_quantization(device)
        directory = Path(cache_root) / f"ct2-teacher-{weights_digest(teacher.directory)[:16]}-{self.quantization}"
        if not (directory / "model.bin").is_file():
            staging = staging_dir(directory)
            try:
                publish_dir(convert_to_ct2(teacher.directory, staging / "model", self.quantization), directory)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        self.directory = directory
        device = torch.device(device)
        self.device_type = device.type
        # On the CPU one batch a core (inter_threads), each on one thread: for teachers of this size
        # two intra-op threads ran at 0.5x one thread's speed, two batches at once at 1.5x
        # (600 sentences, teacher-l, Xeon B; benchmarks/seqkd_engine.py measures the engines).
        cores = max(1, int(threads or torch.get_num_threads()))
        parallel = {"inter_threads": cores, "intra_threads": 1} if device.type == "cpu" else {}
        self.model = ctranslate2.Translator(str(directory), device=device.type, device_index=device.index or 0,
                                            compute_type=self.quantization, **parallel)

    @property
    def signature(self) -> str:
        """What the targets depend on beyond the weights: part of the seq-KD cache key."""
        return f"ctranslate2-{self.quantization}"

    def decode(self, src: list[str], max_new_tokens: int, beams: int, nbest: int, batch_size: int) -> list[list[str]]:
        """The ``nbest`` best translations of each source, best first."""
        tok = self.tokenizer
        limit = self.teacher.max_source_tokens
        sources = [tok.convert_ids_to_tokens(ids) for ids in tok(list(src), truncation=True, max_length=limit)["input_ids"]]
        # generate() counts the final EOS in max_new_tokens; CTranslate2's length excludes it
        # On the CPU batches cut by source tokens (about batch_size sentences of 64): fuller batches
        # than a fixed count of length-sorted sentences, 1.2x the throughput there. On a GPU the
        # sentence count stays the limit: it is what bounds decoding memory.
        batching = ({"max_batch_size": batch_size * 64, "batch_type": "tokens"} if self.device_type == "cpu"
                    else {"max_batch_size": batch_size})
        results = self.model.translate_batch(sources, beam_size=max(beams, nbest), num_hypotheses=nbest,
                                             max_decoding_length=max(1, max_new_tokens - 1),
                                             return_scores=False, **batching)
        return [[tok.decode(tok.convert_tokens_to_ids(h), skip_special_tokens=True) for h in r.hypotheses]
                for r in results]
