"""Teachers: the run's own Marian models, or any local Hugging Face seq2seq checkpoint.

A teacher given by ``checkpoint = "DIR"`` may be any ``AutoModelForSeq2SeqLM`` directory with its
tokenizer — Marian (incl. OPUS-MT's source.spm/target.spm/vocab.json layout), M2M100/NLLB,
mBART-50, T5/mT5 — read offline, weights from safetensors (a ``pytorch_model.bin`` is read by
transformers with ``torch.load(weights_only=True)``, never unpickled freely).

How a teacher relates to the student's vocabulary decides what it can teach (``kind``):

    native    its vocab.json is the run's: every method, ids shared as they are
    bridged   the run's tokenizer was made from it ([tokenizer] from, trim): word-level KD through an
              id map (vocab_map.py), and seq-KD
    foreign   any other tokenizer: sequence-level KD only (it translates with its own tokenizer, the
              text is re-tokenised for the student)

Multilingual teachers are steered by recipe data: ``src_lang``/``tgt_lang`` are language codes as
the teacher's own tokenizer takes them (NLLB ``eng_Latn``, mBART-50 ``en_XX``, M2M100 ``en``, whose
token is ``__en__``); any other value is refused, naming the codes the tokenizer offers. ``prefix``
is text put before every source (a T5 task prefix, an OPUS-MT ``>>deu<<`` target token).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from ekd_edge.errors import CheckpointError, RecipeError

# model_type → (what steers it): which recipe keys the family needs
LANGUAGE_TOKEN_FAMILIES = ("m2m_100", "mbart")     # source language token + forced target language token
PREFIX_FAMILIES = ("t5", "mt5")                    # a task prefix in the source text
TEACHER_MODEL_TYPES = ("marian", *LANGUAGE_TOKEN_FAMILIES, *PREFIX_FAMILIES)
KINDS = ("native", "bridged", "foreign")


@dataclass
class Teacher:
    """A loaded teacher and everything needed to prompt it."""
    name: str
    directory: Path
    model: object
    tokenizer: object                    # the teacher's own tokenizer
    kind: str                            # native | bridged | foreign
    family: str                          # config.model_type
    prefix: str = ""                     # text put before every source
    forced_bos_token_id: int | None = None
    source_prefix_ids: list[int] = field(default_factory=list)   # ids before a source's own pieces
    target_prefix_ids: list[int] = field(default_factory=list)   # ids the decoder is forced to start with

    def encode_sources(self, texts: list[str], max_length: int) -> dict:
        return self.tokenizer([self.prefix + t for t in texts], return_tensors="pt", padding=True,
                              truncation=True, max_length=max_length)

    def generate_kwargs(self) -> dict:
        return {"forced_bos_token_id": self.forced_bos_token_id} if self.forced_bos_token_id is not None else {}

    @property
    def max_source_tokens(self) -> int:
        config = self.model.config
        return int(getattr(config, "max_position_embeddings", 0) or min(getattr(self.tokenizer, "model_max_length", 512), 512))


def weight_files(directory: str | Path) -> list[Path]:
    """The files holding a checkpoint's weights: model.safetensors, its shards, or pytorch_model.bin."""
    directory = Path(directory)
    single = directory / "model.safetensors"
    if single.is_file():
        return [single]
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"{index}: corrupt shard index ({exc})") from None
        missing = [s for s in shards if not (directory / s).is_file()]
        if missing:
            raise CheckpointError(f"{directory}: shard(s) {', '.join(missing)} named by {index.name} are missing")
        return [directory / s for s in shards]
    if (directory / "pytorch_model.bin").is_file():
        return [directory / "pytorch_model.bin"]
    return []


def weights_digest(directory: str | Path) -> str:
    """sha256 of a checkpoint's weights (of the one file, or of the files' digests in order)."""
    import hashlib

    from ekd_edge.hashing import file_sha256

    files = weight_files(directory)
    if len(files) == 1:
        return file_sha256(files[0])
    return hashlib.sha256("".join(file_sha256(f) for f in files).encode()).hexdigest()


def teacher_kind(directory: str | Path, tokenizer_dir: str | Path) -> str:
    """native, bridged or foreign (see the module docstring) relative to a run's tokenizer."""
    from ekd_edge.data.adopt import read_vocab_map
    from ekd_edge.data.tokenizer import vocab_fingerprint

    directory, tokenizer_dir = Path(directory), Path(tokenizer_dir)
    config = json.loads((directory / "config.json").read_text())
    if (config.get("model_type") == "marian" and (directory / "vocab.json").is_file()
            and vocab_fingerprint(directory) == vocab_fingerprint(tokenizer_dir)):
        return "native"
    vocab_map = read_vocab_map(tokenizer_dir)
    if vocab_map and vocab_map.get("teacher_weights") == weights_digest(directory):
        return "bridged"
    return "foreign"


def check_teacher_checkpoint(directory: str | Path, where: str) -> dict:
    """A given teacher directory must hold a supported config, weights and a tokenizer; its config."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: checkpoint directory not found ({where})")
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise CheckpointError(f"{where}: {directory} is not a checkpoint (no config.json)")
    try:
        config = json.loads(config_path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{config_path}: corrupt config ({exc})") from None
    model_type = config.get("model_type")
    if model_type not in TEACHER_MODEL_TYPES:
        raise CheckpointError(f"{config_path}: model type {model_type!r} cannot be a teacher "
                              f"(supported: {', '.join(TEACHER_MODEL_TYPES)})")
    files = weight_files(directory)
    if not files:
        raise CheckpointError(f"{directory}: no weights (model.safetensors, its shards, or pytorch_model.bin)")
    check_sentencepiece_files(directory)
    if files[0].suffix == ".safetensors":
        try:
            from safetensors import safe_open

            for f in files:
                with safe_open(str(f), framework="pt") as fh:
                    fh.keys()
        except Exception as exc:  # safetensors raises several types for a damaged header
            raise CheckpointError(f"{f}: corrupt weights file ({exc})") from None
    return config


def check_sentencepiece_files(directory: Path) -> None:
    """Every SentencePiece model of the checkpoint must load: a damaged one is named before any work
    (transformers may hand back a tokenizer that fails only when it is first used)."""
    import sentencepiece as spm

    from ekd_edge.data.adopt import SPM_NAMES

    for name in ("source.spm", "target.spm", *SPM_NAMES):
        path = directory / name
        if path.is_file():
            try:
                spm.SentencePieceProcessor(model_file=str(path))
            except Exception as exc:  # RuntimeError or OSError, by sentencepiece version
                detail = " ".join(str(exc).split())[:200]
                raise CheckpointError(f"{path}: corrupt SentencePiece model ({detail})") from None


def load_teacher_tokenizer(directory: str | Path):
    """The checkpoint's own tokenizer, offline; one line naming the directory when there is none."""
    from transformers import AutoTokenizer, PreTrainedTokenizerBase

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tokenizer = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
    except Exception as exc:
        detail = " ".join(str(exc).split())[:200]
        raise CheckpointError(f"{directory}: cannot load its tokenizer ({type(exc).__name__}: {detail})") from None
    if not isinstance(tokenizer, PreTrainedTokenizerBase):   # e.g. False for a Marian tokenizer it could not build
        raise CheckpointError(f"{directory}: cannot load its tokenizer (transformers returned {tokenizer!r})")
    return tokenizer


def language_codes(tokenizer) -> dict[str, str]:
    """code → language token, the codes the tokenizer's own ``src_lang``/``tgt_lang`` take: M2M100's
    ``en`` is the token ``__en__``; NLLB's ``eng_Latn`` and mBART-50's ``en_XX`` are tokens themselves."""
    if isinstance(getattr(tokenizer, "lang_code_to_token", None), dict):     # M2M100
        codes = dict(tokenizer.lang_code_to_token)
    elif isinstance(getattr(tokenizer, "lang_code_to_id", None), dict):      # mBART, mBART-50
        codes = {code: tokenizer.convert_ids_to_tokens(i) for code, i in tokenizer.lang_code_to_id.items()}
    else:   # NLLB: its language codes are its additional special tokens
        codes = {token: token for token in getattr(tokenizer, "additional_special_tokens", None) or []}
    unk = tokenizer.unk_token_id
    return {code: token for code, token in codes.items() if tokenizer.convert_tokens_to_ids(token) not in (None, unk)}


def language_token(tokenizer, code: str, key: str, directory: Path) -> int:
    """The id of the language token for ``code``, resolved as the teacher's tokenizer resolves it;
    anything else (an ordinary piece, the token instead of its code) is refused, naming the codes."""
    codes = language_codes(tokenizer)
    if code in codes:
        return tokenizer.convert_tokens_to_ids(codes[code])
    meant = [c for c, token in codes.items() if token == code]   # "__en__" written for M2M100's "en"
    raise RecipeError(f"{key} = {code!r}: not a language code of the teacher's tokenizer "
                      f"({type(tokenizer).__name__} in {directory})"
                      + (f"; write {meant[0]!r}" if meant else "") + f"; {offered_codes(codes)}")


def offered_codes(codes: dict) -> str:
    return f"it offers {', '.join(sorted(codes))}" if codes else "it defines no language codes"


def prompt_settings(config: dict, tokenizer, directory: Path, src_lang: str, tgt_lang: str, prefix: str,
                    where: str) -> dict:
    """Forced BOS, source/target prefix ids for the family, from the recipe's teacher keys."""
    family = config["model_type"]
    out: dict = {"prefix": prefix}
    if family in LANGUAGE_TOKEN_FAMILIES:
        for key, value in (("src_lang", src_lang), ("tgt_lang", tgt_lang)):
            if not value:
                raise RecipeError(f"{where} {key}: a {family} teacher needs its {key.split('_')[0]} language code "
                                  f"as its tokenizer ({type(tokenizer).__name__}) writes it; "
                                  f"{offered_codes(language_codes(tokenizer))}")
        src_id = language_token(tokenizer, src_lang, f"{where} src_lang", directory)
        tgt_id = language_token(tokenizer, tgt_lang, f"{where} tgt_lang", directory)
        tokenizer.src_lang = src_lang   # the tokenizer's own setters: they take codes, not tokens
        if hasattr(tokenizer, "tgt_lang"):
            tokenizer.tgt_lang = tgt_lang
        out.update(forced_bos_token_id=tgt_id, source_prefix_ids=[src_id], target_prefix_ids=[tgt_id])
    else:
        for key, value in (("src_lang", src_lang), ("tgt_lang", tgt_lang)):
            if value:
                raise RecipeError(f"{where} {key}: only M2M100/NLLB and mBART teachers take language tokens "
                                  f"(this one is {family}); use prefix = \"...\" to steer it")
        if family in PREFIX_FAMILIES and not prefix:
            raise RecipeError(f"{where} prefix: a {family} teacher needs its task prefix "
                              "(e.g. prefix = \"translate English to German: \")")
    if prefix:
        out["source_prefix_ids"] = tokenizer(prefix.strip(), add_special_tokens=False).input_ids
    return out


def teacher_prompt(directory: str | Path, kind: str, run_tokenizer=None, src_lang: str = "", tgt_lang: str = "",
                   prefix: str = "", where: str = "teacher") -> tuple[dict, object, dict]:
    """(config, the tokenizer it speaks, prompt settings): everything but the weights, so a recipe's
    language codes and prefix are checked before any training starts."""
    directory = Path(directory)
    config = check_teacher_checkpoint(directory, where)
    tokenizer = run_tokenizer if kind == "native" else load_teacher_tokenizer(directory)
    return config, tokenizer, prompt_settings(config, tokenizer, directory, src_lang, tgt_lang, prefix, where)


def load_teacher(name: str, directory: str | Path, kind: str, run_tokenizer=None, src_lang: str = "",
                 tgt_lang: str = "", prefix: str = "", where: str = "teacher") -> Teacher:
    """Load a teacher for a stage. A native teacher speaks ``run_tokenizer``; the others bring their own."""
    from transformers import AutoModelForSeq2SeqLM

    directory = Path(directory)
    config, tokenizer, prompt = teacher_prompt(directory, kind, run_tokenizer, src_lang, tgt_lang, prefix, where)
    safetensors = weight_files(directory)[0].suffix == ".safetensors"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = AutoModelForSeq2SeqLM.from_pretrained(str(directory), local_files_only=True,
                                                          use_safetensors=safetensors)
    except Exception as exc:
        detail = " ".join(str(exc).split())[:200]
        raise CheckpointError(f"{directory}: cannot load weights ({type(exc).__name__}: {detail})") from None
    return Teacher(name=name, directory=directory, model=model.eval(), tokenizer=tokenizer, kind=kind,
                   family=config["model_type"], **prompt)
